"""``abort``: the request arrives, the reply never does."""

from __future__ import annotations

from tests.handlers.helpers import run_inner


def test_abort_delivers_the_request_and_drops_the_reply(pytester, backend):
    run_inner(
        pytester,
        f"""
        @pytest.mark.vaurien("abort", distant="{backend.distant}")
        def test_it(vaurien_proxy):
            with socket.create_connection(vaurien_proxy.address, timeout=5) as sock:
                sock.sendall(b"ping")
                try:
                    assert sock.recv(10) == b""
                except ConnectionResetError:
                    pass
            [record] = vaurien_proxy.connections
            assert record.bytes_to_backend == 4 and record.bytes_to_client == 0
    """,
    )
    assert bytes(backend.received[0]) == b"ping"
