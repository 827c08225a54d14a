"""Transparent connections served in loop callbacks only, over real sockets:
accept, a non-blocking connect watched by the loop, the fast path's streams
and the close, with no greenlet. Every ending, the half-close, a stop or a
disable while they are open or still connecting, a live change that hands
one to pumps and handlers with nothing lost, and running out of descriptors
at the connect."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_vaurien import BaseHandler, Proxy
from pytest_vaurien.records import ConnectionRecord, Ending
from tests.client import read_exactly, read_until_eof, settled, wait_until
from tests.servers import EchoServer, FullBacklog, ScriptedServer

ROOT = Path(__file__).resolve().parent.parent


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _greenlets(proxy: Proxy) -> list[object]:
    """The greenlets serving the proxy's open connections (none in callbacks)."""
    return [slot.greenlet for slot in list(proxy._slots) if slot.greenlet is not None]


class Counting(BaseHandler):
    """Relays unchanged, counting what it relayed each way."""

    name = "counting"

    def __init__(self, settings=None, proxy=None):
        super().__init__(settings, proxy)
        self.seen = {True: b"", False: b""}

    def __call__(self, client_sock, backend_sock, to_backend):
        data = self._get_data(client_sock, backend_sock, to_backend)
        self.seen[to_backend] += data
        if data:
            (backend_sock if to_backend else client_sock).sendall(data)
        return bool(data)


def test_a_client_that_closes_first_ends_without_a_greenlet(echo_server):
    records: list[ConnectionRecord] = []
    with Proxy(echo_server.address, on_record=records.append) as proxy:
        with socket.create_connection(proxy.address, timeout=5) as client:
            client.sendall(b"ping")
            assert read_exactly(client, 4) == b"ping"
            assert proxy.open_connections == 1
            assert _greenlets(proxy) == []
            assert not proxy.stop_if_idle()  # a connection in callbacks is open
            client.shutdown(socket.SHUT_WR)
            assert read_until_eof(client) == b""
        [record] = settled(proxy)
        wait_until(lambda: proxy.open_connections == 0)
        assert records == [record]
    assert record.ending is Ending.CLIENT_CLOSED
    assert (record.bytes_to_backend, record.bytes_to_client) == (4, 4)
    assert record.handler == "dummy"


def test_a_backend_half_close_reaches_the_client_and_the_client_goes_on():
    got: list[bytes] = []

    def script(conn: socket.socket) -> None:
        conn.sendall(b"hello")
        conn.shutdown(socket.SHUT_WR)
        received = b""
        while data := conn.recv(100):
            received += data
        got.append(received)

    with ScriptedServer(script) as server, Proxy(server.address) as proxy:
        with socket.create_connection(proxy.address, timeout=5) as client:
            assert read_until_eof(client) == b"hello"  # the backend's FIN came through
            client.sendall(b"still talking")  # the other way is still open
            client.shutdown(socket.SHUT_WR)
            [record] = settled(proxy)
        wait_until(lambda: got)
    assert got == [b"still talking"]
    assert record.ending is Ending.BACKEND_CLOSED
    assert (record.bytes_to_backend, record.bytes_to_client) == (13, 5)


def test_a_client_half_close_still_gets_the_reply(echo_server):
    with Proxy(echo_server.address) as proxy:
        with socket.create_connection(proxy.address, timeout=5) as client:
            client.sendall(b"x" * 100_000)
            client.shutdown(socket.SHUT_WR)
            assert read_until_eof(client) == b"x" * 100_000
        [record] = settled(proxy)
    assert record.ending is Ending.CLIENT_CLOSED
    assert record.bytes_to_backend == record.bytes_to_client == 100_000


def test_a_client_reset_is_recorded_as_reset(echo_server):
    with Proxy(echo_server.address) as proxy:
        client = socket.create_connection(proxy.address, timeout=5)
        client.sendall(b"ping")
        assert read_exactly(client, 4) == b"ping"
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        client.close()
        [record] = settled(proxy)
    assert record.ending is Ending.RESET
    assert "client side" in (record.error or ""), record.error


@pytest.mark.parametrize("down", [False, True], ids=["stop", "disable"])
def test_stopping_closes_connections_in_callbacks_at_once(echo_server, down):
    records: list[ConnectionRecord] = []
    fds = _fds()
    proxy = Proxy(echo_server.address, on_record=records.append).start()
    clients = []
    try:
        for index in range(5):
            client = socket.create_connection(proxy.address, timeout=5)
            clients.append(client)
            client.sendall(b"%d" % index)
            assert read_exactly(client, 1) == b"%d" % index
        assert proxy.open_connections == 5
        assert _greenlets(proxy) == []
        if down:
            proxy.disable()
        else:
            proxy.stop()
        assert proxy.open_connections == 0
        for client in clients:
            assert read_until_eof(client) == b""
        ending = Ending.PROXY_DOWN if down else Ending.PROXY_STOPPED
        assert [record.ending for record in proxy.connections] == [ending] * 5
        assert sorted(record.index for record in records) == list(range(5))
    finally:
        proxy.stop()
        for client in clients:
            client.close()
    # the proxy's are closed by now; the echo server closes its side as it sees them go
    wait_until(lambda: _fds() <= fds, message="no descriptor left")


def test_a_stop_while_connecting_leaves_nothing_behind():
    fds = _fds()
    with FullBacklog() as server:
        proxy = Proxy(server.address, connect_timeout=60).start()
        try:
            with socket.create_connection(proxy.address, timeout=5) as client:
                wait_until(lambda: proxy.accepted == 1)
                assert _greenlets(proxy) == []
                proxy.stop()
                assert read_until_eof(client) == b""
        finally:
            proxy.stop()
        [record] = proxy.connections
    assert record.ending is Ending.PROXY_STOPPED
    assert _fds() <= fds


def test_a_live_change_hands_a_connection_to_a_handler_with_nothing_lost(echo_server):
    with Proxy(echo_server.address) as proxy:
        with socket.create_connection(proxy.address, timeout=5) as client:
            client.sendall(b"before")
            assert read_exactly(client, 6) == b"before"
            assert _greenlets(proxy) == []
            with proxy.set_behavior(f"{__name__}.Counting"):
                client.sendall(b"during")
                assert read_exactly(client, 6) == b"during"
                assert len(_greenlets(proxy)) == 1  # pumps took over
                counting = proxy.handlers[f"{__name__}.Counting"]
                assert counting.seen == {True: b"during", False: b"during"}
            client.sendall(b"after")  # back to dummy: the pumps relay untouched
            assert read_exactly(client, 5) == b"after"
            client.shutdown(socket.SHUT_WR)
            assert read_until_eof(client) == b""
        [record] = settled(proxy)
        assert counting.seen == {True: b"during", False: b"during"}
    assert record.ending is Ending.CLIENT_CLOSED
    assert record.handlers == ["dummy", f"{__name__}.Counting", "dummy"]
    assert record.bytes_to_backend == record.bytes_to_client == 17


def test_a_live_change_to_a_protocol_free_transparent_chain_keeps_relaying(echo_server):
    """A new plan whose chain is transparent again: the pumps relay untouched."""
    with Proxy(echo_server.address) as proxy:
        with socket.create_connection(proxy.address, timeout=5) as client:
            client.sendall(b"one")
            assert read_exactly(client, 3) == b"one"
            proxy.set_behavior("dummy")
            client.sendall(b"two")
            assert read_exactly(client, 3) == b"two"
        [record] = settled(proxy)
    assert record.ending is Ending.CLIENT_CLOSED
    assert record.bytes_to_backend == record.bytes_to_client == 6


def test_an_echo_of_many_connections_at_once_counts_every_byte(echo_server: EchoServer):
    payloads = [os.urandom(1000 + index) for index in range(50)]
    with Proxy(echo_server.address) as proxy:
        clients = [socket.create_connection(proxy.address, timeout=5) for _ in payloads]
        try:
            for client, payload in zip(clients, payloads, strict=True):
                client.sendall(payload)
            for client, payload in zip(clients, payloads, strict=True):
                assert read_exactly(client, len(payload)) == payload
        finally:
            for client in clients:
                client.close()
        records = settled(proxy)
    assert sum(record.bytes_to_backend for record in records) == sum(map(len, payloads))
    assert sum(record.bytes_to_client for record in records) == sum(map(len, payloads))


def test_running_out_of_descriptors_at_the_connect_resets_the_client(tmp_path):
    """A connect that cannot make its socket is EXHAUSTED, not a refusal: the
    client gets an RST, one warning is logged, and the proxy recovers."""
    script = tmp_path / "exhaust_connect.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import logging, os, resource, socket, sys, time
            sys.path.insert(0, {str(ROOT)!r})
            logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
            from pytest_vaurien import Proxy

            # a backend that never accepts: the kernel completes connects into its backlog
            backend = socket.socket(); backend.bind(("127.0.0.1", 0)); backend.listen(64)
            proxy = Proxy("%s:%d" % backend.getsockname()).start()
            clients = [socket.socket() for _ in range(6)]
            for client in clients:
                client.settimeout(5)
            lowest_free = os.dup(0)
            os.close(lowest_free)
            # two connections fit (two descriptors each); the third one's
            # accept takes the last descriptor and its connect has none
            resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free + 5, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
            endings = []
            for index, client in enumerate(clients):
                try:
                    client.connect(proxy.address)
                except ConnectionResetError:  # accepted, and reset already
                    endings.append("reset")
                    continue
                deadline = time.monotonic() + 5
                while proxy.accepted <= index and time.monotonic() < deadline:
                    time.sleep(0.005)
                if index >= 2:
                    try:
                        endings.append(client.recv(10))
                    except ConnectionResetError:
                        endings.append("reset")
            print("clients", endings, file=sys.stderr)
            for client in clients:
                client.close()
            resource.setrlimit(resource.RLIMIT_NOFILE, (4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
            proxy.stop()
            print("endings", [str(r.ending) for r in proxy.connections], file=sys.stderr)
            print("open", proxy.open_connections, file=sys.stderr)
            print("done", file=sys.stderr)
            """
        )
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    lines = result.stderr.splitlines()
    assert lines[-1] == "done", result.stderr
    assert "clients ['reset', 'reset', 'reset', 'reset']" in lines, result.stderr
    [endings] = [line for line in lines if line.startswith("endings")]
    assert endings == (
        "endings ['proxy stopped', 'proxy stopped', "
        "'proxy out of descriptors', 'proxy out of descriptors', "
        "'proxy out of descriptors', 'proxy out of descriptors']"
    ), result.stderr
    warnings = [line for line in lines if line.startswith("WARNING")]
    assert len(warnings) == 1, result.stderr
    assert "connect to" in warnings[0]
    assert "Too many open files" in warnings[0]
    assert "open 0" in lines


def test_a_connection_served_in_callbacks_leaves_no_reference_cycle(echo_server):
    """Freed by reference counting as it ends: the cyclic garbage collector
    took about a fifth of the proxy's Python time in a churn of short
    connections while each left a cycle (its endpoints pointing back at it,
    its streams holding their own bound methods)."""
    import gc

    from pytest_vaurien.engine.connection import Connection
    from pytest_vaurien.engine.endpoint import Endpoint
    from pytest_vaurien.engine.fastpath import Stream

    with Proxy(echo_server.address) as proxy:
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for index in range(20):
                with socket.create_connection(proxy.address, timeout=5) as client:
                    client.sendall(b"%d" % index)
                    assert read_exactly(client, len(b"%d" % index)) == b"%d" % index
                    client.shutdown(socket.SHUT_WR)
                    assert read_until_eof(client) == b""
            settled(proxy)
            wait_until(lambda: proxy.open_connections == 0)
            gc.collect()
            left = [o for o in gc.garbage if isinstance(o, Connection | Endpoint | Stream)]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert left == []


class FailsToStart(BaseHandler):
    """Transparent, but its ``on_connection`` raises."""

    name = "fails_to_start"

    def on_connection(self, connection):
        raise RuntimeError("no state for this one")


def test_a_transparent_handler_failing_at_the_start_ends_the_connection_as_an_error(
    echo_server,
):
    with Proxy(echo_server.address, f"{__name__}.FailsToStart") as proxy:
        with socket.create_connection(proxy.address, timeout=5) as client:
            assert read_until_eof(client) == b""
        [record] = settled(proxy)
        wait_until(lambda: proxy.open_connections == 0)
    assert record.ending is Ending.ERROR
    assert "no state for this one" in (record.error or "")


def test_an_error_in_a_connect_callback_ends_the_connection_as_an_error(echo_server, monkeypatch):
    """A bug in the engine's callbacks is no open connection forever, nor a
    traceback left to the hub: the record says what happened."""
    from pytest_vaurien.engine.connection import Connection

    def broken(self, *args):
        raise RuntimeError("a bug in the relay")

    monkeypatch.setattr(Connection, "relay_in_callbacks", broken)
    with Proxy(echo_server.address) as proxy:
        with socket.create_connection(proxy.address, timeout=5) as client:
            assert read_until_eof(client) == b""
        [record] = settled(proxy)
        wait_until(lambda: proxy.open_connections == 0)
    assert record.ending is Ending.ERROR
    assert "a bug in the relay" in (record.error or "")
