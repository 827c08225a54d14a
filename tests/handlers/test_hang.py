"""``hang``: nothing forwarded, nothing answered, the connection stays open."""

from __future__ import annotations

import socket
import time

import pytest

from pytest_vaurien import Proxy
from pytest_vaurien.records import Ending
from tests.client import read_until_eof, wait_until


def test_hang_times_the_client_out_and_stop_stays_bounded(greeter):
    proxy = Proxy(greeter.address, "hang").start()
    try:
        with socket.create_connection(proxy.address, timeout=0.5) as sock:
            sock.sendall(b"ping")
            sock.shutdown(socket.SHUT_WR)  # even EOF is swallowed
            with pytest.raises(socket.timeout):
                sock.recv(10)  # neither the greeting nor the echo
            assert proxy.connections[0].open
            started = time.monotonic()
            proxy.stop()
            assert time.monotonic() - started < 1.0
            assert read_until_eof(sock) == b""
    finally:
        proxy.stop()
    assert proxy.connections[0].ending is Ending.PROXY_STOPPED
    assert greeter.total_received() == 0


def test_hang_close_on_eof_frees_the_connection_when_the_client_leaves(backend):
    options = {"hang": {"close_on_eof": "yes"}}
    with Proxy(backend.address, "hang", options=options) as proxy:
        with socket.create_connection(proxy.address, timeout=5) as sock:
            sock.sendall(b"ping")
            wait_until(lambda: proxy.connections)
        wait_until(lambda: not proxy.connections[0].open)
        assert proxy.connections[0].ending is Ending.HANDLER_CLOSED
    assert backend.total_received() == 0
