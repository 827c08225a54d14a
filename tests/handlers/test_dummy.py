"""``dummy``: the transparent relay, and what every unassigned connection gets."""

from __future__ import annotations

import os
import socket

from pytest_vaurien import Proxy
from pytest_vaurien.records import Ending
from tests.client import read_exactly, read_until_eof, roundtrip, settled


def test_dummy_relays_every_byte_unchanged_both_ways(backend):
    payload = os.urandom(300_000)
    with Proxy(backend.address, "dummy") as proxy:
        assert roundtrip(proxy.address, payload) == payload
        [record] = settled(proxy)
    assert bytes(backend.received[0]) == payload
    assert (record.handler, record.bytes_to_backend, record.bytes_to_client) == (
        "dummy",
        len(payload),
        len(payload),
    )
    assert record.ending is Ending.CLIENT_CLOSED


def test_connections_the_behavior_leaves_unassigned_get_dummy(backend):
    with Proxy(backend.address, "0:blackout") as proxy:
        assert roundtrip(proxy.address) == b"ping"
        [record] = settled(proxy)
    assert record.handler == "dummy"
    assert proxy.stats.faults == {}


def test_dummy_keeps_a_conversation_in_order(greeter):
    """The backend speaks first, then answers each request on one connection."""
    with (
        Proxy(greeter.address) as proxy,
        socket.create_connection(proxy.address, timeout=5) as sock,
    ):
        assert read_exactly(sock, 6) == b"hello\n"
        for word in (b"one", b"two", b"three"):
            sock.sendall(word)
            assert read_exactly(sock, len(word)) == word
        sock.shutdown(socket.SHUT_WR)
        assert read_until_eof(sock) == b""
    assert bytes(greeter.received[0]) == b"onetwothree"
