"""``slow_close``: data relayed at once, a side's close passed on ``delay`` seconds later."""

from __future__ import annotations

import socket
import time

from pytest_vaurien import Proxy
from tests.client import read_exactly, read_until_eof, wait_until
from tests.servers import BackendClosesFirst


def test_slow_close_holds_the_close(backend):
    with (
        Proxy(backend.address, "slow_close", options={"slow_close": {"delay": 0.4}}) as proxy,
        socket.create_connection(proxy.address, timeout=10) as sock,
    ):
        started = time.monotonic()
        sock.sendall(b"bye")
        sock.shutdown(socket.SHUT_WR)
        assert read_exactly(sock, 3) == b"bye"
        assert time.monotonic() - started < 0.3  # the data is not held
        assert sock.recv(10) == b""
        assert 0.38 <= time.monotonic() - started < 2.0


def test_slow_close_downstream_leaves_the_clients_close_alone(backend):
    """The backend sees the client's EOF at once; only the way back is held."""
    with (
        Proxy(backend.address, "slow_close", options={"slow_close": {"delay": 0.4}}) as proxy,
        socket.create_connection(proxy.address, timeout=10) as sock,
    ):
        sock.sendall(b"bye")
        assert read_exactly(sock, 3) == b"bye"
        closed = time.monotonic()
        sock.shutdown(socket.SHUT_WR)
        wait_until(lambda: backend.eof_at[0])
        assert backend.eof_at[0] - closed < 0.25
        assert read_until_eof(sock) == b""
        assert time.monotonic() - closed >= 0.38


def test_slow_close_upstream_holds_the_clients_close(backend):
    options = {"slow_close": {"delay": 0.4, "direction": "upstream"}}
    with (
        Proxy(backend.address, "slow_close", options=options) as proxy,
        socket.create_connection(proxy.address, timeout=10) as sock,
    ):
        sock.sendall(b"bye")
        assert read_exactly(sock, 3) == b"bye"
        closed = time.monotonic()
        sock.shutdown(socket.SHUT_WR)
        wait_until(lambda: backend.eof_at[0])
        assert 0.38 <= backend.eof_at[0] - closed < 2.0


def test_slow_close_upstream_passes_the_backends_close_at_once():
    options = {"slow_close": {"delay": 0.4, "direction": "upstream"}}
    with (
        BackendClosesFirst() as server,
        Proxy(server.address, "slow_close", options=options) as proxy,
        socket.create_connection(proxy.address, timeout=10) as sock,
    ):
        started = time.monotonic()
        assert read_until_eof(sock) == b"bye"
        assert time.monotonic() - started < 0.3
