"""Redis replies (RESP2 and RESP3): where each reply starts and ends.

Parsed with an explicit stack of open aggregates, so that nesting depth
costs no recursion, resuming where the last feed stopped (linear in the
bytes fed); a reply's head leaves as soon as its type is read, so a big
value is never held. What is not RESP drops the connection to plain relay.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from pytest_vaurien.protocols.base import (
    Batch,
    End,
    Event,
    Head,
    MessageInfo,
    Opaque,
    Part,
    Switched,
    frame_held,
)
from pytest_vaurien.protocols.redis_batch import count_run, replies

__all__ = ["MAX_LINE", "RedisResponseFramer"]

#: The longest reply line (a simple string, an error, a length).
MAX_LINE = 64 * 1024
_SIMPLE = frozenset(b"+-:_,#(")  # one line is the whole value
_BULK = frozenset(b"$!=")  # a length line, then that many bytes and CRLF
_AGGREGATE = frozenset(b"*~>%|")  # a count line, then that many values (twice for % and |)
_END = End()
_REPLIES: dict[tuple[bytes, bool], MessageInfo] = {}  # reply line -> its info (+OK, $5, :1)
_NO_FIELDS: dict[str, Any] = {}
_VALUE_START = frozenset(b"+-:_,#($*")  # what a reply redis_batch recognises starts with


class _Plain:
    """``count`` expected commands in a row that were batched: ordinary, one
    reply each, nothing to know of them (one entry, not ``count``)."""

    __slots__ = ("count",)

    def __init__(self, count: int) -> None:
        self.count = count

    def __repr__(self) -> str:
        return f"<{self.count} plain>"


class RedisResponseFramer:
    """Cuts a backend's stream into replies, one per expected command.

    A RESP3 push (``>``) at the top level answers no command (an
    invalidation, say): it is an interim ``Head`` the engine relays without
    ending the exchange, unless the command expected is a subscription,
    whose confirmation it is. Attributes (``|``) belong to the reply after them.

    With :attr:`batch_limit` set (by the engine, feed by feed), up to that
    many replies to batched commands (:meth:`expect_plain`) leave as
    :class:`Batch` events, each a run framed in one pass (:mod:`redis_batch`).
    """

    __slots__ = (
        "_bulk_end",
        "_expected",
        "_info",
        "_opaque",
        "_pending",
        "_pos",
        "_sent",
        "_stack",
        "batch_limit",
    )

    def __init__(self) -> None:
        #: How many of the next replies may leave in :class:`Batch` events.
        self.batch_limit = 0
        self._expected: deque[MessageInfo | _Plain] = deque()
        self._pending = bytearray()
        self._opaque = False
        self._pos = 0
        self._bulk_end = -1
        # Open aggregates: values still to come, times 2, plus 1 for an attribute.
        self._stack: list[int] = []
        self._info: MessageInfo | None = None  # the current reply's, once its type is read
        self._sent = False  # the current reply's Head has left

    def expect(self, request: MessageInfo) -> None:
        """The next command the backend will answer, in order."""
        self._expected.append(request)

    def expect_plain(self, count: int) -> None:
        """The next ``count`` commands were a :class:`Batch`: ordinary ones."""
        expected = self._expected
        if expected and isinstance(expected[-1], _Plain):
            expected[-1].count += count
        else:
            expected.append(_Plain(count))

    def _next_fields(self) -> Mapping[str, Any]:
        """The fields of the next expected command (none for a batched one)."""
        head = self._expected[0]
        return _NO_FIELDS if isinstance(head, _Plain) else head.fields

    def _pop_expected(self) -> Mapping[str, Any]:
        """Take the next expected command off the queue; its fields."""
        expected = self._expected
        head = expected[0]
        if isinstance(head, _Plain):
            head.count -= 1
            if not head.count:
                expected.popleft()
            return _NO_FIELDS
        expected.popleft()
        return head.fields

    def feed(self, data: bytes) -> list[Event]:
        """Events for ``data``; ``b""`` is the backend's EOF. Never raises."""
        if self._opaque:
            return [Opaque(bytes(data))] if data else []
        pending = self._pending
        if not data:
            self._opaque = True
            rest, self._pending = bytes(pending), bytearray()
            if rest or self._sent:
                return [Switched("backend closed mid-reply", rest)]
            return []
        events, self._pending = frame_held(pending, data, self._run)
        return events

    def _fail(self, reason: str, buf: bytes | bytearray, mark: int, events: list[Event]) -> int:
        events.append(Switched(reason, bytes(buf[mark:])))
        self._opaque = True
        return len(buf)

    def _run(self, buf: bytes | bytearray, events: list[Event]) -> int:
        n = len(buf)
        mark, pos = 0, self._pos
        stack, bulk_end, info = self._stack, self._bulk_end, self._info
        expected = self._expected
        first = True  # a feed's first batch: findall alone may do (count_run)
        while True:
            if bulk_end >= 0:
                if bulk_end > n:
                    pos = n
                    break
                pos, bulk_end = bulk_end, -1
            else:
                if pos >= n:
                    break
                if info is None and not stack and expected:
                    head = expected[0]
                    if isinstance(head, _Plain):
                        if self.batch_limit and buf[pos] in _VALUE_START:
                            # replies to batched commands: a run in one pass
                            span = replies()
                            end, count, found = count_run(span, buf, pos, first)
                            first = False
                            if count:
                                take = min(count, self.batch_limit, head.count)
                                if take < count:  # the batch ends after the first take
                                    if found is None:
                                        found = span.findall(buf, pos, end)
                                    end = pos + sum(map(len, found[:take]))

                                data = (
                                    buf
                                    if mark == 0 and end == n and isinstance(buf, bytes)
                                    else bytes(buf[mark:end])
                                )
                                events.append(Batch(data, take))
                                self.batch_limit -= take
                                head.count -= take
                                if not head.count:
                                    expected.popleft()
                                mark = pos = end
                                continue
                    elif "noreply" in head.fields:
                        # CLIENT REPLY OFF: no reply comes; what follows is not framed
                        reason = self._pop_expected()["switch"]
                        return self._fail(reason, buf, mark, events)
                nl = buf.find(b"\r\n", pos, pos + MAX_LINE)
                if nl < 0:
                    if n - pos >= MAX_LINE:
                        return self._fail("reply line too long", buf, mark, events)
                    break
                kind = buf[pos]
                if info is None and not stack and kind != 124:  # the reply's own type
                    info = self._reply_info(buf[pos:nl], kind == 62)
                if kind in _SIMPLE:
                    pos = nl + 2
                else:
                    size = buf[pos + 1 : nl]
                    pos = nl + 2
                    if not size.isdigit():
                        if size == b"-1" and kind in b"$*":  # RESP2 nulls
                            size = b"0"
                            kind = 43  # a value of its own, nothing follows
                        else:
                            return self._fail("not a RESP reply", buf, mark, events)
                    if kind in _BULK:
                        bulk_end = pos + int(size) + 2
                        continue
                    if kind in _AGGREGATE:
                        count = int(size) * (2 if kind in b"%|" else 1)
                        if count:
                            stack.append(count * 2 + (kind == 124))
                            continue
                        if kind == 124:
                            continue  # an empty attribute: the value is still to come
                    elif kind != 43:
                        return self._fail("not a RESP reply", buf, mark, events)
            # a value is complete: count it in its aggregates
            while stack:
                entry = stack[-1] - 2
                if entry >= 2:
                    stack[-1] = entry
                    break
                stack.pop()
                if entry & 1:  # an attribute ends: the value it annotates follows
                    break
            else:
                if info is None:  # a top-level attribute, done: its value follows
                    continue
                if self._sent:
                    events.append(End(bytes(buf[mark:pos])))
                    self._sent = False
                else:
                    events.append(Head(bytes(buf[mark:pos]), info, info.fields["push"]))
                    events.append(_END)
                mark = pos
                switch = info.fields.get("switch")
                info = None
                if switch:
                    events.append(Switched(switch))
                    if pos < n:
                        events.append(Opaque(bytes(buf[pos:])))
                    self._opaque = True
                    return n
        if info is not None and pos > mark:  # the reply continues in the next feeds
            if self._sent:
                events.append(Part(bytes(buf[mark:pos])))
            else:
                events.append(Head(bytes(buf[mark:pos]), info, info.fields["push"]))
                self._sent = True
            mark = pos
        self._info = info
        self._pos = pos - mark
        self._bulk_end = bulk_end - mark if bulk_end >= 0 else -1
        return mark

    def _reply_info(self, line: bytes | bytearray, push: bool) -> MessageInfo:
        """The info of the reply starting with ``line``; takes its command off the queue."""
        expected = self._expected
        switch = None
        if expected and (not push or "switch" in self._next_fields()):
            push = False
            switch = self._pop_expected().get("switch")
        if switch is None:
            key = (bytes(line), push)
            info = _REPLIES.get(key)
            if info is None:
                info = _make_reply_info(key[0], push, None)
                if len(line) <= 16:
                    if len(_REPLIES) >= 1024:
                        _REPLIES.clear()
                    _REPLIES[key] = info
            return info
        return _make_reply_info(bytes(line), push, switch)


def _make_reply_info(line: bytes, push: bool, switch: str | None) -> MessageInfo:
    text = line.decode("latin-1")
    summary = text.split(" ", 1)[0] if text[:1] == "-" else text
    fields: dict[str, Any] = {"type": text[:1], "push": push}
    if switch:
        fields["switch"] = switch
    return MessageInfo(summary[:40], fields)
