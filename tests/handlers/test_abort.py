"""``abort``: the request arrives, the reply never does."""

from __future__ import annotations

import socket

from pytest_vaurien import Proxy
from pytest_vaurien.records import Ending
from tests.client import read_until_eof, roundtrip, settled, wait_until


def test_abort_delivers_the_request_and_drops_the_reply(backend):
    with Proxy(backend.address, "abort") as proxy:
        with socket.create_connection(proxy.address, timeout=5) as sock:
            sock.sendall(b"ping")
            assert read_until_eof(sock) == b""  # EOF, or a reset: never the echo
        [record] = settled(proxy)
    assert (record.bytes_to_backend, record.bytes_to_client) == (4, 0)
    assert record.ending is Ending.HANDLER_CLOSED
    wait_until(lambda: bytes(backend.received[0]) == b"ping")  # the backend did the work


def test_abort_drops_a_greeting_too(greeter):
    """The backend's first words are a reply like any other: they never arrive."""
    with Proxy(greeter.address, "abort") as proxy:
        assert roundtrip(proxy.address, b"") == b""
        [record] = settled(proxy)
    assert record.bytes_to_client == 0
