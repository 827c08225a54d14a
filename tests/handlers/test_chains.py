"""``+`` chains: several faults on one connection, each acting on what the one before sent."""

from __future__ import annotations

import socket
import time

from pytest_vaurien import Proxy
from tests.client import read_chunks


def test_a_chain_applies_both_effects(backend):
    payload = bytes(range(256)) * 2
    options = {"latency": {"latency": 0.3}, "slicer": {"average_size": 8, "delay": 0.001}}
    with (
        Proxy(backend.address, "latency+slicer", options=options, seed=1) as proxy,
        socket.create_connection(proxy.address, timeout=10) as sock,
    ):
        started = time.monotonic()
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        pieces = read_chunks(sock)
        elapsed = time.monotonic() - started
    assert b"".join(pieces) == payload
    assert elapsed >= 0.28
    assert len(pieces) >= 20
