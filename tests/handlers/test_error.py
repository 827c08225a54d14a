"""``error``: the backend gets the request, the client gets garbage."""

from __future__ import annotations

from tests.handlers.helpers import run_inner


def test_error_replaces_the_reply_with_1000_random_bytes(pytester, backend):
    run_inner(
        pytester,
        f"""
        @pytest.mark.vaurien("error", distant="{backend.distant}")
        def test_it(vaurien_proxy):
            payload = b"GET / HTTP/1.0\\r\\n\\r\\n"
            reply = roundtrip(vaurien_proxy.address, payload)
            assert len(reply) == 1000
            assert payload not in reply
    """,
    )
    assert bytes(backend.received[0]) == b"GET / HTTP/1.0\r\n\r\n"


def test_error_inject_keeps_the_reply_around_the_garbage(pytester, backend):
    run_inner(
        pytester,
        f"""
        @pytest.mark.vaurien("error", distant="{backend.distant}", error__inject=True)
        def test_it(vaurien_proxy):
            payload = bytes(range(256)) * 4
            with socket.create_connection(vaurien_proxy.address, timeout=10) as sock:
                sock.sendall(payload)
                reply = read_exactly(sock, len(payload) + 1000)
            assert len(reply) == len(payload) + 1000
            middle = len(payload) // 2
            assert reply[:middle] == payload[:middle]
            assert reply[-middle:] == payload[middle:]
            assert reply[middle:-middle] != bytes(1000)
    """,
    )


def test_error_warmup_lets_the_first_connections_through(pytester, backend):
    run_inner(
        pytester,
        f"""
        @pytest.mark.vaurien("error", distant="{backend.distant}", error__warmup=2)
        def test_it(vaurien_proxy):
            replies = [roundtrip(vaurien_proxy.address) for _ in range(4)]
            assert replies[:2] == [b"ping", b"ping"]
            assert [len(r) for r in replies[2:]] == [1000, 1000]
    """,
    )


def test_garbage_is_reproducible_with_the_seed(pytester, backend):
    pytester.makepyfile(
        f"""
        import socket
        import pytest

        @pytest.mark.vaurien("error", distant="{backend.distant}")
        def test_it(vaurien_proxy):
            with socket.create_connection(vaurien_proxy.address, timeout=10) as sock:
                sock.sendall(b"x")
                data = b""
                while len(data) < 1000:
                    data += sock.recv(1000)
            with open("garbage.txt", "a") as out:
                out.write(data.hex() + "\\n")
    """
    )
    for seed in ("5", "5", "6"):
        pytester.runpytest("--vaurien-seed", seed).assert_outcomes(passed=1)
    first, second, other = (pytester.path / "garbage.txt").read_text().splitlines()
    assert first == second
    assert first != other
