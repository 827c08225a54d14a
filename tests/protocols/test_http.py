"""HTTP/1.1 framing, matching and error replies, without a socket.

The framers are checked event by event on hand-written messages, then by
properties: however the same bytes are split into feeds, the framed messages
are the same, and the bytes of the events are always exactly the bytes fed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_vaurien.errors import ConfigError
from pytest_vaurien.protocols import http, wire_protocol
from pytest_vaurien.protocols.base import (
    Batch,
    End,
    Event,
    Head,
    MessageInfo,
    Opaque,
    Part,
    Switched,
    WireProtocol,
)
from pytest_vaurien.protocols.http import (
    HTTP,
    MAX_HEAD,
    MAX_LINE,
    PROTOCOL,
    HttpRequestFramer,
    HttpResponseFramer,
    check_error_options,
    error_reply,
    parse_match,
    standard_reason,
)
from tests.protocols.http_traffic import CONNECTIONS, RECORDED


def feed(framer: HttpRequestFramer | HttpResponseFramer, *chunks: bytes) -> list[Event]:
    events: list[Event] = []
    for chunk in chunks:
        events += framer.feed(chunk)
    return events


def joined(events: Iterable[Event]) -> bytes:
    return b"".join(event.data for event in events)


def requests(*chunks: bytes) -> list[Event]:
    return feed(PROTOCOL.request_framer(), *chunks)


def info_of(event: Event) -> MessageInfo:
    assert isinstance(event, Head), event
    return event.info


def request_info(raw: bytes) -> MessageInfo:
    return info_of(requests(raw)[0])


def replies(expected: Sequence[bytes | MessageInfo], *chunks: bytes) -> list[Event]:
    """The events for ``chunks`` from a backend, answering the requests ``expected``."""
    framer = PROTOCOL.response_framer()
    for request in expected:
        framer.expect(request if isinstance(request, MessageInfo) else request_info(request))
    return feed(framer, *chunks)


def shape(events: Iterable[Event], reasons: bool = True) -> list[tuple[Any, ...]]:
    """What must not depend on how the bytes were split: each head, where each
    message ends, each switch; Part boundaries and End's share of the body may."""
    out: list[tuple[Any, ...]] = []
    offset = 0
    for event in events:
        if isinstance(event, Head):
            out.append(("head", offset, event.data, event.info, event.interim))
        elif isinstance(event, Switched):
            out.append(("switched", event.reason if reasons else ""))
        offset += len(event.data)
        if isinstance(event, End):
            out.append(("end", offset))
    return out


def split(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in pairwise(points) if b > a]


GET = b"GET /orders/7?full=1 HTTP/1.1\r\nHost: shop\r\nUser-Agent: t/1\r\nAccept: */*\r\n\r\n"
POST = b"POST /payments HTTP/1.1\r\nHost: shop\r\nContent-Length: 11\r\n\r\nhello world"
CHUNKED = (
    b"PUT /files/a HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
    b"5;name=value\r\nhello\r\n6 ; ext\r\n world\r\n0\r\nDigest: x\r\nExpires: 0\r\n\r\n"
)


# -- requests ---------------------------------------------------------------


def test_a_get_fed_whole_is_a_head_then_an_empty_end() -> None:
    events = requests(GET)
    assert events == [
        Head(
            GET,
            MessageInfo(
                "GET /orders/7",
                {
                    "method": "GET",
                    "target": "/orders/7?full=1",
                    "path": "/orders/7",
                    "query": "full=1",
                    "version": "HTTP/1.1",
                    "headers": (("host", "shop"), ("user-agent", "t/1"), ("accept", "*/*")),
                    "keep_alive": True,
                    "expects_continue": False,
                },
            ),
        ),
        End(b""),
    ]


def test_a_content_length_body_ends_with_its_last_bytes() -> None:
    head, body = POST.split(b"\r\n\r\n")
    assert requests(POST) == [Head(head + b"\r\n\r\n", request_info(POST)), End(body)]


def test_a_body_leaves_as_it_arrives() -> None:
    framer = PROTOCOL.request_framer()
    events = framer.feed(POST[:-6])
    assert [type(e) for e in events] == [Head, Part]
    assert events[1].data == b"hello"
    assert framer.feed(b" wor") == [Part(b" wor")]
    assert framer.feed(b"ld") == [End(b"ld")]


def test_a_chunked_body_with_extensions_and_trailers() -> None:
    events = requests(CHUNKED)
    assert [type(e) for e in events] == [Head, End]
    assert joined(events) == CHUNKED
    assert events[1].data.endswith(b"0\r\nDigest: x\r\nExpires: 0\r\n\r\n")


def test_a_chunked_body_fed_a_byte_at_a_time_ends_with_the_last_chunk_whole() -> None:
    events = requests(*(CHUNKED[i : i + 1] for i in range(len(CHUNKED))))
    assert joined(events) == CHUNKED
    assert shape(events) == shape(requests(CHUNKED))
    assert events[-1] == End(b"0\r\nDigest: x\r\nExpires: 0\r\n\r\n")
    assert all(isinstance(e, Part) for e in events[1:-1])


def test_pipelined_requests_in_one_feed() -> None:
    events = requests(GET + POST + CHUNKED + GET)
    assert [type(e).__name__ for e in events] == ["Head", "End"] * 4
    assert [e.info.summary for e in events if isinstance(e, Head)] == [
        "GET /orders/7",
        "POST /payments",
        "PUT /files/a",
        "GET /orders/7",
    ]
    assert joined(events) == GET + POST + CHUNKED + GET


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE", "OPTIONS", "TRACE", "POST"])
def test_a_request_without_length_has_no_body(method: str) -> None:
    raw = f"{method} /x HTTP/1.1\r\nHost: h\r\n\r\n".encode()
    assert requests(raw + GET)[:3] == [
        Head(raw, request_info(raw)),
        End(b""),
        Head(GET, request_info(GET)),
    ]


def test_content_length_zero_and_repeated_equal_lengths() -> None:
    zero = b"POST /a HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
    assert requests(zero)[1] == End(b"")
    same = b"POST /a HTTP/1.1\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\nabc"
    assert requests(same)[1] == End(b"abc")  # RFC 9110 section 8.6


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        ("1.1", None, True),
        ("1.1", "close", False),
        ("1.1", "Keep-Alive, Close", False),
        ("1.1", "keep-alive", True),
        ("1.0", None, False),
        ("1.0", "keep-alive", True),
        ("1.0", "Keep-Alive", True),
        ("1.0", "close", False),
    ],
)
def test_keep_alive(version: str, connection: str | None, keep_alive: bool) -> None:
    header = f"Connection: {connection}\r\n" if connection else ""
    raw = f"GET / HTTP/{version}\r\n{header}\r\n".encode()
    fields = request_info(raw).fields
    assert (fields["version"], fields["keep_alive"]) == (f"HTTP/{version}", keep_alive)


def test_expect_100_continue_gives_the_head_before_the_body() -> None:
    head = b"POST /up HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-Continue\r\n\r\n"
    framer = PROTOCOL.request_framer()
    events = framer.feed(head)
    assert events == [Head(head, request_info(head))]
    assert info_of(events[0]).fields["expects_continue"] is True
    assert framer.feed(b"data") == [End(b"data")]
    # RFC 9110 section 10.1.1: an HTTP/1.0 client cannot expect 100
    assert request_info(head.replace(b"1.1", b"1.0")).fields["expects_continue"] is False


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("/a/b?c=d&e", "/a/b", "c=d&e"),
        ("/", "/", ""),
        ("http://shop:8080/x/y?z=1", "/x/y", "z=1"),
        ("http://shop", "/", ""),
        ("https://shop?q", "/", "q"),
        ("http://shop/?", "/", ""),
        ("*", "*", ""),
    ],
)
def test_paths_and_queries(target: str, path: str, query: str) -> None:
    fields = request_info(f"OPTIONS {target} HTTP/1.1\r\n\r\n".encode()).fields
    assert (fields["target"], fields["path"], fields["query"]) == (target, path, query)


def test_bare_lf_heads_and_blank_lines_before_a_request() -> None:
    raw = b"\r\n\nGET /x HTTP/1.1\nHost: h\nX-A:  spaced \t\n\n"
    events = requests(raw)
    assert events[0].data == raw
    assert info_of(events[0]).fields["headers"] == (("host", "h"), ("x-a", "spaced"))
    assert events[1:] == [End(b"")]


def test_a_folded_header_line_is_unfolded_into_its_value() -> None:
    raw = b"GET / HTTP/1.1\r\nX-Long: a\r\n  b\r\n\tc\r\n\r\n"
    assert request_info(raw).fields["headers"] == (("x-long", "a b c"),)  # RFC 9112 section 5.2


WEBSOCKET = (
    b"GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def test_an_upgrade_request_is_a_message_then_the_stream_is_opaque() -> None:
    framer = PROTOCOL.request_framer()
    events = framer.feed(WEBSOCKET + b"\x81\x85frame")
    assert events == [
        Head(WEBSOCKET, request_info(WEBSOCKET)),
        End(b""),
        Switched("HTTP Upgrade"),
        Opaque(b"\x81\x85frame"),
    ]
    assert framer.feed(GET) == [Opaque(GET)]
    assert framer.feed(b"") == []


def test_an_upgrade_with_a_body_switches_after_the_body() -> None:
    raw = b"POST / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nContent-Length: 2\r\n\r\nhi"
    events = requests(raw[:-1], raw[-1:] + b"PRI")
    assert events[1:] == [Part(b"h"), End(b"i"), Switched("HTTP Upgrade"), Opaque(b"PRI")]
    assert requests(raw)[-2:] == [End(b"hi"), Switched("HTTP Upgrade")]


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",  # no Connection: upgrade
        b"GET / HTTP/1.0\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",  # RFC 9110 7.8
    ],
)
def test_an_upgrade_header_alone_switches_nothing(raw: bytes) -> None:
    assert [type(e) for e in requests(raw + GET)] == [Head, End, Head, End]


def test_connect_is_a_message_then_a_tunnel() -> None:
    raw = b"CONNECT shop:443 HTTP/1.1\r\nHost: shop:443\r\n\r\n"
    events = requests(raw + b"\x16\x03\x01tls")
    assert events == [
        Head(raw, request_info(raw)),
        End(b""),
        Switched("HTTP CONNECT"),
        Opaque(b"\x16\x03\x01tls"),
    ]
    assert info_of(events[0]).summary == "CONNECT shop:443"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "not an HTTP request line"),  # TLS
        (b"*1\r\n$4\r\nPING\r\n", "not an HTTP request line"),  # Redis
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "HTTP/2 connection preface"),
        (b"GET / HTTP/3.0\r\n\r\n", "unsupported version HTTP/3.0"),
        (b"GET /\r\n\r\n", "not an HTTP request line"),  # HTTP/0.9
        (b"GET  / HTTP/1.1\r\n\r\n", "not an HTTP request line"),
        (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", "malformed header line"),
        (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", "malformed header line"),
        (b"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n", "bare CR in the request head"),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            "conflicting Content-Length",
        ),
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "invalid Content-Length"),
        (b"POST / HTTP/1.1\r\nContent-Length: \r\n\r\n", "invalid Content-Length"),
        (b"POST / HTTP/1.1\r\nContent-Length: \xb2\r\n\r\n", "invalid Content-Length"),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "both Transfer-Encoding and Content-Length",
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "Transfer-Encoding without final chunked",
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "Transfer-Encoding without final chunked",
        ),
        (
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "Transfer-Encoding in HTTP/1.0",
        ),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd\r\n",
            "no CRLF after chunk data",
        ),
    ],
)
def test_what_cannot_be_framed_switches_with_no_byte_lost(raw: bytes, reason: str) -> None:
    framer = PROTOCOL.request_framer()
    events = framer.feed(GET + raw)
    assert events[:2] == requests(GET)
    assert [e for e in events if isinstance(e, Switched)] == [Switched(reason, events[-1].data)]
    assert joined(events) == GET + raw
    assert framer.feed(b"more") == [Opaque(b"more")]
    assert framer.feed(b"") == []


def test_a_foreign_protocol_is_let_through_at_its_first_bytes() -> None:
    assert requests(b"\x16\x03") == [Switched("not an HTTP request line", b"\x16\x03")]
    assert requests(b"GET /\x00") == [Switched("not an HTTP request line", b"GET /\x00")]
    framer = PROTOCOL.request_framer()
    assert framer.feed(b"GET /long-path") == []  # could still be a request
    assert framer.feed(b" HTTP/2.0\r\n") == [
        Switched("unsupported version HTTP/2.0", b"GET /long-path HTTP/2.0\r\n")
    ]


def test_a_head_over_64_kib_switches_with_everything_held() -> None:
    framer = PROTOCOL.request_framer()
    head = b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"a" * MAX_HEAD + b"\r\n\r\n"
    chunks = split(head, range(0, len(head), 1024))
    events = feed(framer, *chunks)
    assert events == [Switched("head over 64 KiB", head[: 65 * 1024])] + [
        Opaque(c) for c in chunks[65:]
    ]
    whole = requests(head)
    assert whole == [Switched("head over 64 KiB", head)]


def test_a_head_just_under_64_kib_is_framed() -> None:
    head = b"GET / HTTP/1.1\r\nX-Big: " + b"a" * (MAX_HEAD - 30) + b"\r\n\r\n"
    events = requests(*split(head, range(0, len(head), 7)))
    assert [type(e) for e in events] == [Head, End]


def test_blank_lines_and_chunk_lines_are_bounded() -> None:
    blank = b"\r\n" * (MAX_LINE // 2 + 1)
    assert requests(blank + GET) == [Switched("too many blank lines", blank + GET)]
    assert [type(e) for e in requests(b"\r\n" * 100 + GET)] == [Head, End]
    head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    long_line = b"5;" + b"x" * MAX_LINE
    events = requests(head + long_line)
    assert events == [
        Head(head, request_info(head)),
        Switched("chunk-size line too long", long_line),
    ]


def test_a_blank_line_after_a_body_goes_with_the_next_head() -> None:
    events = requests(POST + b"\r\n" + GET)
    assert events[2].data == b"\r\n" + GET
    assert info_of(events[2]) == request_info(GET)


class CountingSearch:
    """Stands for a compiled pattern and counts the bytes its searches cover."""

    def __init__(self, pattern: re.Pattern[bytes]) -> None:
        self.pattern = pattern
        self.scanned = 0

    def search(self, buf: bytes, pos: int = 0) -> re.Match[bytes] | None:
        self.scanned += len(buf) - pos
        return self.pattern.search(buf, pos)


def test_the_search_for_a_heads_end_resumes_where_it_stopped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counting = CountingSearch(http._HEAD_END)
    monkeypatch.setattr(http, "_HEAD_END", counting)
    head = b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 5000 + b"\r\n"
    trailers = b"0\r\n" + b"X-T: u\r\n" * 5000 + b"\r\n"
    body = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + trailers
    for data in (head, body):
        whole = requests(data)
        counting.scanned = 0
        events = requests(*(data[i : i + 1] for i in range(len(data))))
        assert shape(events) == shape(whole)
        assert counting.scanned <= 3 * len(data)  # each byte seen by at most 3 searches, not n/2


def test_a_client_closing_mid_request_leaves_no_byte_behind() -> None:
    assert requests(GET[:10], b"") == [Switched("client closed mid-request", GET[:10])]
    assert requests(POST[:-3], b"") == [
        Head(POST[:-11], request_info(POST)),
        Part(b"hello wo"),
        Switched("client closed mid-request"),
    ]
    events = requests(CHUNKED[:-5], b"")
    assert joined(events) == CHUNKED[:-5]
    assert events[-1] == Switched("client closed mid-request", b"0\r\nDigest: x\r\nExpires: ")
    assert requests(GET, b"") == requests(GET)
    framer = PROTOCOL.request_framer()
    assert feed(framer, b"", b"late") == [Opaque(b"late")]


def test_what_fields_say_is_remembered_apart_per_version_and_side() -> None:
    block = b"Transfer-Encoding: chunked\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n"
    for _ in range(2):  # the second time from the cache
        assert requests(b"GET / HTTP/1.0\r\n" + block)[0] == Switched(
            "Transfer-Encoding in HTTP/1.0", b"GET / HTTP/1.0\r\n" + block
        )
        assert [type(e) for e in requests(b"GET / HTTP/1.1\r\n" + block + b"0\r\n\r\n")] == [
            Head,
            End,
            Switched,
        ]
        reply = b"HTTP/1.1 200 OK\r\n" + block + b"0\r\n\r\n"
        assert [type(e) for e in replies([GET], reply)] == [Head, End]


def test_the_cache_of_fields_stays_bounded() -> None:
    for i in range(3 * http._CACHE_SIZE):
        requests(b"GET / HTTP/1.1\r\nX-N: %d\r\n\r\n" % i)
    assert 0 < len(http._CACHE) <= http._CACHE_SIZE
    big = b"GET / HTTP/1.1\r\nX-Big: " + b"a" * http._CACHE_BLOCK + b"\r\n\r\n"
    before = len(http._CACHE)
    assert [type(e) for e in requests(big)] == [Head, End]
    assert len(http._CACHE) == before  # too big to keep


def test_framers_are_fresh_and_the_protocol_is_registered() -> None:
    assert PROTOCOL.name == "http"
    assert wire_protocol("http") is PROTOCOL is HTTP
    wire: WireProtocol = PROTOCOL  # mypy checks the interface
    first, second = wire.request_framer(), wire.request_framer()
    assert first is not second
    first.feed(GET[:5])
    assert second.feed(GET) == requests(GET)


def test_the_module_loads_neither_gevent_nor_pytest() -> None:
    code = (
        "import sys, pytest_vaurien.protocols.http\n"
        "print(','.join(m for m in ('gevent', 'pytest', '_pytest') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


# -- replies ------------------------------------------------------------------


OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"


def test_a_reply_with_content_length() -> None:
    events = replies([GET], OK)
    assert events == [
        Head(
            OK[:-5],
            MessageInfo(
                "200",
                {
                    "status": 200,
                    "reason": "OK",
                    "version": "HTTP/1.1",
                    "headers": (("content-type", "text/plain"), ("content-length", "5")),
                    "keep_alive": True,
                    "unsolicited": False,
                },
            ),
        ),
        End(b"hello"),
    ]


def test_a_reply_to_head_has_no_body_whatever_its_length_says() -> None:
    head = b"HEAD /x HTTP/1.1\r\n\r\n"
    events = replies([head, GET], OK[:-5] + OK)
    assert [(type(e), e.data) for e in events] == [
        (Head, OK[:-5]),
        (End, b""),
        (Head, OK[:-5]),
        (End, b"hello"),
    ]


def test_interim_replies_precede_the_final_one_of_the_same_request() -> None:
    post = b"POST /up HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
    cont = b"HTTP/1.1 100 Continue\r\n\r\n"
    hints = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    framer = PROTOCOL.response_framer()
    framer.expect(request_info(post))
    framer.expect(request_info(b"HEAD / HTTP/1.1\r\n\r\n"))
    events = framer.feed(cont + hints + OK + OK[:-5])
    assert [(type(e).__name__, e.data, getattr(e, "interim", None)) for e in events] == [
        ("Head", cont, True),
        ("End", b"", None),
        ("Head", hints, True),
        ("End", b"", None),
        ("Head", OK[:-5], False),
        ("End", b"hello", None),
        ("Head", OK[:-5], False),  # the HEAD request's reply: no body
        ("End", b"", None),
    ]
    assert info_of(events[2]).fields["headers"] == (("link", "</style.css>; rel=preload"),)


def test_101_switches_after_its_head() -> None:
    switching = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    events = replies([WEBSOCKET], switching + b"\x81\x02hi", b"\x81\x02yo")
    assert events == [
        Head(switching, info_of(events[0])),
        End(b""),
        Switched("HTTP 101 Switching Protocols"),
        Opaque(b"\x81\x02hi"),
        Opaque(b"\x81\x02yo"),
    ]
    assert info_of(events[0]).summary == "101"


def test_a_2xx_to_connect_opens_a_tunnel_and_a_refusal_does_not() -> None:
    connect = b"CONNECT shop:443 HTTP/1.1\r\n\r\n"
    established = b"HTTP/1.1 200 Connection Established\r\n\r\n"
    assert replies([connect], established + b"\x16\x03") == [
        Head(established, info_of(replies([connect], established)[0])),
        End(b""),
        Switched("HTTP CONNECT"),
        Opaque(b"\x16\x03"),
    ]
    refused = b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 2\r\n\r\nno"
    assert [type(e) for e in replies([connect, GET], refused + OK)] == [Head, End, Head, End]


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified"])
def test_204_and_304_have_no_body(status: bytes) -> None:
    raw = b"HTTP/1.1 " + status + b"\r\nContent-Length: 10\r\nETag: x\r\n\r\n"
    assert [(type(e), e.data) for e in replies([GET, GET], raw + OK)] == [
        (Head, raw),
        (End, b""),
        (Head, OK[:-5]),
        (End, b"hello"),
    ]


def test_a_reply_without_length_ends_when_the_backend_closes() -> None:
    raw = b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n"
    framer = PROTOCOL.response_framer()
    framer.expect(request_info(GET))
    events = feed(framer, raw + b"<html>", b"</html>")
    assert events == [Head(raw, info_of(events[0])), Part(b"<html>"), Part(b"</html>")]
    assert info_of(events[0]).fields["keep_alive"] is False
    assert framer.feed(b"") == [End(b"")]
    assert framer.feed(b"") == []


def test_a_transfer_coding_other_than_chunked_reads_until_close() -> None:
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n\x1f\x8b"
    events = replies([GET], raw, b"")  # RFC 9112 section 6.3 rule 4
    assert [type(e) for e in events] == [Head, Part, End]
    assert info_of(events[0]).fields["keep_alive"] is False


def test_a_chunked_reply_split_anywhere() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n"
    )
    whole = replies([GET], raw)
    assert [type(e) for e in whole] == [Head, End]
    for size in (1, 2, 3, 5, 8):
        events = replies([GET], *split(raw, range(0, len(raw), size)))
        assert joined(events) == raw
        assert shape(events) == shape(whole)
        assert events[-1].data.endswith(b"0\r\n\r\n")


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [("1.1", "", True), ("1.1", "close", False), ("1.0", "", False), ("1.0", "keep-alive", True)],
)
def test_reply_keep_alive(version: str, connection: str, keep_alive: bool) -> None:
    header = f"Connection: {connection}\r\n" if connection else ""
    raw = f"HTTP/{version} 200 OK\r\n{header}Content-Length: 0\r\n\r\n".encode()
    assert info_of(replies([GET], raw)[0]).fields["keep_alive"] is keep_alive


def test_an_unsolicited_reply_is_framed_as_one_to_a_get() -> None:
    timeout = (
        b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 7\r\n\r\ntimeout"
    )
    framer = PROTOCOL.response_framer()
    events = feed(framer, timeout, b"")
    assert [type(e) for e in events] == [Head, End]
    assert info_of(events[0]).summary == "408"
    assert info_of(events[0]).fields["unsolicited"] is True
    assert info_of(events[0]).fields["keep_alive"] is False


def test_expect_may_come_while_the_reply_head_arrives() -> None:
    framer = PROTOCOL.response_framer()
    assert framer.feed(OK[:10]) == []
    framer.expect(request_info(b"HEAD / HTTP/1.1\r\n\r\n"))
    events = framer.feed(OK[10:-5])
    assert [type(e) for e in events] == [Head, End]
    assert info_of(events[0]).fields["unsolicited"] is False


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"garbage\r\n\r\n", "not an HTTP status line"),
        (b"-ERR redis\r\n", "not an HTTP status line"),
        (b"HTTP/2.0 200 OK\r\n\r\n", "unsupported version HTTP/2.0"),
        (b"HTTP/1.1 20 OK\r\n\r\n", "not an HTTP status line"),
        (b"HTTP/1.1 099 Low\r\n\r\n", "bad status code"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "invalid Content-Length"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "both Transfer-Encoding and Content-Length",
        ),
    ],
)
def test_a_backend_speaking_otherwise_switches_with_no_byte_lost(raw: bytes, reason: str) -> None:
    events = replies([GET, GET], OK + raw)
    assert [type(e) for e in events] == [Head, End, Switched]
    assert events[-1] == Switched(reason, raw)


def test_a_backend_speaking_otherwise_is_let_through_at_its_first_bytes() -> None:
    assert replies([GET], b"\x00\x01") == [Switched("not an HTTP status line", b"\x00\x01")]
    assert replies([GET], b"HTTP") == []
    assert replies([GET], b"HTTP/1.1 200") == []


def test_a_backend_closing_mid_reply_leaves_no_byte_behind() -> None:
    assert replies([GET], OK[:20], b"") == [Switched("backend closed mid-reply", OK[:20])]
    events = replies([GET], OK[:-2], b"")
    assert events[-1] == Switched("backend closed mid-reply")
    assert joined(events) == OK[:-2]


def test_a_reply_without_status_text() -> None:
    raw = b"HTTP/1.1 599\r\nContent-Length: 0\r\n\r\n"
    assert info_of(replies([GET], raw)[0]).fields["reason"] == ""


@pytest.mark.parametrize(("sent", "answered", "who"), CONNECTIONS, ids=[c[2] for c in CONNECTIONS])
def test_recorded_connections_frame_both_ways(sent: bytes, answered: bytes, who: str) -> None:
    client = requests(sent, b"")
    assert joined(client) == sent
    infos = [info_of(e) for e in client if isinstance(e, Head)]
    backend = replies(infos, answered, b"")
    assert joined(backend) == answered
    finals = [info_of(e) for e in backend if isinstance(e, Head) and not e.interim]
    assert len(finals) == len(infos)
    assert not any(info.fields["unsolicited"] for info in finals)
    switches = [e.reason for e in client + backend if isinstance(e, Switched)]
    # curl --http2 asks for h2c; the stdlib server declines with a plain 200
    assert switches == (["HTTP Upgrade"] if "--http2" in who else [])


# -- properties ---------------------------------------------------------------


def chunked(body: bytes, size: int, trailers: bytes = b"") -> bytes:
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    return (
        b"".join(b"%x;n=v\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n" + trailers + b"\r\n"
    )


#: (request, reply) pairs as real clients and servers write them; the reply
#: may start with interim 1xx responses.
EXCHANGES = [
    (GET, OK),
    (POST, b"HTTP/1.1 201 Created\r\nLocation: /p/1\r\nContent-Length: 0\r\n\r\n"),
    (CHUNKED, b"HTTP/1.1 204 No Content\r\n\r\n"),
    (
        b"HEAD /big HTTP/1.1\r\nHost: h\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 12345\r\n\r\n",
    ),
    (
        b"POST /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked(b"x" * 300, 70, b"Checksum: 1\r\n"),
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked(b"y" * 100, 33),
    ),
    (
        b"GET /n HTTP/1.1\nHost: h\n\n",
        b'HTTP/1.1 304 Not Modified\nETag: "1"\n\n',
    ),
    (
        b"DELETE /x?y=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found",
    ),
    *RECORDED,
]

UPGRADE = (
    WEBSOCKET,
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
)

conversations = st.tuples(
    st.lists(st.sampled_from(EXCHANGES), min_size=1, max_size=6),
    st.booleans(),  # end with an upgrade, then opaque bytes
    st.binary(max_size=20),
)
cut_points = st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=40)


def streams(conversation: tuple[list[tuple[bytes, bytes]], bool, bytes]) -> tuple[bytes, bytes]:
    exchanges, upgrade, after = conversation
    if upgrade:
        exchanges = [*exchanges, UPGRADE]
    client = b"".join(request for request, _ in exchanges)
    backend = b"".join(reply for _, reply in exchanges)
    return (client + after, backend + after) if upgrade else (client, backend)


def count(stream: bytes) -> int:
    """How many requests ``stream`` holds, framed on its own."""
    return sum(isinstance(e, Head) for e in requests(stream))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(conversation=conversations, cuts=cut_points)
def test_requests_split_anyhow_frame_the_same(conversation: Any, cuts: list[int]) -> None:
    client, _ = streams(conversation)
    whole = requests(client, b"")
    events = requests(*split(client, cuts), b"")
    assert joined(events) == client
    assert shape(events) == shape(whole)
    heads = [e for e in whole if isinstance(e, Head)]
    assert len(heads) == sum(count(request) for request, _ in conversation[0]) + conversation[1]
    assert not any(isinstance(e, Switched) and e.reason != "HTTP Upgrade" for e in whole)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(conversation=conversations, cuts=cut_points)
def test_replies_split_anyhow_frame_the_same(conversation: Any, cuts: list[int]) -> None:
    client, backend = streams(conversation)
    infos = [e.info for e in requests(client) if isinstance(e, Head)]
    whole = replies(infos, backend, b"")
    events = replies(infos, *split(backend, cuts), b"")
    assert joined(events) == backend
    assert shape(events) == shape(whole)
    finals = [e for e in whole if isinstance(e, Head) and not e.interim]
    assert len(finals) == len(infos)
    assert not any(isinstance(e, Switched) and not e.reason.startswith("HTTP 101") for e in whole)


def framing_holds(events: list[Event], data: bytes) -> None:
    assert joined(events) == data
    kinds = [type(e) for e in events]
    if Switched in kinds:  # nothing but opaque bytes after a switch
        assert set(kinds[kinds.index(Switched) + 1 :]) <= {Opaque}


prefixes = st.sampled_from(
    [b"", GET, POST[:50], CHUNKED[:90], OK, b"HTTP/1.1 200 OK\r\n", b"GET /"]
)


@settings(max_examples=500)
@given(prefix=prefixes, noise=st.binary(max_size=300), cuts=cut_points)
def test_random_bytes_never_raise_and_lose_nothing(
    prefix: bytes, noise: bytes, cuts: list[int]
) -> None:
    data = prefix + noise
    for make in (PROTOCOL.request_framer, PROTOCOL.response_framer):
        whole = feed(make(), data, b"")
        events = feed(make(), *split(data, cuts), b"")
        framing_holds(whole, data)
        framing_holds(events, data)
        # the messages framed before any switch do not depend on the split
        assert shape(events, reasons=False) == shape(whole, reasons=False)


@settings(max_examples=300)
@given(
    lines=st.lists(
        st.sampled_from(
            [
                b"GET / HTTP/1.1",
                b"Content-Length: 3",
                b"Transfer-Encoding: chunked",
                b"3",
                b"abc",
                b"0",
                b"",
                b"X: y",
            ]
        ),
        max_size=12,
    ),
    newline=st.sampled_from([b"\r\n", b"\n"]),
    cuts=cut_points,
)
def test_near_http_never_raises_and_loses_nothing(
    lines: list[bytes], newline: bytes, cuts: list[int]
) -> None:
    data = newline.join(lines)
    whole = feed(PROTOCOL.request_framer(), data, b"")
    events = feed(PROTOCOL.request_framer(), *split(data, cuts), b"")
    framing_holds(events, data)
    assert shape(events, reasons=False) == shape(whole, reasons=False)


# -- matching -----------------------------------------------------------------


def info(method: str = "GET", target: str = "/", **headers: str) -> MessageInfo:
    head = f"{method} {target} HTTP/1.1\r\n"
    head += "".join(f"{name.replace('_', '-')}: {value}\r\n" for name, value in headers.items())
    return request_info(head.encode() + b"\r\n")


@pytest.mark.parametrize(
    ("match", "message", "expected"),
    [
        ("POST /payments/*", info("POST", "/payments/7/refund"), True),
        ("POST /payments/*", info("POST", "/payments"), False),
        ("POST /payments/*", info("GET", "/payments/7"), False),
        ("post /payments/*", info("POST", "/payments/7"), True),
        ("/health", info("GET", "/health?verbose=1"), True),
        ("/health", info("GET", "/healthz"), False),
        ("GET|HEAD /x", info("HEAD", "/x"), True),
        ("GET|HEAD /x", info("PUT", "/x"), False),
        ("/items/?", info("GET", "/items/7"), True),
        ("/items/?", info("GET", "/items/77"), False),
        ("/v[12]/*", info("GET", "/v2/a"), True),
        ("/v[12]/*", info("GET", "/v3/a"), False),
        ("*", info("CONNECT", "shop:443"), True),
        ("GET /x", info("GET", "http://shop/x?y"), True),
        (None, info("PATCH", "/anything"), True),
        ({"method": ["PUT", "patch"]}, info("PATCH", "/a"), True),
        ({"method": "PUT"}, info("PATCH", "/a"), False),
        (
            {"path": "/a/*", "headers": {"Content-Type": "application/json*"}},
            info("POST", "/a/b", content_type="application/json; charset=utf-8"),
            True,
        ),
        (
            {"headers": {"content-type": "application/json*"}},
            info("POST", "/a", content_type="text/plain"),
            False,
        ),
        ({"headers": {"x-tenant": "*"}}, info("POST", "/a"), False),
        ({"headers": {"x-a": "1", "x-b": "2"}}, info("GET", "/", x_a="1", x_b="2"), True),
        ({"headers": {"x-a": "1", "x-b": "2"}}, info("GET", "/", x_a="1", x_b="3"), False),
        ({}, info(), True),
    ],
)
def test_matching(match: object, message: MessageInfo, expected: bool) -> None:
    assert parse_match(match, "rule pay")(message) is expected
    assert PROTOCOL.parse_match(match, "rule pay")(message) is expected


def test_a_header_matches_on_any_of_its_lines() -> None:
    request = request_info(
        b"GET / HTTP/1.1\r\nAccept: text/html\r\nAccept: application/json\r\n\r\n"
    )
    assert parse_match({"headers": {"accept": "application/*"}}, "r")(request)


FORMS = 'expected "METHOD PATH-GLOB" or "PATH-GLOB", e.g. "POST /payments/*", "GET|HEAD /health", "/health"'


def test_match_error_messages_name_the_piece_and_the_form() -> None:
    with pytest.raises(ConfigError) as error:
        parse_match("GET /a /b", "rule 'pay': match")
    assert str(error.value) == f"rule 'pay': match: 'GET /a /b' has 3 words; {FORMS}"
    with pytest.raises(ConfigError) as error:
        parse_match({"verb": "GET"}, "marker: rule 'x': match")
    assert (
        str(error.value)
        == "marker: rule 'x': match: unknown key(s) 'verb'; known: headers, method, path"
    )
    with pytest.raises(ConfigError) as error:
        parse_match("POST", "rule 'pay': match")
    assert str(error.value) == (
        f"rule 'pay': match: 'POST' has no path (a path starts with / or *); {FORMS}; "
        "every path of a method is POST *"
    )


@pytest.mark.parametrize(
    ("match", "piece"),
    [
        ("", "the string is empty"),
        ("   ", "the string is empty"),
        ("health", "'health' has no path"),
        ("G@T /x", "method 'G@T'"),
        ("GET| /x", "method ''"),
        ("GET x", "path 'x'"),
        (42, "42 is a int"),
        ({"path": 5}, "path 5"),
        ({"path": "x"}, "path 'x'"),
        ({"method": []}, "method []"),
        ({"method": ["GET", 1]}, "method ['GET', 1]"),
        ({"headers": {"bad name": "x"}}, "headers {'bad name': 'x'}"),
        ({"headers": {"x": 1}}, "headers {'x': 1}"),
        ({"headers": "x"}, "headers 'x'"),
    ],
)
def test_bad_matches(match: object, piece: str) -> None:
    with pytest.raises(ConfigError, match=r"^rule x: ") as error:
        parse_match(match, "rule x")
    assert piece in str(error.value)
    assert "expected" in str(error.value)


# -- error replies ------------------------------------------------------------


def test_the_default_error_reply() -> None:
    reply, summary = error_reply({}, request_info(GET))
    assert reply == (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 20\r\n\r\ninjected by vaurien\n"
    )
    assert summary == "503"
    assert PROTOCOL.error_reply({}, request_info(GET)) == (reply, summary)


def test_the_error_handlers_defaults_give_the_default_reply() -> None:
    handler_defaults = {"status": 503, "reason": "", "headers": "", "body": "injected by vaurien\n"}
    assert error_reply(handler_defaults, request_info(GET)) == error_reply({}, request_info(GET))


def test_an_error_reply_frames_as_a_reply_and_keeps_the_connection() -> None:
    options = {"status": 429, "headers": {"Retry-After": 5}, "body": "slow down"}
    reply, summary = error_reply(options, request_info(GET))
    events = replies([GET], reply)
    assert [type(e) for e in events] == [Head, End]
    assert events[1].data == b"slow down"
    fields = info_of(events[0]).fields
    assert (summary, fields["status"], fields["reason"], fields["keep_alive"]) == (
        "429",
        429,
        "Too Many Requests",
        True,
    )
    assert ("retry-after", "5") in fields["headers"]


def test_connection_close_only_when_the_client_asked() -> None:
    close = request_info(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert b"\r\nConnection: close\r\n" in error_reply({}, close)[0]
    assert b"Connection" not in error_reply({}, request_info(GET))[0]
    assert (
        b"\r\nConnection: close\r\n" in error_reply({}, request_info(b"GET / HTTP/1.0\r\n\r\n"))[0]
    )
    kept = request_info(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert b"\r\nConnection: keep-alive\r\n" in error_reply({}, kept)[0]
    given_close = error_reply({"headers": "Connection: close"}, request_info(GET))[0]
    assert given_close.count(b"Connection") == 1


def test_a_reply_to_head_has_the_length_but_no_body() -> None:
    reply, _ = error_reply(
        {"status": 500, "body": "boom"}, request_info(b"HEAD / HTTP/1.1\r\n\r\n")
    )
    assert reply.endswith(b"\r\nContent-Length: 4\r\n\r\n")


def test_headers_as_lines_and_lengths_computed() -> None:
    options = {
        "status": 599,
        "headers": "Retry-After: 120\r\nX-Why:  chaos \n\nContent-Length: 999\nTransfer-Encoding: chunked",
        "body": b"\x00\x01",
    }
    reply, summary = error_reply(options, request_info(GET))
    assert (
        reply
        == b"HTTP/1.1 599 \r\nRetry-After: 120\r\nX-Why: chaos\r\nContent-Length: 2\r\n\r\n\x00\x01"
    )
    assert summary == "599"


@pytest.mark.parametrize("status", [204, 304, 100])
def test_a_status_without_content_gets_no_length_and_no_body(status: int) -> None:
    reply, _ = error_reply({"status": status}, request_info(GET))
    assert reply == f"HTTP/1.1 {status} {standard_reason(status)}\r\n\r\n".encode()


def test_reason_and_text_body() -> None:
    reply, _ = error_reply({"status": "502", "reason": "Nope", "body": "é"}, request_info(GET))
    assert reply.startswith(b"HTTP/1.1 502 Nope\r\n")
    assert reply.endswith(b"Content-Length: 2\r\n\r\n\xc3\xa9")


def test_standard_reasons() -> None:
    assert (standard_reason(404), standard_reason(418), standard_reason(599)) == (
        "Not Found",
        "I'm a Teapot",
        "",
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"status": 99},
            "rule r: status=99 is not an HTTP status; expected a number from 100 to 599",
        ),
        (
            {"status": 600},
            "rule r: status=600 is not an HTTP status; expected a number from 100 to 599",
        ),
        (
            {"status": True},
            "rule r: status=True is not an HTTP status; expected a number from 100 to 599",
        ),
        (
            {"status": "5o3"},
            "rule r: status='5o3' is not an HTTP status; expected a number from 100 to 599",
        ),
        (
            {"headers": "Retry-After 5"},
            "rule r: headers line 'Retry-After 5' has no colon; expected 'Name: value' lines, e.g. 'Retry-After: 5'",
        ),
        (
            {"headers": {"X-A": "1\r\nSet-Cookie: x"}},
            "rule r: header X-A='1\\r\\nSet-Cookie: x' has a control character",
        ),
        (
            {"headers": "X-A: 1\rSet-Cookie: x"},
            "rule r: header X-A='1\\rSet-Cookie: x' has a control character",
        ),
        (
            {"headers": {"Bad Name": "1"}},
            "rule r: header name 'Bad Name' is not a field name (RFC 9110)",
        ),
        ({"headers": {"X-A": None}}, "rule r: header X-A=None: expected text or a number"),
        (
            {"headers": ["X-A: 1"]},
            "rule r: headers=['X-A: 1']: expected a dict or 'Name: value' lines, e.g. {'Retry-After': '5'}",
        ),
        ({"reason": "a\nb"}, "rule r: reason='a\\nb': expected one line of text"),
        ({"body": 5}, "rule r: body=5: expected text or bytes"),
    ],
)
def test_bad_error_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        check_error_options(options, "rule r")
    assert str(error.value) == message
    with pytest.raises(ConfigError):
        error_reply(options, request_info(GET))


def test_good_error_options_pass_the_check() -> None:
    check_error_options(
        {"status": 429, "headers": {"Retry-After": 1}, "body": b"", "after": True}, "rule r"
    )
    PROTOCOL.check_error_options({}, "rule r")


# -- heads parsed once: what the cache must not change ------------------------


def test_the_same_reply_head_after_head_and_after_get() -> None:
    """One reply head, remembered, still frames by the method it answers: no
    body after HEAD, its Content-Length after GET, and again after HEAD."""
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n"
    framer = HttpResponseFramer()
    for method, body in (("HEAD", b""), ("GET", b"abc"), ("HEAD", b""), ("GET", b"abc")):
        framer.expect(MessageInfo(f"{method} /", {"method": method}))
        events = framer.feed(reply + body)
        assert [type(event) for event in events] == [Head, End]
        assert events[1].data == body
        assert events[0].info.fields["unsolicited"] is False
    assert framer.feed(reply + b"xyz")[0].info.fields["unsolicited"] is True


def test_a_remembered_interim_reply_leaves_its_request_waiting() -> None:
    framer = HttpResponseFramer()
    framer.expect(MessageInfo("POST /", {"method": "POST"}))
    framer.expect(MessageInfo("POST /", {"method": "POST"}))
    stream = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"
    for _ in range(2):
        heads = [event for event in framer.feed(stream) if isinstance(event, Head)]
        assert [event.interim for event in heads] == [True, False]
    assert framer.feed(b"HTTP/1.1 204 No Content\r\n\r\n")[0].info.fields["unsolicited"] is True


def test_an_upgrade_request_switches_every_time_it_comes() -> None:
    head = b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
    for _ in range(2):
        framer = HttpRequestFramer()
        events = framer.feed(head + b"frames")
        assert [type(event) for event in events] == [Head, End, Switched, Opaque]


# -- batches: whole plain messages at once ------------------------------------


def batching_requests() -> HttpRequestFramer:
    framer = HttpRequestFramer()
    framer.batch = True
    return framer


def forget_plain_heads() -> None:
    for cache in (http._PLAIN_REQUESTS, http._PLAIN_REPLIES):
        cache.clear()
    for whole in (http._WHOLE_REQUESTS, http._WHOLE_REPLIES):
        whole.clear()


def messages(events: Iterable[Event]) -> list[tuple[int, int, Head]]:
    """Each whole message of a framing without batches: where it starts and
    ends, and its head."""
    out: list[tuple[int, int, Head]] = []
    offset, start, head = 0, 0, None
    for event in events:
        if isinstance(event, Head):
            start, head = offset, event
        offset += len(event.data)
        if isinstance(event, End) and head is not None:
            out.append((start, offset, head))
            head = None
    return out


def unbatched(events: Iterable[Event], general: list[Event]) -> list[tuple[Any, ...]]:
    """The :func:`shape` of ``events``, each batch standing for the messages of
    the one-by-one framing ``general`` it covers (it must start and end with
    them), checked to be plain: not interim, not HEAD, no 100-continue, no end
    of the connection."""
    whole = messages(general)
    starts = {start: index for index, (start, _, _) in enumerate(whole)}
    out: list[tuple[Any, ...]] = []
    offset = 0
    for event in events:
        if isinstance(event, Batch):
            assert event.count > 0
            first = starts[offset]  # a batch starts where a message starts
            covered = whole[first : first + event.count]
            assert len(covered) == event.count
            assert covered[-1][1] == offset + len(event.data)  # and ends where its last ends
            for start, end, head in covered:
                fields = head.info.fields
                assert not head.interim
                if "method" in fields:
                    assert fields["method"] not in ("HEAD", "CONNECT")
                    assert fields["keep_alive"]
                    assert not fields["expects_continue"]
                out += [("head", start, head.data, head.info, head.interim), ("end", end)]
        else:
            for kind, *rest in shape([event]):  # shape counts from 0: move it here
                out.append(
                    (kind, *rest) if kind == "switched" else (kind, offset + rest[0], *rest[1:])
                )
        offset += len(event.data)
    return out


#: Exchanges a pooled client makes again and again: what batches are for.
PLAIN = [
    (
        b"GET /item/1 HTTP/1.1\r\nHost: bench\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok",
    ),
    (POST, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
    (
        b"DELETE /item/1 HTTP/1.1\r\nHost: bench\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"z" * 40, 16),
    ),
]
NOISE = [b"", b"\x16\x03\x01\x02\x00", b"GET /half", b"HTTP/1.1 200 OK\r\nX: y", b"\x00\xff" * 8]

#: Pipelines of plain and other exchanges, perhaps an upgrade among them (the
#: rest is then opaque), perhaps bytes that are no HTTP at the end.
pipelines = st.tuples(
    st.lists(st.sampled_from(PLAIN * 3 + EXCHANGES), min_size=1, max_size=10),
    st.integers(min_value=-1, max_value=10),  # where the upgrade goes (-1: none)
    st.sampled_from(NOISE),
)


def pipeline_streams(pipeline: tuple[list[tuple[bytes, bytes]], int, bytes]) -> tuple[bytes, bytes]:
    exchanges, upgrade, noise = pipeline
    if upgrade >= 0:
        exchanges = [*exchanges[:upgrade], UPGRADE, *exchanges[upgrade:]]
    client = b"".join(request for request, _ in exchanges) + noise
    backend = b"".join(reply for _, reply in exchanges) + noise
    return client, backend


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(pipeline=pipelines, cuts=cut_points, cold=st.booleans())
def test_batched_requests_frame_as_one_by_one(pipeline: Any, cuts: list[int], cold: bool) -> None:
    client, _ = pipeline_streams(pipeline)
    if cold:
        forget_plain_heads()
    general = requests(client, b"")
    events = feed(batching_requests(), *split(client, cuts), b"")
    framing_holds(events, client)
    assert unbatched(events, general) == shape(general)
    # the same chunks again: those that were whole plain runs are known whole
    assert feed(batching_requests(), *split(client, cuts), b"") == events
    if not cold and client.startswith(PLAIN[0][0]):  # a plain head seen before: in a batch
        assert isinstance(feed(batching_requests(), client)[0], Batch)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    pipeline=pipelines,
    cuts=cut_points,
    limits=st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=5),
    cold=st.booleans(),
)
def test_batched_replies_frame_as_one_by_one(
    pipeline: Any, cuts: list[int], limits: list[int], cold: bool
) -> None:
    client, backend = pipeline_streams(pipeline)
    if cold:
        forget_plain_heads()
    infos = [event.info for event in requests(client) if isinstance(event, Head)]
    general = replies(infos, backend, b"")
    runs = []
    for _ in range(2):  # the second time, the chunks that were whole plain runs are known
        framer = HttpResponseFramer()
        for event in batching_requests().feed(client):  # what the engine tells the framer
            if isinstance(event, Batch):
                framer.expect_plain(event.count)
            elif isinstance(event, Head):
                framer.expect(event.info)
        events: list[Event] = []
        for index, chunk in enumerate([*split(backend, cuts), b""]):
            framer.batch_limit = limit = limits[index % len(limits)]
            got = framer.feed(chunk)
            finals = 0  # a batch holds only replies among the feed's first `limit` final ones
            for event in got:
                if isinstance(event, Batch):
                    finals += event.count
                    assert finals <= limit
                elif isinstance(event, Head) and not event.interim:
                    finals += 1
            events += got
        framing_holds(events, backend)
        assert unbatched(events, general) == shape(general)
        runs.append(events)
    assert runs[0] == runs[1]


@pytest.mark.parametrize(("sent", "answered", "who"), CONNECTIONS)
def test_recorded_connections_frame_the_same_in_batches(
    sent: bytes, answered: bytes, who: str
) -> None:
    for _ in range(2):  # heads unknown, then known
        general = requests(sent, b"")
        events = feed(batching_requests(), sent, b"")
        assert unbatched(events, general) == shape(general)
        infos = [event.info for event in general if isinstance(event, Head)]
        framer = HttpResponseFramer()
        for event in events:
            if isinstance(event, Batch):
                framer.expect_plain(event.count)
            elif isinstance(event, Head):
                framer.expect(event.info)
        framer.batch_limit = len(infos)
        batched = feed(framer, answered, b"")
        assert unbatched(batched, replies(infos, answered, b"")) == shape(
            replies(infos, answered, b"")
        )


GET_ITEM, OK_ITEM = PLAIN[0]


def test_plain_requests_fed_whole_leave_in_one_batch() -> None:
    framer = batching_requests()
    framer.feed(GET_ITEM)  # learnt
    assert framer.feed(GET_ITEM) == [Batch(GET_ITEM, 1)]
    pipeline = GET_ITEM + POST + PLAIN[2][0] + GET_ITEM
    assert framer.feed(pipeline) == [Batch(pipeline, 4)]
    framer.batch = False  # a rule came, or records are read: one by one again
    assert [type(event) for event in framer.feed(GET_ITEM)] == [Head, End]


@pytest.mark.parametrize(
    "request_",
    [
        b"HEAD /item/1 HTTP/1.1\r\nHost: bench\r\n\r\n",
        b"POST /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: h\r\n\r\n",
        b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n",
        WEBSOCKET,
        # a bare LF ends the head before the first CRLF CRLF
        b"GET /a HTTP/1.1\r\nHost: h\n\r\nGET /b HTTP/1.1\r\n\r\n",
    ],
)
def test_what_a_batch_never_takes(request_: bytes) -> None:
    framer = batching_requests()
    for _ in range(2):  # unknown, then known
        general = requests(GET_ITEM + request_)
        events = framer.feed(GET_ITEM + request_)
        assert events[0] == Batch(GET_ITEM, 1)
        assert events[1] == general[2]  # the head after the plain one: by itself
        assert unbatched(events, general) == shape(general)
        if isinstance(events[-1], (Switched, Opaque)):
            break


def test_a_body_not_all_there_ends_the_batch_before_its_request() -> None:
    framer = batching_requests()
    framer.feed(POST)
    events = framer.feed(GET_ITEM + POST[:-3])
    assert events == [Batch(GET_ITEM, 1), Head(POST[:-11], request_info(POST)), Part(b"hello wo")]
    assert framer.feed(POST[-3:] + GET_ITEM) == [End(b"rld"), Batch(GET_ITEM, 1)]


def test_a_reply_to_head_is_framed_without_body_between_batches() -> None:
    head = b"HEAD /item/1 HTTP/1.1\r\nHost: bench\r\n\r\n"
    head_reply = OK_ITEM[:-2]  # its Content-Length says 2, and no body follows
    replies([GET_ITEM], OK_ITEM)  # learnt
    framer = HttpResponseFramer()
    framer.expect_plain(1)
    framer.expect(request_info(head))
    framer.expect_plain(1)
    framer.batch_limit = 3
    events = framer.feed(OK_ITEM + head_reply + OK_ITEM)
    assert [type(event) for event in events] == [Batch, Head, End, Batch]
    assert events[0] == Batch(OK_ITEM, 1)
    assert events[1].data == head_reply
    assert events[2] == End(b"")
    assert events[3] == Batch(OK_ITEM, 1)


def test_interim_and_bodiless_replies_to_batched_requests() -> None:
    framer = HttpResponseFramer()
    no_content = b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n"  # 204: no body whatever
    not_modified = b'HTTP/1.1 304 Not Modified\r\nETag: "1"\r\n\r\n'
    early = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    stream = early + OK_ITEM + no_content + not_modified + early + OK_ITEM
    for _ in range(2):
        framer.expect_plain(4)
        framer.batch_limit = 4
        events = framer.feed(stream)
        assert joined(events) == stream
        heads = [event for event in events if isinstance(event, Head)]
        assert all(head.interim for head in heads[2:])  # the final ones once known: batches
        assert (
            sum(event.count for event in events if isinstance(event, Batch))
            + sum(not head.interim for head in heads)
            == 4
        )


def test_the_batch_limit_counts_replies_framed_one_by_one() -> None:
    """The engine's limit is how many of the next final replies answer its
    plain run: one framed by its head and end counts too, so that a batch
    never takes a reply owed to an exchange behind the run."""
    chunked_reply = PLAIN[2][1]
    replies([GET_ITEM], chunked_reply)  # learnt
    replies([GET_ITEM], OK_ITEM)
    framer = HttpResponseFramer()
    framer.expect_plain(1)  # the engine's run: a batched request, then one by itself
    framer.expect(request_info(GET_ITEM))
    framer.expect_plain(1)  # after an exchange the proxy answered itself, say
    framer.batch_limit = 2
    events = framer.feed(chunked_reply + OK_ITEM + OK_ITEM)
    assert events[0] == Batch(chunked_reply, 1)
    assert [type(event) for event in events] == [Batch, Head, End, Head, End]


def test_a_chunked_reply_with_trailers_is_framed_one_by_one() -> None:
    reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(
        b"ab", 1, b"X: 1\r\n"
    )
    framer = HttpResponseFramer()
    for _ in range(2):
        framer.expect_plain(2)
        framer.batch_limit = 2
        events = framer.feed(reply + OK_ITEM)
        assert [type(event) for event in events][:2] == [Head, End]
        assert joined(events) == reply + OK_ITEM


def test_a_chunk_known_not_to_start_a_batch_is_framed_as_before() -> None:
    head = b"HEAD /item/1 HTTP/1.1\r\nHost: bench\r\n\r\n"
    post_head = POST[: POST.index(b"\r\n\r\n") + 4]
    framer = batching_requests()
    for _ in range(3):  # unknown, then known: no batch starts it
        assert framer.feed(head) == requests(head)
        assert framer.feed(post_head) == requests(post_head)  # its body is still to come
        assert framer.feed(POST[len(post_head) :]) == [End(b"hello world")]
    assert http._WHOLE_REQUESTS[head] == http._WHOLE_REQUESTS[post_head] == http._NO_RUN


def test_a_reply_framed_alone_for_its_queue_is_not_known_as_no_batch() -> None:
    """Whether a reply may be in a batch depends on what it answers too: a
    reply framed by itself because it answers a request framed by itself is
    still batched when it answers a batched request."""
    forget_plain_heads()
    framer = HttpResponseFramer()
    framer.expect(request_info(GET_ITEM))
    framer.batch_limit = 1
    assert [type(event) for event in framer.feed(OK_ITEM)] == [Head, End]
    framer.expect_plain(1)
    framer.batch_limit = 1
    assert framer.feed(OK_ITEM) == [Batch(OK_ITEM, 1)]


def test_what_batches_remember_stays_bounded() -> None:
    framer = batching_requests()
    for i in range(3 * http._CACHE_SIZE):
        assert framer.feed(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i)[0].count == 1
    assert 0 < len(http._PLAIN_REQUESTS) <= http._CACHE_SIZE
    assert 0 < len(http._WHOLE_REQUESTS) <= http._CACHE_SIZE
    pipeline = GET_ITEM * (http._WHOLE_MAX // len(GET_ITEM) + 1)  # over the size kept whole
    assert framer.feed(pipeline) == [Batch(pipeline, pipeline.count(b"GET"))]
    assert pipeline not in http._WHOLE_REQUESTS
