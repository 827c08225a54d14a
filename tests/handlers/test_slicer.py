"""``slicer``: chunks cut into pieces of ``average_size`` +/- ``size_variation`` bytes."""

from __future__ import annotations

import socket
import time

from pytest_vaurien import Proxy
from pytest_vaurien.handlers.slicer import Slicer
from tests.client import read_chunks, read_exactly, wait_until
from tests.servers import EchoServer


def test_slicer_delivers_many_small_pieces_intact(backend):
    payload = bytes(range(256)) * 4
    options = {"slicer": {"average_size": 10, "size_variation": 4, "delay": 0.002}}
    with (
        Proxy(backend.address, "slicer", options=options) as proxy,
        socket.create_connection(proxy.address, timeout=10) as sock,
    ):
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        pieces = read_chunks(sock)
    sizes = [len(piece) for piece in pieces]
    assert b"".join(pieces) == payload
    # about 100 pieces 2 ms apart; a client that a loaded machine delays
    # reads a few of them at once, never most of them
    assert len(sizes) >= 20, sizes
    assert sorted(sizes)[len(sizes) // 2] <= 20, sizes
    assert backend.reads[0] == [len(payload)] or len(backend.reads[0]) < 5  # requests whole


def test_slicer_sizes_stay_within_the_variation():
    handler = Slicer({"average_size": 10, "size_variation": 3})
    sizes = handler.sizes(10_000)
    assert sum(sizes) == 10_000
    assert all(7 <= size <= 13 for size in sizes[:-1])
    assert len(set(sizes)) > 3


def test_slicer_upstream_cuts_requests_not_replies():
    """The backend reads small pieces; the client gets the greeting whole."""
    greeting = b"g" * 2000
    payload = bytes(range(200))
    options = {"slicer": {"average_size": 10, "delay": 0.005, "direction": "upstream"}}
    with (
        EchoServer(greeting=greeting) as server,
        Proxy(server.address, "slicer", options=options) as proxy,
        socket.create_connection(proxy.address, timeout=10) as sock,
    ):
        started = time.monotonic()
        assert read_exactly(sock, len(greeting)) == greeting
        assert time.monotonic() - started < 0.1  # 200 pieces 5 ms apart would take a second
        sock.sendall(payload)
        assert read_exactly(sock, len(payload)) == payload
        wait_until(lambda: bytes(server.received[0]) == payload)
        reads = server.reads[0]
    assert len(reads) >= 8, reads  # 20 pieces of 10 bytes, 5 ms apart
    assert max(reads) <= 40, reads


def drawn_sizes(backend, seed: int) -> list[list[int]]:
    """The piece sizes slicer drew for each reply of one connection, under ``seed``."""
    options = {"slicer": {"average_size": 8, "size_variation": 6}}
    proxy = Proxy(backend.address, "slicer", options=options, seed=seed)
    handler = proxy.handlers["slicer"]
    drawn: list[list[int]] = []
    cut = handler.sizes

    def recorded(total: int) -> list[int]:
        drawn.append(cut(total))
        return drawn[-1]

    handler.sizes = recorded  # a spy: the replies are still cut as drawn
    with proxy, socket.create_connection(proxy.address, timeout=10) as sock:
        for word in (b"a" * 50, b"b" * 70, b"c" * 30):
            sock.sendall(word)
            assert read_exactly(sock, len(word)) == word
    return drawn


def test_slice_sizes_replay_with_the_same_seed_and_differ_with_another(backend):
    first = drawn_sizes(backend, 31)
    again = drawn_sizes(backend, 31)
    other = drawn_sizes(backend, 32)
    assert sum(map(sum, first)) == 150
    assert len({size for sizes in first for size in sizes}) > 3
    assert first == again
    assert first != other
