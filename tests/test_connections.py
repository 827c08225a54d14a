"""How a proxied connection starts and ends: the backend connect, the reads, the endings."""

from __future__ import annotations

import os
import socket
import time

import pytest

from pytest_vaurien import BaseHandler, Proxy
from pytest_vaurien.records import Ending
from tests.client import read_until_eof, roundtrip, settled
from tests.servers import BackendClosesFirst, BackendResets, FullBacklog

#: The transparent fast path, and a handler that relays unchanged through the
#: handler path: endings must not depend on which one moves the bytes.
PATHS = ["dummy", "latency"]


class ChunkSizes(BaseHandler):
    """Relays unchanged, noting the size of every chunk it read, both ways."""

    name = "chunk_sizes"

    def __init__(self, settings=None, proxy=None):
        super().__init__(settings, proxy)
        self.sizes: list[int] = []

    def __call__(self, client_sock, backend_sock, to_backend):
        data = self._get_data(client_sock, backend_sock, to_backend)
        self.sizes.append(len(data))
        if data:
            (backend_sock if to_backend else client_sock).sendall(data)
        return bool(data)


def test_read_size_bounds_every_chunk(backend):
    payload = os.urandom(50_000)
    with Proxy(backend.address, f"{__name__}.ChunkSizes", read_size=1000) as proxy:
        assert roundtrip(proxy.address, payload) == payload
        settled(proxy)
        sizes = [size for size in proxy.handlers[f"{__name__}.ChunkSizes"].sizes if size]
    assert bytes(backend.received[0]) == payload
    assert sum(sizes) == 2 * len(payload)  # there and back
    assert max(sizes) <= 1000, max(sizes)
    assert len(sizes) >= 2 * 50  # 50 kB each way, 1000 bytes at a time at most


def test_connect_timeout_gives_up_on_a_backend_that_never_accepts():
    with (
        FullBacklog() as server,
        Proxy(server.address, connect_timeout=0.3) as proxy,
        socket.create_connection(proxy.address, timeout=10) as sock,
    ):
        started = time.monotonic()
        with pytest.raises(ConnectionResetError):
            sock.recv(10)
        elapsed = time.monotonic() - started
        [record] = settled(proxy)
    assert 0.25 <= elapsed < 2.0, elapsed  # not the default 5 s, nor at once
    assert record.ending is Ending.BACKEND_REFUSED
    assert "timed out" in (record.error or ""), record.error


@pytest.mark.parametrize("behavior", PATHS)
def test_a_backend_that_closes_first_is_recorded_as_backend_closed(behavior):
    with (
        BackendClosesFirst() as server,
        Proxy(server.address, behavior) as proxy,
    ):
        with socket.create_connection(proxy.address, timeout=10) as sock:
            assert read_until_eof(sock) == b"bye"
        [record] = settled(proxy)
    assert record.ending is Ending.BACKEND_CLOSED
    assert record.bytes_to_client == 3


@pytest.mark.parametrize("behavior", PATHS)
def test_a_backend_reset_is_recorded_as_reset(behavior):
    with BackendResets() as server, Proxy(server.address, behavior) as proxy:
        with socket.create_connection(proxy.address, timeout=10) as sock:
            sock.sendall(b"ping")
            assert read_until_eof(sock) == b""
        [record] = settled(proxy)
    assert record.ending is Ending.RESET
    assert "backend side" in (record.error or ""), record.error


def test_down_refuses_connects_closes_open_ones_and_recovers(backend):
    with Proxy(backend.address) as proxy:
        with socket.create_connection(proxy.address, timeout=5) as open_one:
            open_one.sendall(b"1")
            assert open_one.recv(10) == b"1"
            with proxy.down():
                assert not proxy.enabled
                with pytest.raises(ConnectionRefusedError):
                    socket.create_connection(proxy.address, timeout=5)
                assert read_until_eof(open_one) == b""
        assert proxy.enabled
        assert roundtrip(proxy.address, b"back") == b"back"
        assert proxy.connections[0].ending is Ending.PROXY_DOWN
