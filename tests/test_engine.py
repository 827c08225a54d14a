"""The proxy engine over real loopback sockets, without pytest wiring."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import gevent
import pytest

from pytest_vaurien import BaseHandler, ConfigError, Proxy, ProxyError
from pytest_vaurien.engine.hub import HUB_THREAD_NAME
from pytest_vaurien.records import Ending
from pytest_vaurien.registry import Registry, make_plugin_manager, registry_from_plugins
from tests.servers import EchoServer, refused_address, roundtrip, wait_until


class Sleepy(BaseHandler):
    """Sleeps a minute on every chunk: stop() must not wait for it."""

    name = "sleepy"

    def __call__(self, client_sock, backend_sock, to_backend):
        gevent.sleep(60)
        return True


class Upper(BaseHandler):
    """Upper-cases what it relays."""

    name = "upper"

    def __call__(self, client_sock, backend_sock, to_backend):
        data = self._get_data(client_sock, backend_sock, to_backend)
        if data:
            (backend_sock if to_backend else client_sock).sendall(data.upper())
        return bool(data)


class Tag(BaseHandler):
    """Appends a marker to each chunk bound for the backend, to show chain order."""

    name = "tag"
    options = {"text": ("What to append", str, "!")}

    def __call__(self, client_sock, backend_sock, to_backend):
        data = self._get_data(client_sock, backend_sock, to_backend)
        if data:
            if to_backend:
                data += self.option("text").encode()
            (backend_sock if to_backend else client_sock).sendall(data)
        return bool(data)


class Broken(BaseHandler):
    name = "broken"

    def __call__(self, client_sock, backend_sock, to_backend):
        raise RuntimeError("boom in handler")


def connect_send_read(address: tuple[str, int], data: bytes) -> bytes:
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(data)
        return sock.recv(65536)


def registry_with(*handlers: type[BaseHandler]) -> Registry:
    registry = registry_from_plugins(make_plugin_manager())
    for handler in handlers:
        registry.add(handler, "test")
    return registry


def test_relays_random_payloads_byte_exact_on_200_concurrent_connections(echo_server):
    payloads = [os.urandom(1000 + 997 * i) for i in range(200)]
    with Proxy(echo_server.address) as proxy:
        with ThreadPoolExecutor(max_workers=50) as pool:
            replies = list(pool.map(lambda p: roundtrip(proxy.address, p, timeout=30), payloads))
        wait_until(lambda: all(not r.open for r in proxy.connections))
        records = proxy.connections
    assert [hashlib.sha256(r).hexdigest() for r in replies] == [
        hashlib.sha256(p).hexdigest() for p in payloads
    ]
    assert len(records) == 200
    assert sum(r.bytes_to_backend for r in records) == sum(map(len, payloads))
    assert sum(r.bytes_to_client for r in records) == sum(map(len, payloads))
    assert {r.ending for r in records} == {Ending.CLIENT_CLOSED}


def test_half_close_still_delivers_the_reply():
    """The backend answers only after the client's EOF: SHUT_WR must pass through."""
    listener = socket.create_server(("127.0.0.1", 0))

    def answer_after_eof():
        conn, _ = listener.accept()
        with conn:
            received = b""
            while chunk := conn.recv(1024):
                received += chunk
            conn.sendall(b"got " + received)

    server = threading.Thread(target=answer_after_eof, daemon=True)
    server.start()
    with Proxy(listener.getsockname()) as proxy:
        assert roundtrip(proxy.address, b"request") == b"got request"
        wait_until(lambda: not proxy.connections[0].open)
        assert proxy.connections[0].ending is Ending.CLIENT_CLOSED
    server.join(5)
    listener.close()


def test_refused_distant_resets_the_client_at_once():
    with Proxy(refused_address()) as proxy:
        started = time.monotonic()
        # the reset may hit the connect itself, the send, or the read
        with pytest.raises(ConnectionResetError):
            connect_send_read(proxy.address, b"hello")
        assert time.monotonic() - started < 2
        wait_until(lambda: proxy.connections and not proxy.connections[0].open)
        assert proxy.connections[0].ending is Ending.BACKEND_REFUSED


def test_stop_is_bounded_while_a_handler_sleeps_for_a_minute(echo_server):
    proxy = Proxy(echo_server.address, "sleepy", registry=registry_with(Sleepy)).start()
    with socket.create_connection(proxy.address, timeout=5) as sock:
        sock.sendall(b"zzz")
        wait_until(lambda: proxy.connections)
        started = time.monotonic()
        proxy.stop()
        assert time.monotonic() - started < 1.0
        assert not proxy.running
        # closed with "zzz" unread, so the kernel may answer with a reset
        try:
            assert sock.recv(10) == b""
        except ConnectionResetError:
            pass
    assert proxy.connections[0].ending is Ending.PROXY_STOPPED


def test_no_thread_left_after_200_proxies(echo_server):
    before = set(threading.enumerate())
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(200):
        with Proxy(echo_server.address) as proxy:
            assert roundtrip(proxy.address, b"x") == b"x"
    # the echo backend's own threads may still be finishing: look at the proxy's
    left = [t for t in set(threading.enumerate()) - before if t.name.startswith("vaurien-proxy")]
    assert left == []
    wait_until(lambda: len(os.listdir("/proc/self/fd")) <= fds)


def test_stop_is_idempotent_and_start_twice_is_an_error(echo_server):
    proxy = Proxy(echo_server.address).start()
    with pytest.raises(ProxyError, match="already started"):
        proxy.start()
    proxy.stop()
    proxy.stop()


def test_port_in_use_is_a_proxy_error(echo_server):
    with pytest.raises(ProxyError, match="cannot listen on 127.0.0.1"):
        Proxy(echo_server.address, port=echo_server.address[1]).start()


def test_listens_on_ipv6_loopback():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        server = EchoServer("::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        with Proxy(server.distant, host="::1") as proxy:
            assert proxy.distant.startswith("[::1]:")
            assert roundtrip(proxy.address, b"six") == b"six"
    finally:
        server.close()


def test_set_behavior_reaches_an_open_connection_and_restores(echo_server):
    proxy = Proxy(echo_server.address, registry=registry_with(Upper)).start()
    try:
        with socket.create_connection(proxy.address, timeout=5) as sock:
            sock.sendall(b"abc")
            assert sock.recv(10) == b"abc"
            with proxy.set_behavior("upper") as same:
                assert same is proxy
                assert proxy.behavior == "upper"
                sock.sendall(b"abc")
                assert sock.recv(10) == b"ABC"
            assert proxy.behavior == "100:dummy"
            sock.sendall(b"abc")
            assert sock.recv(10) == b"abc"
        wait_until(lambda: not proxy.connections[0].open)
        assert proxy.connections[0].handlers == ["dummy", "upper", "dummy"]
    finally:
        proxy.stop()


def test_set_behavior_rejects_bad_input_and_keeps_the_old_one(echo_server):
    with Proxy(echo_server.address) as proxy:
        with pytest.raises(
            ConfigError,
            match="unknown handler 'nope'; known: abort, bandwidth, blackout, delay, dummy, error, hang, latency, limit_data, reset_peer, slicer, slow_close, timeout, transient",
        ):
            proxy.set_behavior("nope")
        with pytest.raises(ConfigError, match="unexpected keyword argument 'sleep'"):
            proxy.set_behavior("dummy", sleep=1)
        assert proxy.behavior == "100:dummy"


def test_a_chain_applies_its_handlers_in_order(echo_server):
    registry = registry_with(Upper, Tag)
    options = {"tag": {"text": "-t"}}
    with Proxy(echo_server.address, "upper+tag", options=options, registry=registry) as proxy:
        # to the backend: upper then tag; back: upper (tag passes replies unchanged)
        assert roundtrip(proxy.address, b"ab") == b"AB-T"
    assert bytes(echo_server.received[-1]) == b"AB-t"


def test_a_handler_exception_is_recorded_not_lost(echo_server):
    with Proxy(echo_server.address, "broken", registry=registry_with(Broken)) as proxy:
        with socket.create_connection(proxy.address, timeout=5) as sock:
            sock.sendall(b"x")
            with pytest.raises(ConnectionResetError):  # closed with "x" unread
                sock.recv(10)
        wait_until(lambda: proxy.errors)
    assert "boom in handler" in proxy.errors[0].error


def test_behavior_mix_draws_per_connection(echo_server):
    registry = registry_with(Upper)
    with Proxy(echo_server.address, "50:upper", registry=registry, seed=7) as proxy:
        replies = [roundtrip(proxy.address, b"m") for _ in range(200)]
    upper = replies.count(b"M")
    assert 60 < upper < 140
    assert upper + replies.count(b"m") == 200
    assert sum(r.handler == "upper" for r in proxy.connections) == upper


def test_stop_returns_with_the_port_closed_and_one_hub_thread_for_all(echo_server):
    with Proxy(echo_server.address) as first, Proxy(echo_server.address) as second:
        hubs = [t for t in threading.enumerate() if t.name == HUB_THREAD_NAME]
        assert len(hubs) == 1
        assert hubs[0].daemon
        assert roundtrip(first.address, b"1") == b"1"
        assert roundtrip(second.address, b"2") == b"2"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(first.address, timeout=5)
    assert not first.running
    assert not second.running


class Blocking(BaseHandler):
    """Blocks its hub with time.sleep: the mistake stop() must name."""

    name = "blocking"
    entered = threading.Event()

    def __call__(self, client_sock, backend_sock, to_backend):
        self._get_data(client_sock, backend_sock, to_backend)
        Blocking.entered.set()
        time.sleep(3)  # the mistake under test, not a wait for anything
        return False


def test_a_handler_blocking_the_hub_is_named_by_stop(echo_server):
    proxy = Proxy(echo_server.address, "blocking", registry=registry_with(Blocking)).start()
    with socket.create_connection(proxy.address, timeout=5) as sock:
        sock.sendall(b"x")
        assert Blocking.entered.wait(5)
        with pytest.raises(ProxyError, match=r"did not stop within 0.5s; is a handler blocking"):
            proxy.stop(timeout=0.5)
    wait_until(lambda: proxy.stopped, timeout=10)


def test_a_proxy_may_keep_no_records_but_still_counts(echo_server):
    seen = []
    with Proxy(echo_server.address, keep_records=False, on_record=seen.append) as proxy:
        for _ in range(3):
            assert roundtrip(proxy.address, b"k") == b"k"
        wait_until(lambda: len(seen) == 3)
        assert proxy.connections == []
        assert proxy.accepted == 3
        wait_until(lambda: proxy.open_connections == 0)
    assert [record.index for record in seen] == [0, 1, 2]


def test_a_name_with_several_addresses_reaches_the_one_that_listens(echo_server):
    """``localhost`` may resolve to ::1 first while the backend listens on 127.0.0.1."""
    proxy = Proxy(f"localhost:{echo_server.address[1]}")
    with proxy:
        # as if the resolver had put an address nobody listens on first
        upstream = proxy.upstream
        upstream.resolved = [(socket.AF_INET, refused_address()), *(upstream.resolved or [])]
        assert roundtrip(proxy.address, b"either") == b"either"


def test_the_proxy_thread_leaves_the_programs_signals_to_the_main_thread(echo_server):
    """A SIGTERM landing in the proxy's (now the shared hub's) thread was only flagged there, and the
    vaurien command, blocked waiting for it in its main thread, hung."""
    import signal

    with Proxy(echo_server.distant) as proxy:
        assert proxy.running
        [thread] = [t for t in threading.enumerate() if t.name == HUB_THREAD_NAME]
        with open(f"/proc/self/task/{thread.native_id}/status") as status:
            blocked = next(int(line.split()[1], 16) for line in status if line.startswith("SigBlk"))
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
        assert blocked & (1 << (signum - 1)), signum


def test_a_dotted_handler_s_options_survive_a_behavior_without_it(echo_server):
    """Options of a handler named by dotted path stay dormant while the
    behavior does not name it (they used to make every later change fail
    with 'options given for unknown handler'), and apply again when it does."""
    proxy = Proxy(
        echo_server.address,
        "100:tests.test_engine.Tag",
        options={"tag": {"text": "?"}},
    )
    with proxy:
        assert roundtrip(proxy.address) == b"ping?"
        proxy.set_behavior("100:dummy")
        assert roundtrip(proxy.address) == b"ping"
        proxy.set_behavior("100:tests.test_engine.Tag")
        assert roundtrip(proxy.address) == b"ping?"
        with pytest.raises(ConfigError, match="options given for unknown handler 'nope'"):
            proxy.set_behavior("100:dummy", nope__x=1)
