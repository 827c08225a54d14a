"""``reset_peer``: the client's connection is reset (an RST) ``timeout`` seconds after the first data."""

from __future__ import annotations

import socket
import time

import pytest

from pytest_vaurien import Proxy
from pytest_vaurien.records import Ending
from tests.client import settled


def test_reset_peer_resets_the_client_after_the_timeout(backend):
    options = {"reset_peer": {"timeout": 0.3}}
    with (
        Proxy(backend.address, "reset_peer", options=options) as proxy,
        socket.create_connection(proxy.address, timeout=10) as sock,
    ):
        started = time.monotonic()
        sock.sendall(b"hello")
        with pytest.raises(ConnectionResetError):
            sock.recv(10)
        assert 0.28 <= time.monotonic() - started < 2.0
        [record] = settled(proxy)
    assert record.ending is Ending.HANDLER_RESET
    assert backend.total_received() == 0


def test_reset_peer_acts_on_the_backends_first_words_too(greeter):
    """The first data either way (design: "always resets the client"): a greeting
    is dropped and the client reset."""
    # the reset may come so soon that it meets the client still connecting
    with (
        Proxy(greeter.address, "reset_peer") as proxy,
        pytest.raises(ConnectionResetError),
        socket.create_connection(proxy.address, timeout=1) as sock,
    ):
        sock.recv(10)
    assert proxy.connections[0].bytes_to_client == 0
