"""``latency``: every chunk is delivered ``latency`` (+/- ``jitter``) seconds after it arrived."""

from __future__ import annotations

import socket
import time

from pytest_vaurien import Proxy
from tests.client import read_exactly


def test_latency_downstream_delays_replies_not_requests(greeter):
    options = {"latency": {"latency": 0.3}}
    with (
        Proxy(greeter.address, "latency", options=options) as proxy,
        socket.create_connection(proxy.address, timeout=10) as sock,
    ):
        started = time.monotonic()
        assert read_exactly(sock, 6) == b"hello\n"
        assert 0.28 <= time.monotonic() - started < 1.5


def test_latency_upstream_delays_requests_not_replies(greeter):
    options = {"latency": {"latency": 0.3, "direction": "upstream"}}
    with (
        Proxy(greeter.address, "latency", options=options) as proxy,
        socket.create_connection(proxy.address, timeout=10) as sock,
    ):
        started = time.monotonic()
        assert read_exactly(sock, 6) == b"hello\n"
        assert time.monotonic() - started < 0.25
        started = time.monotonic()
        sock.sendall(b"ping")
        assert read_exactly(sock, 4) == b"ping"
        assert 0.28 <= time.monotonic() - started < 1.5


def test_latency_shifts_a_stream_without_slowing_it(backend):
    """Ten chunks 20 ms apart arrive about latency + 180 ms later, not 10 x latency."""
    options = {"latency": {"latency": 0.3, "direction": "both"}}
    with (
        Proxy(backend.address, "latency", options=options) as proxy,
        socket.create_connection(proxy.address, timeout=10) as sock,
    ):
        started = time.monotonic()
        for index in range(10):
            sock.sendall(bytes([65 + index]) * 10)
            time.sleep(0.02)  # pacing the sender, not waiting for the proxy
        assert read_exactly(sock, 100) == b"".join(bytes([65 + i]) * 10 for i in range(10))
        elapsed = time.monotonic() - started
    assert 0.75 <= elapsed < 2.0, elapsed  # two 0.3 s shifts plus the 0.18 s of sending


def echo_times(proxy: Proxy, count: int) -> list[float]:
    """How long each of ``count`` requests took to come back, one after the other."""
    times = []
    with socket.create_connection(proxy.address, timeout=10) as sock:
        for index in range(count):
            word = b"%d" % index
            started = time.monotonic()
            sock.sendall(word)
            assert read_exactly(sock, len(word)) == word
            times.append(time.monotonic() - started)
    return times


def test_latency_jitter_varies_each_chunk_within_bounds(backend):
    options = {"latency": {"latency": 0.12, "jitter": 0.08}}
    with Proxy(backend.address, "latency", options=options, seed=11) as proxy:
        times = echo_times(proxy, 6)
    assert all(0.035 <= t < 0.7 for t in times), times  # 0.12 +/- 0.08, and slack above
    assert max(times) - min(times) > 0.02, times  # each chunk drew its own delay


def drawn_pauses(backend, seed: int) -> list[float]:
    """The delays latency drew for six chunks of one connection, under ``seed``."""
    options = {"latency": {"latency": 0.02, "jitter": 0.02}}
    proxy = Proxy(backend.address, "latency", options=options, seed=seed)
    handler = proxy.handlers["latency"]
    pauses: list[float] = []
    draw = handler.pause

    def recorded() -> float:
        pauses.append(draw())
        return pauses[-1]

    handler.pause = recorded  # a spy: the chunks still get the delay drawn
    with proxy:
        echo_times(proxy, 6)
    assert len(pauses) >= 6  # one per chunk (and one more if the backend's EOF came in time)
    return pauses[:6]


def test_jitter_replays_with_the_same_seed_and_differs_with_another(backend):
    first = drawn_pauses(backend, 21)
    again = drawn_pauses(backend, 21)
    other = drawn_pauses(backend, 22)
    assert len(set(first)) == 6, first  # six chunks, six draws
    assert first == again
    assert first != other
