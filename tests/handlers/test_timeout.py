"""``timeout``: nothing gets through; the connection closes ``timeout`` seconds after the last data."""

from __future__ import annotations

import socket
import time

import pytest

from pytest_vaurien import Proxy
from pytest_vaurien.records import Ending
from tests.client import read_until_eof, settled


def test_timeout_forwards_nothing_and_closes_after_the_last_data(backend):
    with (
        Proxy(backend.address, "timeout", options={"timeout": {"timeout": 0.4}}) as proxy,
        socket.create_connection(proxy.address, timeout=10) as sock,
    ):
        started = time.monotonic()
        sock.sendall(b"one")
        time.sleep(0.25)  # pacing the client: the second chunk restarts the timer
        sock.sendall(b"two")
        data = read_until_eof(sock)
        elapsed = time.monotonic() - started
    assert data == b""
    assert 0.6 <= elapsed < 2.0, elapsed
    assert backend.total_received() == 0


def test_timeout_zero_never_closes(backend):
    with (
        Proxy(backend.address, "timeout") as proxy,
        socket.create_connection(proxy.address, timeout=0.5) as sock,
    ):
        sock.sendall(b"anyone?")
        with pytest.raises(socket.timeout):
            sock.recv(10)
        assert proxy.connections[0].open
    assert backend.total_received() == 0


def test_timeout_closes_at_once_on_a_sides_eof(backend):
    with Proxy(backend.address, "timeout", options={"timeout": {"timeout": 5}}) as proxy:
        with socket.create_connection(proxy.address, timeout=10) as sock:
            started = time.monotonic()
            sock.sendall(b"bye")
            sock.shutdown(socket.SHUT_WR)
            assert read_until_eof(sock) == b""
            assert time.monotonic() - started < 1.0  # not the 5 s of the timer
        [record] = settled(proxy)
    assert record.ending is Ending.HANDLER_CLOSED
    assert backend.total_received() == 0
