"""``blackout``: closed at the first data, nothing forwarded."""

from __future__ import annotations

from tests.handlers.helpers import run_inner


def test_blackout_closes_at_once_and_forwards_nothing(pytester, backend):
    run_inner(
        pytester,
        f"""
        @pytest.mark.vaurien("blackout", distant="{backend.distant}")
        def test_it(vaurien_proxy):
            with socket.create_connection(vaurien_proxy.address, timeout=5) as sock:
                sock.sendall(b"ping")
                assert sock.recv(10) == b""
            [record] = vaurien_proxy.connections
            assert record.bytes_to_backend == 0 and record.bytes_to_client == 0
    """,
    )
    assert backend.total_received() == 0
