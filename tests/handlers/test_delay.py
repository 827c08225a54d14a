"""``delay``: each chunk waits ``sleep`` (+/- ``jitter``) in the chosen direction."""

from __future__ import annotations

import random
import socket
import time
from concurrent.futures import ThreadPoolExecutor

from pytest_vaurien import Proxy
from pytest_vaurien.handlers.delay import Delay
from tests.client import read_exactly, timed_roundtrip, wait_until


def test_delay_before_holds_requests_not_the_greeting(greeter):
    options = {"delay": {"sleep": 0.4}}
    with (
        Proxy(greeter.address, "delay", options=options) as proxy,
        socket.create_connection(proxy.address, timeout=10) as sock,
    ):
        started = time.monotonic()
        assert read_exactly(sock, 6) == b"hello\n"
        greeting = time.monotonic() - started
        started = time.monotonic()
        sock.sendall(b"ping")
        assert read_exactly(sock, 4) == b"ping"
        echo = time.monotonic() - started
    assert greeting < 0.3, greeting
    assert 0.38 <= echo < 2.0, echo


def test_delay_after_holds_replies(greeter):
    options = {"delay": {"sleep": 0.4, "before": False}}
    with (
        Proxy(greeter.address, "delay", options=options) as proxy,
        socket.create_connection(proxy.address, timeout=10) as sock,
    ):
        started = time.monotonic()
        assert read_exactly(sock, 6) == b"hello\n"
        greeting = time.monotonic() - started
    assert 0.38 <= greeting < 2.0, greeting


def test_delay_after_leaves_requests_alone(backend):
    """With ``before=False`` the backend gets each request at once."""
    options = {"delay": {"sleep": 0.5, "before": False}}
    with (
        Proxy(backend.address, "delay", options=options) as proxy,
        socket.create_connection(proxy.address, timeout=10) as sock,
    ):
        sent = time.monotonic()
        sock.sendall(b"ping")
        wait_until(lambda: backend.received and backend.received[0] == b"ping")
        arrived = time.monotonic() - sent
        assert read_exactly(sock, 4) == b"ping"
        echoed = time.monotonic() - sent
    assert arrived < 0.3, arrived
    assert 0.48 <= echoed < 2.0, echoed


def test_delay_jitter_varies_within_bounds(backend):
    options = {"delay": {"sleep": 0.15, "jitter": 0.1}}
    # one connection each, at once: every connection draws its own jitter
    with (
        Proxy(backend.address, "delay", options=options, seed=3) as proxy,
        ThreadPoolExecutor(8) as pool,
    ):
        results = list(pool.map(lambda _: timed_roundtrip(proxy.address), range(8)))
    assert [reply for reply, _ in results] == [b"ping"] * 8
    took = [seconds for _, seconds in results]
    # one delayed chunk per roundtrip; the EOF follows it without a delay of its own
    assert all(0.04 <= t < 1.5 for t in took), took
    assert max(took) - min(took) > 0.01, took


def test_pause_never_goes_below_zero():
    handler = Delay({"sleep": "0.05", "jitter": "0.2"})
    handler.__dict__["_random"] = random.Random(1)
    pauses = [handler.pause() for _ in range(500)]
    assert min(pauses) == 0.0
    assert max(pauses) <= 0.25
    assert len(set(pauses)) > 100
