"""Faults per HTTP request, through real sockets, with real clients (requests, urllib3)."""

from __future__ import annotations

import re
import socket
import threading
import time

import pytest
import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from pytest_vaurien import Proxy
from pytest_vaurien.rules import Rule
from tests.client import read_until_eof, wait_until


def http(proxy: Proxy) -> str:
    host, port = proxy.address
    return f"http://{host}:{port}"


def session(retries: Retry | int = 0) -> requests.Session:
    client = requests.Session()
    client.mount("http://", HTTPAdapter(max_retries=retries))
    return client


def test_the_first_two_posts_get_a_503_and_the_retry_succeeds(http_backend):
    """The retry test every retry policy needs, on one pooled keep-alive connection."""
    rules = [Rule("error", status=503, match="POST /payments/*", schedule="first:2", name="pay")]
    retry = Retry(total=3, status_forcelist=[503], allowed_methods=None, backoff_factor=0)
    with (
        Proxy(http_backend.distant, protocol="http", rules=rules) as proxy,
        session(retry) as client,
    ):
        assert client.get(f"{http(proxy)}/hello").status_code == 200
        reply = client.post(f"{http(proxy)}/payments/7", data=b"10 EUR")
        assert reply.status_code == 201
        assert reply.content == b"created 10 EUR"
        rule = proxy.rule("pay")
        assert (rule.matched, rule.fired) == (3, 2)
        assert len(proxy.connections) == 1  # every request on one kept-alive connection
        summary = [(e.request, e.by, e.fault, e.reply) for e in proxy.exchanges]
    assert summary == [
        ("GET /hello", "draw", "dummy", "200"),
        ("POST /payments/7", "pay", "error", "503"),
        ("POST /payments/7", "pay", "error", "503"),
        ("POST /payments/7", "draw", "dummy", "201"),
    ]
    # the faulted requests never reached the backend
    assert http_backend.posts() == ["/payments/7"]


def test_after_lets_the_backend_act_and_the_client_is_told_it_failed(http_backend):
    """ "Did my POST happen?": yes, though the client got a 503."""
    rules = [Rule("error", after=True, status=502, match="POST /payments/*")]
    with Proxy(http_backend.distant, protocol="http", rules=rules) as proxy, session() as client:
        reply = client.post(f"{http(proxy)}/payments/8", data=b"5 EUR")
        assert reply.status_code == 502
        assert reply.content == b"injected by vaurien\n"
        assert client.get(f"{http(proxy)}/after").status_code == 200  # the connection lives on
        [post, get] = proxy.exchanges
    assert http_backend.posts() == ["/payments/8"]
    assert (post.reply, post.outcome, get.reply) == ("502", "answered", "200")


def test_the_error_reply_is_well_formed_with_its_options(http_backend):
    rule = Rule(
        "error",
        status=429,
        reason="Slow Down",
        headers={"Retry-After": "0", "X-Fault": "yes"},
        body="later\n",
    )
    with Proxy(http_backend.distant, protocol="http", rules=[rule]) as proxy, session() as client:
        reply = client.get(f"{http(proxy)}/x")
        assert (reply.status_code, reply.reason, reply.content) == (429, "Slow Down", b"later\n")
        assert reply.headers["Retry-After"] == "0"
        assert reply.headers["X-Fault"] == "yes"
        assert reply.headers["Content-Length"] == "6"
        assert "close" not in reply.headers.get("Connection", "")
        head = client.head(f"{http(proxy)}/x")
        assert (head.status_code, head.content) == (429, b"")


def test_urllib3_honours_retry_after_from_an_injected_503(http_backend):
    rule = Rule("error", status=503, headers="Retry-After: 1", schedule="first:1")
    pool = urllib3.PoolManager(retries=Retry(total=2, status_forcelist=[503]))
    with Proxy(http_backend.distant, protocol="http", rules=[rule]) as proxy:
        started = time.monotonic()
        reply = pool.request("GET", f"{http(proxy)}/retry-after")
        waited = time.monotonic() - started
    assert reply.status == 200
    assert waited >= 0.9  # urllib3 slept as the Retry-After said


def test_a_request_that_hangs_times_out_and_the_next_connection_works(http_backend):
    rules = [Rule("hang", match="GET /slow", name="stuck")]
    with Proxy(http_backend.distant, protocol="http", rules=rules) as proxy, session() as client:
        with pytest.raises(requests.exceptions.ReadTimeout):
            client.get(f"{http(proxy)}/slow", timeout=0.5)
        assert client.get(f"{http(proxy)}/fast", timeout=5).text == "hello /fast"
        assert proxy.rule("stuck").fired == 1
    assert [path for _, path, _ in http_backend.calls] == ["/fast"]


def test_a_connection_that_dies_on_its_third_request(http_backend, caplog):
    rules = [Rule("blackout", per="connection", schedule="at:3&times:1")]
    pool = urllib3.PoolManager(retries=Retry(total=2, connect=0, read=2))
    try:
        with Proxy(http_backend.distant, protocol="http", rules=rules) as proxy:
            statuses = [pool.request("GET", f"{http(proxy)}/n{i}").status for i in range(5)]
            assert statuses == [200] * 5
            connections = len(proxy.connections)
            closed = [e for e in proxy.exchanges if e.outcome == "closed"]
    finally:
        pool.clear()
        # urllib3 logged its retry with the error, which holds the dead
        # connection's socket: let the records go before the descriptor check
        caplog.clear()
    # the third request of the first connection was cut; the retry opened a second one
    assert connections == 2
    assert [e.request for e in closed] == ["GET /n2"]


def test_delay_acts_on_the_matching_request_only(http_backend):
    rules = [Rule("delay", sleep=0.4, match="GET /slow")]
    with Proxy(http_backend.distant, protocol="http", rules=rules) as proxy, session() as client:
        started = time.monotonic()
        client.get(f"{http(proxy)}/fast")
        fast = time.monotonic() - started
        started = time.monotonic()
        client.get(f"{http(proxy)}/slow")
        slow = time.monotonic() - started
    assert fast < 0.3
    assert 0.38 <= slow < 2.0


def test_faults_are_drawn_per_request_on_a_pooled_connection(http_backend):
    """The motivating case: "20:delay" used to slow all of a keep-alive client or none."""
    with (
        Proxy(http_backend.distant, "30:error", protocol="http", seed=5) as proxy,
        session() as client,
    ):
        statuses = [client.get(f"{http(proxy)}/r{i}").status_code for i in range(40)]
        assert len(proxy.connections) == 1
    assert 4 <= statuses.count(503) <= 24
    assert statuses.count(200) + statuses.count(503) == 40


def test_pipelined_requests_get_their_replies_in_order(http_backend):
    """A faulted request in the middle of a pipeline is answered in its place."""
    rules = [Rule("error", status=503, match="GET /two")]
    with (
        Proxy(http_backend.distant, protocol="http", rules=rules) as proxy,
        socket.create_connection(proxy.address, timeout=5) as sock,
    ):
        sock.sendall(
            b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        replies = read_until_eof(sock)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", replies)
    assert statuses == [b"200", b"503", b"200"]
    # each body once: a reply ending just before the proxy's own answer is not replayed
    assert replies.count(b"hello /one") == replies.count(b"hello /three") == 1
    assert replies.index(b"hello /one") < replies.index(b"injected by vaurien")
    assert replies.index(b"injected by vaurien") < replies.index(b"hello /three")


def test_bodies_pass_untouched_chunked_large_and_empty(http_backend):
    with Proxy(http_backend.distant, protocol="http") as proxy, session() as client:
        assert client.get(f"{http(proxy)}/chunked").content == b"hello chunked world"
        big = client.get(f"{http(proxy)}/big").content
        assert big == bytes(range(256)) * 4096
        assert client.get(f"{http(proxy)}/empty").status_code == 204
        assert client.head(f"{http(proxy)}/head").headers["Content-Length"] == "42"
        upload = bytes(range(256)) * 2000
        assert client.post(f"{http(proxy)}/up", data=upload).content == b"created " + upload
        records = proxy.exchanges
    assert [e.reply for e in records] == ["200", "200", "204", "200", "201"]
    assert all(e.outcome == "relayed" for e in records)


def test_a_toxic_acts_on_its_exchange_and_the_next_one_does_not_overtake(http_backend):
    rules = [Rule("latency", latency=0.3, match="GET /slow")]
    with (
        Proxy(http_backend.distant, protocol="http", rules=rules) as proxy,
        socket.create_connection(proxy.address, timeout=5) as sock,
    ):
        started = time.monotonic()
        sock.sendall(
            b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /fast HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        replies = read_until_eof(sock)
        took = time.monotonic() - started
    assert replies.index(b"hello /slow") < replies.index(b"hello /fast")
    assert 0.28 <= took < 3.0


def test_abort_delivers_the_request_and_closes_before_the_reply(http_backend):
    rules = [Rule("abort", match="POST /payments/*")]
    with Proxy(http_backend.distant, protocol="http", rules=rules) as proxy, session() as client:
        with pytest.raises(requests.exceptions.ConnectionError):
            client.post(f"{http(proxy)}/payments/9", data=b"1 EUR")
        [exchange] = proxy.exchanges
    assert http_backend.posts() == ["/payments/9"]
    assert exchange.outcome == "aborted"


class UpgradingBackend:
    """Answers an Upgrade request with 101, then echoes bytes, as a WebSocket server."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        host, port = self.listener.getsockname()
        self.distant = f"{host}:{port}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(1024)
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\n\r\n" + head.split(b"\r\n\r\n", 1)[1]
            )
            while data := conn.recv(1024):
                conn.sendall(data)

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)


def test_an_upgrade_falls_back_to_plain_relay_with_the_reason():
    """After an Upgrade request the connection is relayed as bytes, the reason recorded."""
    backend = UpgradingBackend()
    try:
        with (
            Proxy(backend.distant, protocol="http") as proxy,
            socket.create_connection(proxy.address, timeout=5) as sock,
        ):
            sock.sendall(
                b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
            )
            sock.sendall(b"\x81\x05hello")
            sock.shutdown(socket.SHUT_WR)
            data = read_until_eof(sock)
            wait_until(lambda: not proxy.connections[0].open)
            [record] = proxy.connections
            [exchange] = proxy.exchanges
    finally:
        backend.close()
    assert data.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert data.endswith(b"\r\n\r\n\x81\x05hello")
    assert record.plain == "client side: HTTP Upgrade"
    assert (exchange.request, exchange.reply) == ("GET /ws", "101")


def test_garbage_is_relayed_untouched(echo_server):
    with Proxy(echo_server.distant, protocol="http") as proxy:
        with socket.create_connection(proxy.address, timeout=5) as sock:
            sock.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
            sock.shutdown(socket.SHUT_WR)
            assert read_until_eof(sock) == b"\x16\x03\x01 not http at all\r\n\r\n"
        wait_until(lambda: not proxy.connections[0].open)
        assert proxy.connections[0].plain is not None


def test_match_by_headers_and_method_lists(http_backend):
    rules = [
        Rule(
            "error", status=418, match={"method": ["PUT", "DELETE"], "headers": {"x-tenant": "b*"}}
        )
    ]
    with Proxy(http_backend.distant, protocol="http", rules=rules) as proxy, session() as client:
        base = http(proxy)
        assert client.put(f"{base}/a", headers={"X-Tenant": "blue"}).status_code == 418
        assert client.put(f"{base}/a", headers={"X-Tenant": "red"}).status_code == 201
        assert client.post(f"{base}/a", headers={"X-Tenant": "blue"}).status_code == 201
