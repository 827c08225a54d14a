"""``error``: the backend gets the request, the client gets garbage."""

from __future__ import annotations

import socket

from pytest_vaurien import Proxy
from pytest_vaurien.records import Ending
from tests.client import read_exactly, roundtrip, settled, wait_until


def test_error_replaces_the_reply_with_1000_random_bytes(backend):
    payload = b"GET / HTTP/1.0\r\n\r\n"
    with Proxy(backend.address, "error") as proxy:
        reply = roundtrip(proxy.address, payload)
        [record] = settled(proxy)
    assert len(reply) == 1000
    assert payload not in reply
    assert (record.bytes_to_backend, record.bytes_to_client) == (len(payload), 1000)
    assert record.ending is Ending.HANDLER_CLOSED
    wait_until(lambda: bytes(backend.received[0]) == payload)


def test_error_inject_keeps_the_reply_around_the_garbage(backend):
    payload = bytes(range(256)) * 4
    with (
        Proxy(backend.address, "error", options={"error": {"inject": True}}) as proxy,
        socket.create_connection(proxy.address, timeout=10) as sock,
    ):
        sock.sendall(payload)
        reply = read_exactly(sock, len(payload) + 1000)
        # the connection stays open: the next request is answered too
        sock.sendall(b"again")
        assert len(read_exactly(sock, 1005)) == 1005
    assert len(reply) == len(payload) + 1000
    middle = len(payload) // 2
    assert reply[:middle] == payload[:middle]
    assert reply[-middle:] == payload[middle:]
    assert reply[middle:-middle] != bytes(1000)


def test_error_warmup_lets_the_first_connections_through(backend):
    with Proxy(backend.address, "error", options={"error": {"warmup": 2}}) as proxy:
        replies = [roundtrip(proxy.address) for _ in range(4)]
    assert replies[:2] == [b"ping", b"ping"]
    assert [len(r) for r in replies[2:]] == [1000, 1000]


def test_garbage_replays_with_the_seed(backend):
    def garbage(seed: int) -> bytes:
        with Proxy(backend.address, "error", seed=seed) as proxy:
            return roundtrip(proxy.address, b"x")

    first, second, other = garbage(5), garbage(5), garbage(6)
    assert len(first) == 1000
    assert first == second
    assert first != other
