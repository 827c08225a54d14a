"""Plain requests in batches, through the real proxy, with real clients.

At ``100:dummy`` with no one reading the exchange records (the ``vaurien``
command's case), whole plain requests and their replies are framed as
batches (``protocols/http.py``). What a client sees must not change: replies
to HEAD without a body, chunked replies, pipelined requests answered in order;
and a behavior or a rule set live applies from the very next request.
"""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import Any

import pytest

from pytest_vaurien import Proxy
from pytest_vaurien.protocols import http as framing
from tests.client import wait_until
from tests.servers import ScriptedServer


@pytest.fixture
def plain_proxy(http_backend: Any) -> Iterator[Proxy]:
    """A proxy that relays every request and keeps no record: batches may form."""
    with Proxy(http_backend.distant, "100:dummy", protocol="http", keep_records=False) as proxy:
        yield proxy


def connect(proxy: Proxy) -> closing[http.client.HTTPConnection]:
    host, port = proxy.address
    return closing(http.client.HTTPConnection(host, port, timeout=10))


def ask(
    client: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None
) -> tuple[int, bytes, str | None]:
    client.request(method, path, body=body)
    reply = client.getresponse()
    return reply.status, reply.read(), reply.getheader("Transfer-Encoding")


class _Kept:
    """A reader ``http.client.HTTPResponse`` may not close: pipelined replies
    are read one after the other from the same buffered stream."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader

    def makefile(self, mode: str) -> _Kept:
        return self

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reader, name)


def test_keep_alive_requests_head_and_chunked_replies_come_back_whole(plain_proxy, http_backend):
    with connect(plain_proxy) as client:
        for round_ in range(3):  # the heads are unknown, then known: batches
            assert ask(client, "GET", f"/a{round_}") == (200, f"hello /a{round_}".encode(), None)
            assert ask(client, "GET", "/a") == (200, b"hello /a", None)
            assert ask(client, "HEAD", "/h") == (200, b"", None)
            assert ask(client, "GET", "/chunked") == (200, b"hello chunked world", "chunked")
            assert ask(client, "POST", "/p", b"12345") == (201, b"created 12345", None)
            assert ask(client, "GET", "/empty") == (204, b"", None)
            assert ask(client, "GET", "/a") == (200, b"hello /a", None)
    assert len(http_backend.calls) == 21
    # the batch path saw them: plain, with their bodies' lengths
    seen = {head.split(b"\r\n")[0]: body for head, body in framing._PLAIN_REQUESTS.items()}
    assert seen[b"GET /a HTTP/1.1"] == 0
    assert seen[b"POST /p HTTP/1.1"] == 5
    assert seen[b"HEAD /h HTTP/1.1"] < 0  # its reply has no body: never in a batch


def test_pipelined_requests_get_their_replies_in_order(plain_proxy):
    requests = [
        ("GET", "/one", b""),
        ("HEAD", "/h", b""),
        ("GET", "/chunked", b""),
        ("POST", "/p", b"abc"),
        ("GET", "/empty", b""),
        ("GET", "/two", b""),
    ]
    wire = b"".join(
        b"%s %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
        % (method.encode(), path.encode(), len(body), body)
        if body
        else b"%s %s HTTP/1.1\r\nHost: x\r\n\r\n" % (method.encode(), path.encode())
        for method, path, body in requests
    )
    with socket.create_connection(plain_proxy.address, timeout=10) as sock:
        reader = _Kept(sock.makefile("rb"))
        for _ in range(3):
            sock.sendall(wire)
            got = []
            for method, _, _ in requests:
                reply = http.client.HTTPResponse(reader, method=method)  # type: ignore[arg-type]
                reply.begin()
                got.append((reply.status, reply.read()))
            assert got == [
                (200, b"hello /one"),
                (200, b""),
                (200, b"hello chunked world"),
                (201, b"created abc"),
                (204, b""),
                (200, b"hello /two"),
            ]


def post(sock: socket.socket, reader: _Kept, path: str, body: bytes) -> int:
    """A POST sent whole, in one segment (http.client sends the body apart)."""
    sock.sendall(
        b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
        % (path.encode(), len(body), body)
    )
    reply = http.client.HTTPResponse(reader, method="POST")  # type: ignore[arg-type]
    reply.begin()
    reply.read()
    return reply.status


def test_a_rule_added_live_applies_from_the_next_post(plain_proxy, http_backend):
    """The second POST gets the 503 and never reaches the backend: batching
    must not carry a request past the plan it was decided under."""
    with socket.create_connection(plain_proxy.address, timeout=10) as sock:
        reader = _Kept(sock.makefile("rb"))
        for _ in range(2):  # the second time its head is known: a batch
            assert post(sock, reader, "/pay/1", b"10") == 201
        plain_proxy.add_rule("error; status=503; match=POST /pay/*")
        assert post(sock, reader, "/pay/1", b"10") == 503
        assert post(sock, reader, "/pay/2", b"20") == 503
        plain_proxy.set_rules([])
        assert post(sock, reader, "/pay/3", b"30") == 201
    assert http_backend.posts() == ["/pay/1", "/pay/1", "/pay/3"]


def test_a_behavior_set_live_applies_from_the_next_request(plain_proxy, http_backend):
    with connect(plain_proxy) as client:
        for _ in range(2):
            assert ask(client, "GET", "/x")[0] == 200
        with plain_proxy.set_behavior("100:error", error__status=418):
            assert ask(client, "GET", "/x")[0] == 418
            assert ask(client, "HEAD", "/x")[0] == 418
        assert ask(client, "GET", "/x") == (200, b"hello /x", None)
    assert [path for _, path, _ in http_backend.calls] == ["/x"] * 3


def test_an_answer_after_batched_requests_waits_for_their_replies(plain_proxy, http_backend):
    """A POST relayed in a batch whose reply has not come back, then a rule:
    the proxy's own 503 to the next POST goes out after the 201, in order."""
    post = b"POST /pay/%d HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok"
    with socket.create_connection(plain_proxy.address, timeout=10) as sock:
        reader = _Kept(sock.makefile("rb"))
        sock.sendall(post % 0)  # known from now on
        first = http.client.HTTPResponse(reader, method="POST")  # type: ignore[arg-type]
        first.begin()
        assert (first.status, first.read()) == (201, b"created ok")
        sock.sendall(post % 1)
        plain_proxy.add_rule("error; status=503; match=POST /pay/2")
        sock.sendall(post % 2 + post % 3)
        got = []
        for _ in range(3):
            reply = http.client.HTTPResponse(reader, method="POST")  # type: ignore[arg-type]
            reply.begin()
            got.append((reply.status, reply.read()))
    assert got == [(201, b"created ok"), (503, b"injected by vaurien\n"), (201, b"created ok")]
    assert http_backend.posts() == ["/pay/0", "/pay/1", "/pay/3"]


def _holding_the_second_reply(release: threading.Event) -> Callable[[socket.socket], None]:
    """A backend answering each GET with ``hello PATH``; its second answer
    waits for ``release``."""

    def serve(conn: socket.socket) -> None:
        buf, served = b"", 0
        while data := conn.recv(65536):
            buf += data
            while b"\r\n\r\n" in buf:
                head, buf = buf.split(b"\r\n\r\n", 1)
                served += 1
                if served == 2:
                    release.wait(10)
                body = b"hello " + head.split(b" ")[1]
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    return serve


def test_a_batch_of_replies_then_the_proxys_own_answer_to_a_request_decided_meanwhile():
    """A plain request's reply comes back as a batch after a rule added live
    made the proxy answer the next request itself: that answer follows the
    batch, in order."""
    release = threading.Event()
    with (
        ScriptedServer(_holding_the_second_reply(release)) as server,
        Proxy(server.distant, "100:dummy", protocol="http", keep_records=False) as proxy,
        socket.create_connection(proxy.address, timeout=5) as sock,
    ):
        reader = _Kept(sock.makefile("rb"))

        def reply() -> tuple[int, bytes]:
            answer = http.client.HTTPResponse(reader, method="GET")  # type: ignore[arg-type]
            answer.begin()
            return answer.status, answer.read()

        sock.sendall(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reply() == (200, b"hello /one")
        sock.sendall(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")  # its head known: a batch
        rule = proxy.add_rule("error; status=503; match=GET /two")
        sock.sendall(b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: rule.matched == 1, message="the proxy decided GET /two")
        release.set()
        assert reply() == (200, b"hello /one")
        assert reply()[0] == 503
