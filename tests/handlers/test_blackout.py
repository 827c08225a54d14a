"""``blackout``: closed at the first data, nothing forwarded."""

from __future__ import annotations

import socket

from pytest_vaurien import Proxy
from pytest_vaurien.records import Ending
from tests.client import settled


def test_blackout_closes_at_once_and_forwards_nothing(backend):
    with Proxy(backend.address, "blackout") as proxy:
        with socket.create_connection(proxy.address, timeout=5) as sock:
            sock.sendall(b"ping")
            assert sock.recv(10) == b""
        [record] = settled(proxy)
    assert (record.bytes_to_backend, record.bytes_to_client) == (0, 0)
    assert record.ending is Ending.HANDLER_CLOSED
    assert backend.total_received() == 0


def test_blackout_closes_at_the_backends_first_words(greeter):
    """Data in either direction triggers it: a greeting never reaches the client."""
    with Proxy(greeter.address, "blackout") as proxy:
        with socket.create_connection(proxy.address, timeout=5) as sock:
            assert sock.recv(10) == b""  # without sending anything
        [record] = settled(proxy)
    assert record.bytes_to_client == 0
    assert greeter.total_received() == 0
