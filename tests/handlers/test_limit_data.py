"""``limit_data``: exactly ``bytes`` bytes get through, then the connection closes."""

from __future__ import annotations

import socket

from pytest_vaurien import Proxy
from pytest_vaurien.records import Ending
from tests.client import read_exactly, read_until_eof, roundtrip, settled, wait_until


def test_limit_data_lets_exactly_that_many_bytes_through_then_closes(backend):
    with (
        Proxy(backend.address, "limit_data", options={"limit_data": {"bytes": 100}}) as proxy,
        socket.create_connection(proxy.address, timeout=10) as sock,
    ):
        sock.sendall(b"a" * 60)
        assert read_exactly(sock, 60) == b"a" * 60
        sock.sendall(b"b" * 60)
        assert read_until_eof(sock) == b"b" * 40
        [record] = settled(proxy)
    assert record.bytes_to_client == 100
    assert record.ending is Ending.HANDLER_CLOSED


def test_limit_data_upstream_counts_requests(backend):
    options = {"limit_data": {"bytes": 5, "direction": "upstream"}}
    with Proxy(backend.address, "limit_data", options=options) as proxy:
        # the connection closes as the fifth byte goes out: the echo never comes back
        assert roundtrip(proxy.address, b"0123456789") == b""
    wait_until(lambda: backend.received and bytes(backend.received[0]) == b"01234")


def test_limit_data_zero_closes_at_the_first_data(backend):
    with Proxy(backend.address, "limit_data") as proxy:
        assert roundtrip(proxy.address) == b""
        [record] = settled(proxy)
    assert record.bytes_to_client == 0
    assert record.ending is Ending.HANDLER_CLOSED


def test_limit_data_both_counts_each_direction_on_its_own(backend):
    """10 bytes each way: a 6-byte request and its 6-byte echo both pass whole."""
    options = {"limit_data": {"bytes": 10, "direction": "both"}}
    with (
        Proxy(backend.address, "limit_data", options=options) as proxy,
        socket.create_connection(proxy.address, timeout=10) as sock,
    ):
        sock.sendall(b"123456")
        assert read_exactly(sock, 6) == b"123456"
        # shared counting would have cut that echo to 4 bytes; now the upstream
        # limit trips at the fourth byte (its echo may or may not beat the close)
        sock.sendall(b"abcdef")
        assert read_until_eof(sock) in (b"", b"abcd")
        [record] = settled(proxy)
    assert record.bytes_to_backend == 10
    assert record.ending is Ending.HANDLER_CLOSED
    wait_until(lambda: bytes(backend.received[0]) == b"123456abcd")
