"""``bandwidth``: throughput limited to ``rate`` KB/s, smoothly."""

from __future__ import annotations

import socket
import threading
import time

from pytest_vaurien import Proxy
from tests.client import read_exactly, roundtrip
from tests.servers import EchoServer


def test_bandwidth_holds_the_rate_over_2_mb(backend):
    payload = bytes(range(256)) * 8192  # 2 MiB
    with (
        Proxy(backend.address, "bandwidth", options={"bandwidth": {"rate": 2000}}) as proxy,
        socket.create_connection(proxy.address, timeout=30) as sock,
    ):
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        started = time.monotonic()
        sender.start()
        received = read_exactly(sock, len(payload))
        elapsed = time.monotonic() - started
        sender.join()
    assert received == payload
    rate = len(payload) / 1000 / elapsed
    # never faster than asked; slower only as much as a loaded machine makes it
    assert 2000 * 0.6 <= rate <= 2000 * 1.15, rate


def test_bandwidth_zero_means_no_limit(backend):
    with Proxy(backend.address, "bandwidth", options={"bandwidth": {"rate": 0}}) as proxy:
        assert roundtrip(proxy.address, b"x" * 100_000) == b"x" * 100_000


def test_bandwidth_upstream_limits_requests_not_replies():
    """200 kB each way at 1000 KB/s: the greeting comes at once, the request takes 0.2 s."""
    size = 200_000
    options = {"bandwidth": {"rate": 1000, "direction": "upstream"}}
    with (
        EchoServer(greeting=b"g" * size) as server,
        Proxy(server.address, "bandwidth", options=options) as proxy,
        socket.create_connection(proxy.address, timeout=10) as sock,
    ):
        started = time.monotonic()
        assert read_exactly(sock, size) == b"g" * size
        greeting = time.monotonic() - started
        sender = threading.Thread(target=sock.sendall, args=(b"r" * size,))
        started = time.monotonic()
        sender.start()
        assert read_exactly(sock, size) == b"r" * size
        request = time.monotonic() - started
        sender.join()
    assert greeting < 0.12, greeting
    assert 0.17 <= request < 1.0, request
