"""Every proxy of a process runs on one shared hub thread: proxies start and
stop without a thread of their own, and never disturb one another."""

from __future__ import annotations

import gc
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from pathlib import Path

import gevent
import pytest

from pytest_vaurien import BaseHandler, Proxy
from pytest_vaurien.engine import hub as hub_module
from pytest_vaurien.engine.hub import HUB_THREAD_NAME, shared_hub
from pytest_vaurien.records import Ending
from pytest_vaurien.registry import Registry, make_plugin_manager, registry_from_plugins
from tests.client import read_exactly, roundtrip, wait_until

ROOT = Path(__file__).resolve().parent.parent


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _hub_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == HUB_THREAD_NAME]


class Stubborn(BaseHandler):
    """Swallows the kill that stops its proxy and goes on sleeping: a greenlet
    that does not unwind, whose sockets the stop closes from outside."""

    name = "stubborn"
    entered = threading.Event()

    def __call__(self, client_sock, backend_sock, to_backend):
        self._get_data(client_sock, backend_sock, to_backend)
        Stubborn.entered.set()
        for _ in range(3):
            try:
                gevent.sleep(60)
            except gevent.GreenletExit:
                pass
        return False


def _registry(*handlers: type[BaseHandler]) -> Registry:
    registry = registry_from_plugins(make_plugin_manager())
    for handler in handlers:
        registry.add(handler, "tests")
    return registry


def _stream_through(address, total: int, result: dict[str, object]) -> None:
    """Send ``total`` bytes in chunks through an echo proxy, reading each back."""
    try:
        with socket.create_connection(address, timeout=10) as sock:
            received = bytearray()
            sent = bytearray()
            for index in range(total // 4096):
                chunk = bytes([index % 251]) * 4096
                sock.sendall(chunk)
                sent += chunk
                received += read_exactly(sock, len(chunk))
            result["ok"] = received == sent
    except Exception as error:  # reported to the test's thread
        result["error"] = error


def test_one_hub_thread_serves_every_proxy(echo_server):
    proxies = [Proxy(echo_server.address).start() for _ in range(5)]
    try:
        assert len(_hub_threads()) == 1
        assert _hub_threads()[0].daemon
        for index, proxy in enumerate(proxies):
            assert roundtrip(proxy.address, b"p%d" % index) == b"p%d" % index
    finally:
        for proxy in proxies:
            proxy.stop()
    assert len(_hub_threads()) == 1  # it stays for the next proxy


def test_stopping_one_proxy_loses_nothing_on_another(echo_server):
    relaying = Proxy(echo_server.address).start()
    stopped = Proxy(echo_server.address, "delay", options={"delay": {"sleep": 0.01}}).start()
    result: dict[str, object] = {}
    try:
        with socket.create_connection(stopped.address, timeout=5) as victim:
            victim.sendall(b"x")
            wait_until(lambda: stopped.open_connections == 1)
            client = threading.Thread(
                target=_stream_through, args=(relaying.address, 4 << 20, result)
            )
            client.start()
            wait_until(lambda: relaying.connections and relaying.connections[0].bytes_to_client)
            stopped.stop()
            assert not stopped.running
            client.join(30)
        assert result == {"ok": True}
        assert relaying.running
        assert relaying.connections[0].bytes_to_backend == 4 << 20
        assert stopped.connections[0].ending is Ending.PROXY_STOPPED
    finally:
        relaying.stop()
        stopped.stop()


def test_a_handler_sleeping_a_minute_stops_in_bounded_time_while_another_relays(echo_server):
    sleepy = Proxy(echo_server.address, "delay", options={"delay": {"sleep": 60}}).start()
    other = Proxy(echo_server.address).start()
    try:
        with socket.create_connection(sleepy.address, timeout=5) as held:
            held.sendall(b"held")
            wait_until(lambda: sleepy.open_connections == 1)
            assert roundtrip(other.address, b"meanwhile") == b"meanwhile"
            started = time.monotonic()
            sleepy.stop()
            assert time.monotonic() - started < 2.0  # generous: the grace is 0.3 s
            assert roundtrip(other.address, b"after") == b"after"
    finally:
        other.stop()
        sleepy.stop()


def test_a_greenlet_that_does_not_unwind_is_abandoned_and_its_sockets_closed(echo_server):
    Stubborn.entered.clear()
    stubborn = Proxy(echo_server.address, "stubborn", registry=_registry(Stubborn)).start()
    other = Proxy(echo_server.address).start()
    try:
        fds = _fds()
        with socket.create_connection(stubborn.address, timeout=5) as held:
            held.sendall(b"x")
            assert Stubborn.entered.wait(5)
            started = time.monotonic()
            stubborn.stop()
            assert time.monotonic() - started < 2.0
            assert stubborn.connections[0].ending is Ending.PROXY_STOPPED
            assert roundtrip(other.address, b"fine") == b"fine"
        wait_until(lambda: _fds() <= fds)
    finally:
        other.stop()
        stubborn.stop()


def test_disabling_one_proxy_leaves_another_s_connection_open(echo_server):
    with Proxy(echo_server.address) as kept, Proxy(echo_server.address) as downed:
        with socket.create_connection(kept.address, timeout=5) as sock:
            sock.sendall(b"before")
            assert read_exactly(sock, 6) == b"before"
            with downed.down():
                with pytest.raises(ConnectionRefusedError):
                    socket.create_connection(downed.address, timeout=5)
                sock.sendall(b"during")
                assert read_exactly(sock, 6) == b"during"
            assert roundtrip(downed.address, b"up") == b"up"
            sock.sendall(b"after")
            assert read_exactly(sock, 5) == b"after"
        assert kept.connections[0].ending is not Ending.PROXY_DOWN


def test_200_start_stop_cycles_leave_no_thread_and_no_descriptor(echo_server):
    shared_hub()
    threads = len(threading.enumerate())
    fds = _fds()
    for index in range(200):
        proxy = Proxy(echo_server.address).start()
        if index % 20 == 0:
            assert roundtrip(proxy.address, b"c") == b"c"
        proxy.stop()
        proxy.stop()  # idempotent
    assert shared_hub().proxies == set()
    # the echo backend's own threads may still be finishing
    wait_until(lambda: len(threading.enumerate()) <= threads)
    wait_until(lambda: _fds() <= fds)


def test_a_stopped_proxy_is_no_longer_referenced_from_the_hub(echo_server):
    def used_and_stopped() -> weakref.ref[Proxy]:
        proxy = Proxy(echo_server.address, "delay", options={"delay": {"sleep": 30}}).start()
        held = socket.create_connection(proxy.address, timeout=5)
        held.sendall(b"held")
        wait_until(lambda: proxy.open_connections == 1)
        proxy.stop()  # killed mid-sleep
        held.close()
        return weakref.ref(proxy)

    ref = used_and_stopped()
    wait_until(lambda: gc.collect() is not None and ref() is None)


def test_start_and_stop_from_a_greenlet_of_the_hub(echo_server):
    """A handler (or the control API, on the hub) may start and stop proxies."""
    made: list[Proxy] = []
    done = threading.Event()

    def in_hub() -> None:
        inner = Proxy(echo_server.address).start()
        made.append(inner)
        inner.stop()
        done.set()

    shared_hub().spawn(in_hub)
    assert done.wait(5)
    wait_until(lambda: made[0].stopped)


def test_a_forked_child_starts_a_hub_of_its_own(echo_server):
    shared_hub()
    script = textwrap.dedent(
        f"""
        import os, socket, sys
        from pytest_vaurien import Proxy
        from pytest_vaurien.engine.hub import shared_hub

        listener = socket.create_server(("127.0.0.1", 0))
        with Proxy({echo_server.address!r}) as first:
            parent_hub = shared_hub()
            pid = os.fork()
            if pid == 0:
                try:
                    assert shared_hub() is not parent_hub
                    with Proxy({echo_server.address!r}) as proxy:
                        with socket.create_connection(proxy.address, timeout=5) as sock:
                            sock.sendall(b"child")
                            ok = sock.recv(10) == b"child"
                    os._exit(0 if ok else 1)
                except BaseException as error:
                    print(repr(error), file=sys.stderr)
                    os._exit(2)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0, status
            with socket.create_connection(first.address, timeout=5) as sock:
                sock.sendall(b"parent")
                assert sock.recv(10) == b"parent"
        print("OK")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"


def test_exit_with_a_proxy_left_running_neither_hangs_nor_prints(echo_server):
    script = textwrap.dedent(
        f"""
        import socket
        from pytest_vaurien import Proxy

        proxy = Proxy({echo_server.address!r}, "delay", options={{"delay": {{"sleep": 60}}}})
        proxy.start()
        held = socket.create_connection(proxy.address, timeout=5)
        held.sendall(b"held")
        print("OK")
        """
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"
    assert result.stderr == ""
    assert time.monotonic() - started < 30  # generous: the exit waits 1 s at most


def test_the_hub_module_knows_its_current_hub():
    assert shared_hub() is hub_module._current
    assert shared_hub().alive


def _refused(address) -> bool:
    try:
        socket.create_connection(address, timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_stop_if_idle_does_not_wait_yet_the_listener_closes(echo_server):
    proxy = Proxy(echo_server.address).start()
    assert roundtrip(proxy.address, b"once") == b"once"
    wait_until(lambda: proxy.open_connections == 0)
    assert proxy.stop_if_idle()
    assert not proxy.running
    wait_until(lambda: proxy.stopped)
    assert _refused(proxy.address)
    assert proxy.stats.connections == 1
    assert shared_hub().proxies.isdisjoint({proxy})
    proxy.stop()  # idempotent after it


def test_stop_if_idle_declines_while_a_connection_is_open(echo_server):
    proxy = Proxy(echo_server.address).start()
    try:
        with socket.create_connection(proxy.address, timeout=5) as held:
            held.sendall(b"held")
            assert read_exactly(held, 4) == b"held"
            assert not proxy.stop_if_idle()
            assert proxy.running
            assert roundtrip(proxy.address, b"still") == b"still"
            proxy.stop()  # the connection is closed and recorded before this returns
            assert proxy.connections[0].ending is Ending.PROXY_STOPPED
    finally:
        proxy.stop()


def test_stop_if_idle_before_the_hub_accepts_leaves_nothing_behind(echo_server):
    shared_hub()
    fds = _fds()
    proxies = [Proxy(echo_server.address).start() for _ in range(100)]
    for proxy in proxies:
        assert proxy.stop_if_idle()
    for proxy in proxies:
        proxy.stop()  # waits, bounded, for what the hub had not done yet
        assert proxy.stopped
    assert shared_hub().proxies.isdisjoint(proxies)
    wait_until(lambda: _fds() <= fds)
