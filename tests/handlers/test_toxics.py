"""Toxiproxy's faults over real sockets: what a client observes."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from pytest_vaurien import Proxy
from pytest_vaurien.handlers.slicer import Slicer
from pytest_vaurien.records import Ending
from tests.servers import read_exactly, roundtrip, wait_until


def read_to_end(sock: socket.socket) -> tuple[bytes, list[int]]:
    """Everything until EOF (or a reset), and the size of each recv() result."""
    data, sizes = b"", []
    try:
        while chunk := sock.recv(65536):
            data += chunk
            sizes.append(len(chunk))
    except ConnectionResetError:
        pass
    return data, sizes


def proxy(backend, behavior: str, **options) -> Proxy:
    grouped: dict[str, dict[str, object]] = {}
    for key, value in options.items():
        name, option = key.split("__")
        grouped.setdefault(name, {})[option] = value
    return Proxy(backend.address, behavior, options=grouped, seed=1)


def test_latency_downstream_delays_replies_not_requests(greeter):
    with (
        proxy(greeter, "latency", latency__latency=0.3) as p,
        socket.create_connection(p.address, timeout=10) as sock,
    ):
        started = time.monotonic()
        assert read_exactly(sock, 6) == b"hello\n"
        assert 0.28 <= time.monotonic() - started < 1.5


def test_latency_upstream_delays_requests_not_replies(greeter):
    with (
        proxy(greeter, "latency", latency__latency=0.3, latency__direction="upstream") as p,
        socket.create_connection(p.address, timeout=10) as sock,
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
    with (
        proxy(backend, "latency", latency__latency=0.3, latency__direction="both") as p,
        socket.create_connection(p.address, timeout=10) as sock,
    ):
        started = time.monotonic()
        for index in range(10):
            sock.sendall(bytes([65 + index]) * 10)
            time.sleep(0.02)  # pacing the sender, not waiting for the proxy
        assert read_exactly(sock, 100) == b"".join(bytes([65 + i]) * 10 for i in range(10))
        elapsed = time.monotonic() - started
    assert 0.75 <= elapsed < 2.0, elapsed  # two 0.3 s shifts plus the 0.18 s of sending


def test_bandwidth_holds_the_rate_over_2_mb(backend):
    payload = bytes(range(256)) * 8192  # 2 MiB
    with (
        proxy(backend, "bandwidth", bandwidth__rate=2000) as p,
        socket.create_connection(p.address, timeout=30) as sock,
    ):
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        started = time.monotonic()
        sender.start()
        received = read_exactly(sock, len(payload))
        elapsed = time.monotonic() - started
        sender.join()
    assert received == payload
    rate = len(payload) / 1000 / elapsed
    assert 2000 * 0.85 <= rate <= 2000 * 1.15, rate


def test_bandwidth_zero_means_no_limit(backend):
    with proxy(backend, "bandwidth", bandwidth__rate=0) as p:
        assert roundtrip(p.address, b"x" * 100_000) == b"x" * 100_000


def test_slicer_delivers_many_small_pieces_intact(backend):
    payload = bytes(range(256)) * 4
    with (
        proxy(
            backend,
            "slicer",
            slicer__average_size=10,
            slicer__size_variation=4,
            slicer__delay=0.002,
        ) as p,
        socket.create_connection(p.address, timeout=10) as sock,
    ):
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        data, sizes = read_to_end(sock)
    assert data == payload
    assert len(sizes) >= 30, sizes
    assert max(sizes) <= 40, sizes


def test_slicer_sizes_stay_within_the_variation():
    handler = Slicer({"average_size": 10, "size_variation": 3})
    sizes = handler.sizes(10_000)
    assert sum(sizes) == 10_000
    assert all(7 <= size <= 13 for size in sizes[:-1])
    assert len(set(sizes)) > 3


def test_limit_data_lets_exactly_that_many_bytes_through_then_closes(backend):
    with (
        proxy(backend, "limit_data", limit_data__bytes=100) as p,
        socket.create_connection(p.address, timeout=10) as sock,
    ):
        sock.sendall(b"a" * 60)
        assert read_exactly(sock, 60) == b"a" * 60
        sock.sendall(b"b" * 60)
        data, _ = read_to_end(sock)
        assert data == b"b" * 40
        wait_until(lambda: not p.connections[0].open)
        record = p.connections[0]
    assert record.bytes_to_client == 100
    assert record.ending is Ending.HANDLER_CLOSED


def test_limit_data_upstream_counts_requests(backend):
    with proxy(backend, "limit_data", limit_data__bytes=5, limit_data__direction="upstream") as p:
        # the connection closes as the fifth byte goes out: the echo never comes back
        assert roundtrip(p.address, b"0123456789") == b""
    wait_until(lambda: backend.received and bytes(backend.received[0]) == b"01234")


def test_slow_close_holds_the_close(backend):
    with (
        proxy(backend, "slow_close", slow_close__delay=0.4) as p,
        socket.create_connection(p.address, timeout=10) as sock,
    ):
        started = time.monotonic()
        sock.sendall(b"bye")
        sock.shutdown(socket.SHUT_WR)
        assert read_exactly(sock, 3) == b"bye"
        assert time.monotonic() - started < 0.3  # the data is not held
        assert sock.recv(10) == b""
        assert 0.38 <= time.monotonic() - started < 2.0


def test_timeout_forwards_nothing_and_closes_after_the_last_data(backend):
    with (
        proxy(backend, "timeout", timeout__timeout=0.4) as p,
        socket.create_connection(p.address, timeout=10) as sock,
    ):
        started = time.monotonic()
        sock.sendall(b"one")
        time.sleep(0.25)  # pacing the client: the second chunk restarts the timer
        sock.sendall(b"two")
        data, _ = read_to_end(sock)
        elapsed = time.monotonic() - started
    assert data == b""
    assert 0.6 <= elapsed < 2.0, elapsed
    assert backend.total_received() == 0


def test_timeout_zero_never_closes(backend):
    with proxy(backend, "timeout") as p, socket.create_connection(p.address, timeout=0.5) as sock:
        sock.sendall(b"anyone?")
        with pytest.raises(socket.timeout):
            sock.recv(10)
        assert p.connections[0].open


def test_reset_peer_resets_the_client_after_the_timeout(backend):
    with (
        proxy(backend, "reset_peer", reset_peer__timeout=0.3) as p,
        socket.create_connection(p.address, timeout=10) as sock,
    ):
        started = time.monotonic()
        sock.sendall(b"hello")
        with pytest.raises(ConnectionResetError):
            sock.recv(10)
        assert 0.28 <= time.monotonic() - started < 2.0
        wait_until(lambda: not p.connections[0].open)
        assert p.connections[0].ending is Ending.HANDLER_RESET
    assert backend.total_received() == 0


def test_down_refuses_connects_closes_open_ones_and_recovers(backend):
    with Proxy(backend.address) as p:
        with socket.create_connection(p.address, timeout=5) as open_one:
            open_one.sendall(b"1")
            assert open_one.recv(10) == b"1"
            with p.down():
                assert not p.enabled
                with pytest.raises(ConnectionRefusedError):
                    socket.create_connection(p.address, timeout=5)
                data, _ = read_to_end(open_one)
                assert data == b""
        assert p.enabled
        assert roundtrip(p.address, b"back") == b"back"
        assert p.connections[0].ending is Ending.PROXY_DOWN


def test_a_chain_applies_both_effects(backend):
    payload = bytes(range(256)) * 2
    with (
        proxy(
            backend,
            "latency+slicer",
            latency__latency=0.3,
            slicer__average_size=8,
            slicer__delay=0.001,
        ) as p,
        socket.create_connection(p.address, timeout=10) as sock,
    ):
        started = time.monotonic()
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        data, sizes = read_to_end(sock)
        elapsed = time.monotonic() - started
    assert data == payload
    assert elapsed >= 0.28
    assert len(sizes) >= 20
