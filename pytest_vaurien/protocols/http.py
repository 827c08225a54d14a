"""HTTP/1.1 framing (RFC 9112): where each request and reply starts and ends.

Sans-IO, as h11 is: bytes in, events out, no socket. Unlike h11 the framers
never rebuild a message: every event carries the original bytes, so the proxy
forwards exactly what it was sent. They parse only what framing and matching
need (the start line, the header fields, the body's length); whatever they
cannot frame safely drops the connection to plain relay (:class:`Switched`).

Work per feed is linear in the bytes fed: the search for the end of a head
resumes where the last feed stopped, bodies are counted, not scanned, and a
head that arrives whole is never copied into a buffer first. What a block of
header fields says is cached: a client sends the same fields again and again.

When the engine allows it (``batch`` on the request framer, ``batch_limit``
on the response framer: the plan relays every request untouched and no one
reads the exchange records), whole messages whose heads are plain - saying
nothing but how long the body is - leave as one :class:`Batch` per run
instead of a head and an end each: a dictionary look-up per message (a head
is parsed once, the first time its bytes are seen), no event.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from pytest_vaurien.protocols.base import (
    Batch,
    End,
    Event,
    Framed,
    Head,
    MessageInfo,
    Opaque,
    Part,
    Switched,
    WireProtocol,
    frame_held,
)
from pytest_vaurien.protocols.http_match import (
    check_error_options,
    error_reply,
    parse_match,
    standard_reason,
)

__all__ = [
    "HTTP",
    "MAX_HEAD",
    "MAX_LINE",
    "PROTOCOL",
    "HttpRequestFramer",
    "HttpResponseFramer",
    "check_error_options",
    "error_reply",
    "parse_match",
    "standard_reason",
]

#: The longest head (start line and fields) or trailer section framed; longer
#: ones switch the connection to plain relay rather than buffer without end.
MAX_HEAD = 64 * 1024
#: The longest chunk-size line, or run of blank lines before a message.
MAX_LINE = 4096

# States of a framer. _NONE is not a state: "this message has no body".
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS, _UNTIL_CLOSE, _OPAQUE = range(8)
_NONE = -1

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"  # RFC 9110 section 5.6.2
_NAME = re.compile(_TOKEN).fullmatch
# A field line, its value without surrounding whitespace (RFC 9112 section 5)
_FIELD = re.compile(rf"^({_TOKEN}):[ \t]*((?:[^\r\n]*[^\r\n \t])?)[ \t]*\r?$", re.M).findall
_HEAD_END = re.compile(rb"\n\r?\n")  # bare LF tolerated, as h11 does (RFC 9112 section 2.2)
_TEXT = re.compile(rb"[^\r\n]")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}").fullmatch
_REQUEST_LINE = re.compile(rf"({_TOKEN}) ([^\x00-\x20\x7f]+) HTTP/([0-9])\.([0-9])").fullmatch
_STATUS_LINE = re.compile(
    r"HTTP/([0-9])\.([0-9]) ([0-9]{3})(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?"
).fullmatch
# What the first bytes of a request line can be, so that a client speaking
# something else (TLS, HTTP/2, Redis) is let through at once, not after 64 KiB.
_REQUEST_START = re.compile(
    rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]*(?: [^\x00-\x20\x7f]*(?: H?T?T?P?(?:/[0-9.]*)?)?)?\r?"
).fullmatch
_SPECIAL = frozenset({"connection", "content-length", "expect", "transfer-encoding", "upgrade"})
_END = End()

_Parsed = tuple[MessageInfo, bool, int, int]  # info, interim, body state, length
# A head's fields: (name, value) pairs, Connection's tokens, how the body is
# delimited (or why it cannot be), an Upgrade to switch to, Expect: 100-continue
_Facts = tuple[tuple[tuple[str, str], ...], frozenset[str], tuple[int, int] | str, bool, bool]
_CACHE: dict[tuple[str, bool, bool], _Facts | str] = {}
#: Whole heads parsed, by their bytes (replies: and the method they answer).
_REQUESTS: dict[bytes, _Parsed] = {}
_REPLIES: dict[tuple[bytes, str | None], _Parsed] = {}
_CACHE_SIZE = 256  # field blocks remembered, each at most _CACHE_BLOCK characters
_CACHE_BLOCK = 2048
#: What a whole head (with its final blank line) says for a batch: the
#: length of the body that follows, _CHUNKED, or _NOT_PLAIN (a head that
#: switches, waits for 100 Continue, ends the connection, answers or is a
#: HEAD, an interim reply, a body delimited by the close).
_PLAIN_REQUESTS: dict[bytes, int] = {}
_PLAIN_REPLIES: dict[bytes, int] = {}
_CHUNKED, _NOT_PLAIN = -2, -1
_PLAIN_HEAD = _CACHE_BLOCK + 4  # the longest head a batch takes
#: Whole chunks (up to _WHOLE_MAX bytes) that were a run of whole plain
#: messages, and their batch: a client polling sends the same bytes again and
#: again, and the answer often repeats too.
_WHOLE_REQUESTS: dict[bytes, Batch] = {}
_WHOLE_REPLIES: dict[bytes, Batch] = {}
_WHOLE_MAX = 1024
#: What such a cache holds for a chunk whose first message is not a whole
#: plain one (its bytes alone say so): no batch is tried at its start again.
_NO_RUN = Batch(b"", 0)
_BLANK = b"\r\n\r\n"


class _Framer:
    """What requests and replies share: heads, bodies, the bytes held back.

    Only an incomplete head, chunk-size line or trailer section is held back
    (at most :data:`MAX_HEAD` bytes); body bytes leave as soon as they arrive.
    """

    __slots__ = ("_after", "_batching", "_left", "_pending", "_scan", "_state", "_tstart")

    _eof_reason = "closed mid-message"
    #: Whole chunks of plain messages seen in a batch, and the batch.
    _whole: ClassVar[dict[bytes, Batch]] = {}

    def __init__(self) -> None:
        self._pending = bytearray()
        self._state = _HEAD
        self._left = 0  # body or chunk bytes still to come
        self._scan = 0  # where the search for a blank line resumes, from the held bytes' start
        self._tstart = 0  # where the trailer section starts, from the held bytes' start
        self._after: str | None = None  # switch once the current message ends
        #: Plain messages may leave in a :class:`Batch` (requests: True; replies:
        #: how many more may). Set by the engine, chunk by chunk.
        self._batching: int = 0

    def feed(self, data: bytes) -> list[Event]:
        """Events for ``data``; ``b""`` is the peer's EOF. Never raises."""
        if self._batching and self._state == _HEAD and data and not self._pending:
            return self._fresh(data)
        return self._framed(data)

    def _fresh(self, data: bytes) -> list[Event]:
        """A chunk with nothing held before it, while batches may form (the
        common chunk: whole plain messages), not known whole before."""
        small = len(data) <= _WHOLE_MAX and type(data) is bytes
        if self._may_batch():
            end, count = self._plain(data, 0, len(data))
            if count:
                if end == len(data):
                    batch = Batch(data, count)
                    if small:
                        _keep(self._whole, data, batch)
                    return [batch]
                events: list[Event] = [Batch(data[:end], count)]
                events += self._framed(data[end:], tried=True)  # where the run stopped
                return events
            if small:  # its bytes say no batch starts it (the queue and limit allowed one)
                _keep(self._whole, data, _NO_RUN)
        return self._framed(data, tried=True)

    def _framed(self, data: bytes, tried: bool = False) -> list[Event]:
        """Events for ``data``, message by message but for the batches that
        form after the first message (``tried``: none starts the chunk)."""
        if tried:
            # _run's first step is then the search for the head's end, from
            # byte 1: no head ends at byte 0 (a blank line there is skipped)
            self._scan = 1
        if self._state == _OPAQUE:
            return [Opaque(bytes(data))] if data else []
        if not data:
            return self._eof()
        events, self._pending = frame_held(self._pending, data, self._run)
        return events

    def _eof(self) -> list[Event]:
        rest = bytes(self._pending)
        state, self._state, self._pending = self._state, _OPAQUE, bytearray()
        if state == _UNTIL_CLOSE:  # RFC 9112 section 6.3 rule 8: the close ends the body
            return [End(rest)]
        if state == _HEAD and not rest:
            return []
        return [Switched(self._eof_reason, rest)]

    def _fail(self, reason: str, buf: bytes | bytearray, mark: int, events: list[Event]) -> int:
        events.append(Switched(reason, bytes(buf[mark:])))
        self._state = _OPAQUE
        return len(buf)

    def _switch(self, buf: bytes | bytearray, pos: int, events: list[Event]) -> int:
        events.append(Switched(self._after or ""))
        if pos < len(buf):
            events.append(Opaque(bytes(buf[pos:])))
        self._state = _OPAQUE
        return len(buf)

    def _run(self, buf: bytes | bytearray, events: list[Event]) -> int:
        """Frame ``buf`` (held bytes, then new ones); returns how many were emitted."""
        n = len(buf)
        mark = pos = 0  # first byte not emitted; first byte not parsed
        hold, tstart, tscan = 0, self._tstart, self._scan  # only meaningful in _TRAILERS
        state = self._state
        while True:
            if state == _HEAD:
                if pos >= n:
                    break
                if self._batching and not self._scan:  # (a head half searched is not plain)
                    end, count = self._plain(buf, pos, n)
                    if count:
                        events.append(Batch(bytes(buf[pos:end]), count))
                        mark = pos = end
                        continue
                start = pos
                if buf[start] in b"\r\n":  # RFC 9112 section 2.2: blank lines before a message
                    text = _TEXT.search(buf, start, start + MAX_LINE + 1)
                    start = text.start() if text else min(n, start + MAX_LINE + 1)
                    if start - mark > MAX_LINE:
                        return self._fail("too many blank lines", buf, mark, events)
                found = _HEAD_END.search(buf, max(start, mark + self._scan))
                if found is None:
                    if n - mark > MAX_HEAD:
                        return self._fail(f"head over {MAX_HEAD // 1024} KiB", buf, mark, events)
                    problem = self._start_problem(bytes(buf[start : start + 64]))
                    if problem:
                        return self._fail(problem, buf, mark, events)
                    self._scan = max(n - 2, start) - mark
                    break
                end = found.end()
                if end - mark > MAX_HEAD:
                    return self._fail(f"head over {MAX_HEAD // 1024} KiB", buf, mark, events)
                parsed = self._head(bytes(buf[start : found.start()]))
                if isinstance(parsed, str):
                    return self._fail(parsed, buf, mark, events)
                info, interim, state, self._left = parsed
                events.append(Head(bytes(buf[mark:end]), info, interim))
                mark = pos = end
                self._scan = 0
                if state == _NONE:
                    events.append(_END)
                    if self._after:
                        return self._switch(buf, pos, events)
                    state = _HEAD
            elif state in (_LENGTH, _CHUNK_DATA):
                left = self._left
                if n - pos < left:
                    self._left = left - (n - pos)
                    pos = n
                    break
                pos += left
                if state == _CHUNK_DATA:
                    state = _CHUNK_CRLF
                    continue
                events.append(End(bytes(buf[mark:pos])))
                mark = pos
                if self._after:
                    return self._switch(buf, pos, events)
                state = _HEAD
            elif state == _CHUNK_SIZE:  # RFC 9112 section 7.1
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    if n - pos > MAX_LINE:
                        return self._fail("chunk-size line too long", buf, mark, events)
                    break
                size = buf[pos:nl].partition(b";")[0].strip(b" \t\r")  # section 7.1.1: extensions
                if not _HEX(size):
                    return self._fail("bad chunk size", buf, mark, events)
                if int(size, 16):
                    self._left = int(size, 16)
                    state = _CHUNK_DATA
                else:  # the last chunk: hold it back with the trailers, to end the message whole
                    hold, tstart = pos, nl + 1
                    tscan = tstart
                    state = _TRAILERS
                pos = nl + 1
            elif state == _CHUNK_CRLF:
                if buf.startswith(b"\r\n", pos):
                    pos += 2
                elif buf.startswith(b"\n", pos):
                    pos += 1
                elif n - pos >= 2 or (pos < n and buf[pos] != 13):
                    return self._fail("no CRLF after chunk data", buf, mark, events)
                else:
                    break
                state = _CHUNK_SIZE
            elif state == _TRAILERS:  # RFC 9112 section 7.1.2
                if buf.startswith(b"\r\n", tstart):
                    end = tstart + 2
                elif buf.startswith(b"\n", tstart):
                    end = tstart + 1
                else:
                    found = _HEAD_END.search(buf, max(tscan, tstart))
                    if found is None:
                        if n - hold > MAX_HEAD:
                            return self._fail("trailers over 64 KiB", buf, mark, events)
                        self._tstart, self._scan = tstart - hold, max(n - 2, tstart) - hold
                        pos = n
                        break
                    end = found.end()
                events.append(End(bytes(buf[mark:end])))
                mark = pos = end
                self._scan = 0
                if self._after:
                    return self._switch(buf, pos, events)
                state = _HEAD
            else:  # _UNTIL_CLOSE
                pos = n
                break
        self._state = state
        if state != _HEAD:
            upto = hold if state == _TRAILERS else pos
            if upto > mark:
                events.append(Part(bytes(buf[mark:upto])))
                mark = upto
        return mark

    def _plain(self, buf: bytes | bytearray, pos: int, n: int) -> tuple[int, int]:
        """Where the run of whole plain messages from ``pos`` ends, and how many."""
        raise NotImplementedError

    def _may_batch(self) -> bool:
        """Whether the next message may be in a batch, whatever its bytes."""
        return True

    def _start_problem(self, first: bytes) -> str | None:
        """Why the first bytes of an incomplete head cannot start a message."""
        raise NotImplementedError

    def _head(self, raw: bytes) -> _Parsed | str:
        """The parsed head (its bytes without the final blank line), or the problem."""
        raise NotImplementedError

    def _parse_once(
        self,
        cache: dict[Any, _Parsed],
        key: Any,
        raw: bytes,
        parse: Callable[..., tuple[_Parsed, str | None] | str],
        *args: Any,
    ) -> _Parsed | str:
        """A head not in ``cache`` yet, parsed, and kept under ``key`` unless
        it switches the stream (``after``, this framer's from then on)."""
        parsed = parse(raw.decode("latin-1").removesuffix("\r"), *args)
        if isinstance(parsed, str):
            return parsed
        head, after = parsed
        if after is None:
            _remember(cache, key, head)
        else:
            self._after = after
        return head


class HttpRequestFramer(_Framer):
    """Cuts a client's stream into requests (RFC 9112 sections 3, 6).

    With :attr:`batch` set (by the engine, chunk by chunk), a run of whole
    plain requests leaves as one :class:`Batch`: a ``GET``, ``DELETE``,
    ``POST`` ... whose head says only how long its body is (none,
    ``Content-Length``, chunked), and whose body is all there. Not
    ``HEAD`` (its reply has no body: the response framer must know it),
    ``CONNECT``, an Upgrade, ``Expect: 100-continue``, nor a request after
    which the connection ends: those are framed one by one, as always.
    """

    __slots__ = ()

    _eof_reason = "client closed mid-request"
    _whole = _WHOLE_REQUESTS

    def feed(self, data: bytes) -> list[Event]:
        """Events for ``data``; ``b""`` is the client's EOF. Never raises."""
        if (
            self._batching
            and self._state == _HEAD
            and not self._pending
            and len(data) <= _WHOLE_MAX
            and type(data) is bytes
        ):
            batch = _WHOLE_REQUESTS.get(data)
            if batch is not None:  # the same requests again (the same bytes): one look-up
                return [batch] if batch.count else self._framed(data, tried=True)
            return self._fresh(data)
        return super().feed(data)

    #: Whether plain requests may leave in a :class:`Batch` (set by the engine,
    #: chunk by chunk): the ``_batching`` slot itself, under the engine's name
    #: (a slot's descriptor, as fast as the slot, unlike a property).
    batch: bool = _Framer.__dict__["_batching"]

    def _plain(self, buf: bytes | bytearray, pos: int, n: int) -> tuple[int, int]:
        return _plain_run(_PLAIN_REQUESTS, _plain_request, buf, pos, n, n)

    def _start_problem(self, first: bytes) -> str | None:
        nl = first.find(b"\n")
        if nl < 0:
            return None if _REQUEST_START(first) else "not an HTTP request line"
        line = _request_line(first[:nl].decode("latin-1").removesuffix("\r"))
        return line if isinstance(line, str) else None

    def _head(self, raw: bytes) -> _Parsed | str:
        """Parsed once per distinct head: a client sends the same head again
        and again (a poll, a health check, a benchmark), and what it says
        depends on its bytes alone."""
        return _REQUESTS.get(raw) or self._parse_once(_REQUESTS, raw, raw, _parse_request)


class HttpResponseFramer(_Framer):
    """Cuts a backend's stream into replies, told by :meth:`expect` what each answers.

    Bytes that answer no expected request (an unsolicited ``408`` before the
    backend closes) are framed as a reply to a ``GET``, with the field
    ``unsolicited`` true; they never raise and never get lost.

    With :attr:`batch_limit` set (by the engine, chunk by chunk), up to that
    many whole final replies to requests that left in a :class:`Batch`
    (:meth:`expect_plain`) leave as :class:`Batch` events, when their heads
    are plain: not interim, not a switch, a body delimited by
    ``Content-Length`` (or none: ``204``, ``304``) or chunked and all there.
    A reply framed one by one to the engine's run counts against the limit
    too: the limit is how many of the next final replies answer that run.
    """

    __slots__ = ("_expected",)

    _eof_reason = "backend closed mid-reply"
    _whole = _WHOLE_REPLIES

    def __init__(self) -> None:
        super().__init__()
        #: What the next final replies answer, in order: a request's info, or
        #: how many requests in a row left in a :class:`Batch` (plain, not HEAD).
        self._expected: deque[MessageInfo | int] = deque()

    #: How many of the next final replies may leave in :class:`Batch` events
    #: (set by the engine, chunk by chunk): the ``_batching`` slot, as ``batch``.
    batch_limit: int = _Framer.__dict__["_batching"]

    def feed(self, data: bytes) -> list[Event]:
        """Events for ``data``; ``b""`` is the backend's EOF. Never raises."""
        limit = self._batching
        if (
            limit
            and self._state == _HEAD
            and not self._pending
            and len(data) <= _WHOLE_MAX
            and type(data) is bytes
        ):
            batch = _WHOLE_REPLIES.get(data)
            if batch is not None:  # the same replies again, to as many plain requests
                count = batch.count
                if not count:
                    return self._framed(data, tried=True)
                expected = self._expected
                head = expected[0] if expected else None
                if type(head) is int and head >= count and limit >= count:
                    self._batching = limit - count
                    if head == count:
                        expected.popleft()
                    else:
                        expected[0] = head - count
                    return [batch]
        return super().feed(data)

    def _may_batch(self) -> bool:
        expected = self._expected
        return bool(expected) and type(expected[0]) is int

    def expect(self, request: MessageInfo) -> None:
        """The next request the client sent, which the next final reply answers."""
        self._expected.append(request)

    def expect_plain(self, count: int) -> None:
        """The next ``count`` requests left in a :class:`Batch`: plain, not ``HEAD``."""
        expected = self._expected
        if expected and type(expected[-1]) is int:
            expected[-1] += count
        else:
            expected.append(count)

    def _plain(self, buf: bytes | bytearray, pos: int, n: int) -> tuple[int, int]:
        expected = self._expected
        head = expected[0] if expected else None
        if type(head) is not int:
            return pos, 0
        end, count = _plain_run(
            _PLAIN_REPLIES, _plain_reply, buf, pos, n, min(self._batching, head)
        )
        if count:
            self._batching -= count
            if head == count:
                expected.popleft()
            else:
                expected[0] = head - count
        return end, count

    def _start_problem(self, first: bytes) -> str | None:
        nl = first.find(b"\n")
        if nl < 0:
            return None if b"HTTP/".startswith(first[:5]) else "not an HTTP status line"
        line = first[:nl].decode("latin-1").removesuffix("\r")
        return None if _STATUS_LINE(line) else "not an HTTP status line"

    def _head(self, raw: bytes) -> _Parsed | str:
        """Parsed once per distinct head and method it answers (``HEAD`` and
        ``CONNECT`` change what follows), as requests are."""
        expected = self._expected
        request = expected[0] if expected else None
        if request is None:
            method = None
        elif isinstance(request, int):  # a batched request: not HEAD, not CONNECT
            method = "GET"
        else:
            method = request.fields.get("method", "GET")
        key = (raw, method)
        cached = _REPLIES.get(key) or self._parse_once(_REPLIES, key, raw, _parse_reply, method)
        if isinstance(cached, str):
            return cached
        if not cached[1] and request is not None:  # a final reply answers its request
            if self._batching:  # and counts against the batch limit (see the class)
                self._batching -= 1
            if isinstance(request, int) and request > 1:
                expected[0] = request - 1
            else:
                expected.popleft()
        return cached


def _parse_request(text: str) -> tuple[_Parsed, str | None] | str:
    """A request head (no final blank line): what it says and what it switches
    to once it ends (``CONNECT``, an Upgrade), or its problem."""
    first, _, block = text.partition("\n")
    line = _request_line(first.removesuffix("\r"))
    if isinstance(line, str):
        return line
    method, target, major, minor = line
    http10 = minor == "0"
    facts = _facts(block, http10, True)
    if isinstance(facts, str):
        return facts
    headers, connection, body, upgrade, expects_continue = facts
    after = None
    if method == "CONNECT":  # RFC 9110 section 9.3.6: no content; a tunnel follows
        state, length = _NONE, 0
        after = "HTTP CONNECT"
    elif isinstance(body, str):
        return body
    else:
        state, length = body
        if upgrade:
            after = "HTTP Upgrade"
    path, query = _split_target(target)
    info = MessageInfo(
        f"{method} {path}",
        {
            "method": method,
            "target": target,
            "path": path,
            "query": query,
            "version": f"HTTP/{major}.{minor}",
            "headers": headers,
            "keep_alive": "keep-alive" in connection if http10 else "close" not in connection,
            "expects_continue": expects_continue,
        },
    )
    return (info, False, state, length), after


def _parse_reply(text: str, method: str | None) -> tuple[_Parsed, str | None] | str:
    """A reply head (no final blank line) answering a ``method`` request
    (``None``: none is expected), what it switches to, or its problem."""
    first, _, block = text.partition("\n")
    line = _STATUS_LINE(first.removesuffix("\r"))
    if line is None:
        return "not an HTTP status line"
    major, minor, code, reason = line.groups()
    if major != "1":
        return f"unsupported version HTTP/{major}.{minor}"
    status = int(code)
    if status < 100:
        return "bad status code"
    http10 = minor == "0"
    facts = _facts(block, http10, False)
    if isinstance(facts, str):
        return facts
    headers, connection, body, _, _ = facts
    interim = status < 200 and status != 101  # RFC 9110 section 15.2: a final reply follows
    state, length = _NONE, 0  # RFC 9112 section 6.3 rules 1 and 2
    after = None
    if status == 101:
        after = "HTTP 101 Switching Protocols"
    elif method == "CONNECT" and 200 <= status < 300:
        after = "HTTP CONNECT"
    elif not (interim or method == "HEAD" or status in (204, 304)):
        if isinstance(body, str):
            return body
        state, length = body
    keep = "keep-alive" in connection if http10 else "close" not in connection
    info = MessageInfo(
        code,
        {
            "status": status,
            "reason": reason or "",
            "version": f"HTTP/{major}.{minor}",
            "headers": headers,
            "keep_alive": keep and state != _UNTIL_CLOSE,
            "unsolicited": method is None,
        },
    )
    return (info, interim, state, length), after


def _plain_run(
    cache: dict[bytes, int],
    learn: Callable[[bytes], int],
    buf: bytes | bytearray,
    pos: int,
    n: int,
    limit: int,
) -> tuple[int, int]:
    """Where the run of at most ``limit`` whole plain messages from ``pos``
    ends, and how many it holds.

    A head is plain when its bytes, final blank line included, are in
    ``cache`` with what follows (``learn`` works it out the first time). A
    cached head ends at its first blank line (it was cut there), so the
    first ``\\r\\n\\r\\n`` from ``pos`` ends the head exactly where the
    message-by-message framing would; a body is skipped by its length, a
    chunked one walked as that framing walks it. The search for a head is
    bounded: a head longer than a cached one cannot be plain.
    """
    count = 0
    find = buf.find
    while count < limit and pos < n:
        found = find(_BLANK, pos, pos + _PLAIN_HEAD)
        if found < 0:
            break
        end = found + 4
        head = bytes(buf[pos:end])
        body = cache.get(head)
        if body is None:
            body = learn(head)
            if len(cache) >= _CACHE_SIZE:
                cache.clear()
            cache[head] = body
        if body >= 0:
            end += body
            if end > n:
                break
        elif body == _CHUNKED:
            end = _whole_chunked(buf, end)
            if end < 0:
                break
        else:
            break
        pos = end
        count += 1
    return pos, count


def _whole_chunked(buf: bytes | bytearray, pos: int) -> int:
    """Where the chunked body from ``pos`` ends, if it is all in ``buf`` with
    no trailer field; else -1 (the body is framed step by step instead).

    The same steps as :meth:`_Framer._run` (RFC 9112 section 7.1)."""
    find = buf.find
    while True:
        nl = find(b"\n", pos, pos + MAX_LINE)
        if nl < 0:
            return -1
        size = buf[pos:nl].partition(b";")[0].strip(b" \t\r")
        if not _HEX(size):
            return -1
        left = int(size, 16)
        pos = nl + 1
        if not left:  # the last chunk: an empty trailer section ends the body
            if buf.startswith(b"\r\n", pos):
                return pos + 2
            if buf.startswith(b"\n", pos):
                return pos + 1
            return -1
        pos += left
        if buf.startswith(b"\r\n", pos):
            pos += 2
        elif buf.startswith(b"\n", pos):
            pos += 1
        else:  # (also when the chunk's data is not all there)
            return -1


def _plain_request(head: bytes) -> int:
    """What a whole request head says for a batch (see :data:`_PLAIN_REQUESTS`)."""
    parsed = _parse_head(head, _parse_request)
    if parsed is None:
        return _NOT_PLAIN
    (info, _, state, length), after = parsed
    fields = info.fields
    if (
        after is not None
        or fields["method"] == "HEAD"
        or fields["expects_continue"]
        or not fields["keep_alive"]
    ):
        return _NOT_PLAIN
    return _body_length(state, length)


def _plain_reply(head: bytes) -> int:
    """What a whole reply head says for a batch, as the answer to a ``GET``."""
    parsed = _parse_head(head, lambda text: _parse_reply(text, "GET"))
    if parsed is None:
        return _NOT_PLAIN
    (_, interim, state, length), after = parsed
    if after is not None or interim:
        return _NOT_PLAIN
    return _body_length(state, length)


def _parse_head(
    head: bytes, parse: Callable[[str], tuple[_Parsed, str | None] | str]
) -> tuple[_Parsed, str | None] | None:
    """``head`` parsed as the framers parse it, if it is one head that
    starts a message at once and ends at its first blank line."""
    found = _HEAD_END.search(head)
    if found is None or found.end() != len(head) or head[:1] in (b"\r", b"\n"):
        return None
    if len(head) > _PLAIN_HEAD:  # pragma: no cover - the search is bounded
        return None
    parsed = parse(head[: found.start()].decode("latin-1").removesuffix("\r"))
    return None if isinstance(parsed, str) else parsed


def _body_length(state: int, length: int) -> int:
    if state == _NONE:
        return 0
    if state == _LENGTH:
        return length
    if state == _CHUNK_SIZE:
        return _CHUNKED
    return _NOT_PLAIN


def _keep(whole: dict[bytes, Batch], data: bytes, batch: Batch) -> None:
    """Keep what a whole chunk was, in a bounded cache."""
    if len(whole) >= _CACHE_SIZE:
        whole.clear()
    whole[data] = batch


def _remember(cache: dict[Any, _Parsed], key: Any, parsed: _Parsed) -> None:
    """Keep a parsed head (a short one: a client's own big cookies are not worth it)."""
    if len(key if isinstance(key, bytes) else key[0]) <= _CACHE_BLOCK:
        if len(cache) >= _CACHE_SIZE:
            cache.clear()
        cache[key] = parsed


def _request_line(line: str) -> tuple[str, ...] | str:
    """Method, target, major and minor version of a request line, or the problem."""
    found = _REQUEST_LINE(line)
    if found is None:
        return "not an HTTP request line"
    method, _, major, minor = parts = found.groups()
    if major != "1":
        if method == "PRI" and major == "2":  # RFC 9113 section 3.4
            return "HTTP/2 connection preface"
        return f"unsupported version HTTP/{major}.{minor}"
    return parts


def _facts(block: str, http10: bool, request: bool) -> _Facts | str:
    """What a head's field block says, or its problem; cached, as a client
    sends the same fields again and again on a connection."""
    key = (block, http10, request)
    facts = _CACHE.get(key)
    if facts is None:
        facts = _read_fields(block, http10, request)
        if len(block) <= _CACHE_BLOCK:
            if len(_CACHE) >= _CACHE_SIZE:
                _CACHE.clear()
            _CACHE[key] = facts
    return facts


def _read_fields(block: str, http10: bool, request: bool) -> _Facts | str:
    found = _FIELD(block) if block else []
    if block and len(found) != block.count("\n") + 1:  # a field a line: else the odd head
        slow = _fields_slowly(block, "request" if request else "response")
        if isinstance(slow, str):
            return slow
        headers = slow
    else:
        headers = tuple([(name.lower(), value) for name, value in found])
    special: dict[str, list[str]] = {}
    for name, value in headers:
        if name in _SPECIAL:
            special.setdefault(name, []).append(value)
    connection = frozenset(
        token.strip(" \t").lower()
        for value in special.get("connection", ())
        for token in value.split(",")
    )
    return (
        headers,
        connection,
        _body(special, http10, request),
        # RFC 9110 section 7.8: Upgrade needs "Connection: upgrade"; ignored in HTTP/1.0
        "upgrade" in special and "upgrade" in connection and not http10,
        # RFC 9110 section 10.1.1: ignored in an HTTP/1.0 request
        not http10 and any(v.lower() == "100-continue" for v in special.get("expect", ())),
    )


def _fields_slowly(block: str, what: str) -> tuple[tuple[str, str], ...] | str:
    """The fields line by line, for the odd head: folded, or malformed."""
    if "\r" in block.replace("\r\n", ""):  # RFC 9112 section 2.2
        return f"bare CR in the {what} head"
    headers: list[tuple[str, str]] = []
    for line in block.replace("\r\n", "\n").split("\n"):
        name, colon, value = line.partition(":")
        if colon and _NAME(name):
            headers.append((name.lower(), value.strip(" \t")))
        elif line[:1] in (" ", "\t") and headers:  # RFC 9112 section 5.2: obs-fold is a space
            name, value = headers[-1]
            headers[-1] = (name, (value + " " + line.strip(" \t")).strip(" "))
        else:  # RFC 9112 section 5.1: no space before the colon either
            return "malformed header line"
    return tuple(headers)


def _body(special: Mapping[str, list[str]], http10: bool, request: bool) -> tuple[int, int] | str:
    """How the body is delimited (RFC 9112 section 6.3), or why it cannot be told."""
    te, cl = special.get("transfer-encoding"), special.get("content-length")
    if te is not None:
        if cl is not None:  # rule 3: a smuggling attempt; the backend may read it otherwise
            return "both Transfer-Encoding and Content-Length"
        if http10:  # section 6.1: faulty framing
            return "Transfer-Encoding in HTTP/1.0"
        codings = [c for c in (c.strip(" \t").lower() for v in te for c in v.split(",")) if c]
        if codings and codings[-1] == "chunked" and codings.count("chunked") == 1:
            return _CHUNK_SIZE, 0
        if request:  # rule 4: a request's length cannot be told
            return "Transfer-Encoding without final chunked"
        return _UNTIL_CLOSE, 0
    if cl is not None:  # RFC 9110 section 8.6: "42, 42" is one length
        values = {p.strip(" \t") for v in cl for p in v.split(",")} - {""}
        if not values or not all(v.isascii() and v.isdigit() for v in values):
            return "invalid Content-Length"
        if len({int(v) for v in values}) > 1:
            return "conflicting Content-Length"
        length = int(values.pop())
        return (_LENGTH, length) if length else (_NONE, 0)
    return (_NONE, 0) if request else (_UNTIL_CLOSE, 0)  # rules 6 and 8


def _split_target(target: str) -> tuple[str, str]:
    """Path and query of a request-target (RFC 9112 section 3.2).

    Absolute-form gives its path (``/`` when empty); authority-form
    (``CONNECT host:443``) and asterisk-form (``*``) are their own path.
    """
    if target[0] != "/":
        scheme = target.find("://")
        if scheme < 0:
            return target, ""
        rest = target[scheme + 3 :]
        slash, mark = rest.find("/"), rest.find("?")
        if slash < 0 or 0 <= mark < slash:
            return "/", rest[mark + 1 :] if mark >= 0 else ""
        target = rest[slash:]
    path, _, query = target.partition("?")
    return path, query


PROTOCOL = Framed(
    "http", HttpRequestFramer, HttpResponseFramer, parse_match, error_reply, check_error_options
)
#: The same object, typed as the interface (mypy checks that it conforms).
HTTP: WireProtocol = PROTOCOL
