"""PostgreSQL replies: the response framer, and what both framers of a
connection share (the session, the held bytes, the switch to plain relay).

The response framer knows from each request which messages answer it (its
plan, ``_plan`` in the request's fields) and, as the server does, answers
nothing after an ErrorResponse until Sync.
"""

from __future__ import annotations

import struct
from collections import deque

from pytest_vaurien.protocols.base import (
    Batch,
    End,
    Event,
    Head,
    MessageInfo,
    Opaque,
    Part,
    SessionFramer,
)

__all__ = [
    "END",
    "HOLD_REPLY",
    "MAX_MESSAGE",
    "Framer",
    "PgResponseFramer",
    "Session",
    "cstring",
    "message_header",
]

MAX_MESSAGE = 0x3FFFFFFF  # the server's PQ_LARGE_MESSAGE_LIMIT
HOLD_REPLY = 64 * 1024  # reply bytes held at most while its summary is unknown
_SERVER_TYPES = frozenset(b"RKSZTDCENAI123tnsVGHWdcvc")
_COPY = frozenset(b"GHW")
_ASYNC = frozenset(b"NAS")
#: Ends carry no bytes here: one object for all (events are frozen).
END = End()
#: What a reply to a simple query is made of; ReadyForQuery ends it.
_SIMPLE = frozenset(b"TDCEINASZ")
_C, _E, _I, _Z, _t = b"CEIZt"
#: What replies to batched requests are framed of in one pass: a simple
#: query's, and the extended protocol's (ParseComplete, BindComplete,
#: CloseComplete, ParameterDescription, NoData, PortalSuspended...).
_PLAIN_REPLY = frozenset(b"123tnsTDCEINASZ")
#: What ends an Execute's reply.
_ROWS_END = frozenset(b"CIs")
#: A message's type and length, read in one call (both framers).
message_header = struct.Struct(">BI").unpack_from

# A plan: one letter per request message, for the reply the server owes it.
# Q: until ReadyForQuery; A: authentication (until the server waits or is
# ready); L: the one byte answering SSLRequest/GSSENCRequest; Y: Sync; P, B,
# C: ParseComplete, BindComplete, CloseComplete; S: Describe statement
# (ParameterDescription, then RowDescription or NoData); O: Describe portal;
# E: Execute (rows, then CommandComplete, EmptyQueryResponse or
# PortalSuspended). "" owes nothing (Flush, Terminate, a skipped request).


class Session:
    """What the two framers of one connection share."""

    __slots__ = ("batched", "status", "switched")

    def __init__(self) -> None:
        #: The last ReadyForQuery's transaction status: I, T or E.
        self.status = b"I"
        #: Why the connection is plain relay now (seen by either framer).
        self.switched: str | None = None
        #: The plans of the requests the request framer emitted in batches,
        #: which the engine has not yet said it expects (:meth:`PgResponseFramer.expect_plain`).
        self.batched: deque[str] = deque()


def cstring(body: bytes, start: int) -> tuple[str, int]:
    """The NUL-terminated string at ``start`` and where the next field starts."""
    end = body.find(b"\0", start)
    if end < 0:
        end = len(body)
    return body[start:end].decode("utf-8", "replace"), end + 1


#: The base of both PostgreSQL framers: held bytes, the shared switch to plain relay.
Framer = SessionFramer[Session]


class PgResponseFramer(Framer):
    """Cuts the server's stream into the replies the requests are owed.

    With :attr:`batch_limit` set (by the engine, feed by feed), up to that
    many whole replies to batched requests (simple queries, Execute groups,
    Syncs...) leave as :class:`Batch` events (replies to requests relayed
    untouched with no record: no one reads their summaries); a reply framed
    message by message (its start came in an earlier chunk) counts against
    the limit too, and the whole replies after it go in a batch again.
    """

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        #: How many of the next replies may leave in :class:`Batch` events.
        self.batch_limit = 0
        self._queue: deque[str] = deque()  # plans of the requests waiting for a reply
        self._plan: str | None = None  # the current reply's plan; None between replies
        self._step = 0
        self._held: list[bytes] = []  # the current reply's bytes, head not sent yet
        self._size = 0
        self._summary = ""
        self._sent = False  # the current reply's head went out
        self._parts: list[bytes] = []
        self._skipping = False  # after an ErrorResponse, until Sync's ReadyForQuery

    def expect(self, request: MessageInfo) -> None:
        plan = request.fields.get("_plan", "Q")
        self._queue.append(plan if isinstance(plan, str) else "Q")

    def expect_plain(self, count: int) -> None:
        """The next ``count`` requests came in a :class:`Batch`: their plans
        are the next ``count`` the request framer left in the session."""
        batched = self.session.batched
        if len(batched) == count:  # most often: the engine expects each batch as it comes
            self._queue.extend(batched)
            batched.clear()
        else:
            self._queue.extend([batched.popleft() for _ in range(count)])

    def feed(self, data: bytes) -> list[Event]:
        """Events for ``data``; ``b""`` is the server's EOF. Never raises."""
        if self._opaque:
            return [Opaque(bytes(data))] if data else []
        events: list[Event] = []
        if self.session.switched is not None:  # the client side switched (CancelRequest)
            self._switch(self.session.switched, bytes(self._buf) + bytes(data), events)
            return events
        buf = self._buf
        if data and not buf and self.batch_limit and self._plan is None:
            # replies to batched requests, whole: framed at once, no summary
            done = self._plain_replies(data, 0, events)
            if done:
                if done == len(data):
                    self._idle(events)
                    return events
                data = data[done:]
        self._idle(events)
        if not data:
            if self._plan is not None:
                self._end(events)
            if self._buf:
                self._switch("PostgreSQL: closed mid-message", bytes(self._buf), events)
            return events
        if not buf:  # replies to simple queries, whole: framed at once
            done = self._simple_replies(data, events)
            if done == len(data):
                return events
            data = data[done:]
        buf += data
        pos, n = 0, len(buf)
        while pos < n and not self._opaque:
            if self._plan is None and self._queue and self._queue[0] == "L":
                answer = buf[pos]
                if answer in b"NSG":
                    self._queue.popleft()
                    pos += 1
                    events += [Head(bytes([answer]), MessageInfo(chr(answer))), END]
                    if answer != ord("N"):
                        reason = "PostgreSQL TLS" if answer == ord("S") else "PostgreSQL GSS"
                        self._switch(reason, b"", events)
                        if pos < n:
                            events.append(Opaque(bytes(buf[pos:])))
                    continue
                self._queue[0] = "A"  # an ErrorResponse from an old server
            if n - pos < 5:
                break
            kind, length = message_header(buf, pos)
            if kind not in _SERVER_TYPES or not 4 <= length <= MAX_MESSAGE:
                self._flush_parts(events)
                self._switch(f"PostgreSQL: unknown message {chr(kind)!r}", bytes(buf[pos:]), events)
                break
            if n - pos <= length:
                break
            end = pos + 1 + length
            self._message(kind, bytes(buf[pos:end]), events)
            pos = end
            if self._opaque:
                if pos < n:  # COPY: the rest is not framed
                    events.append(Opaque(bytes(buf[pos:])))
            elif self.batch_limit and self._plan is None and pos < n:
                # a reply ended here (its start came in an earlier chunk):
                # the whole ones after it go at once again
                pos = self._plain_replies(buf, pos, events)
        if not self._opaque:
            del buf[:pos]
            self._flush_parts(events)
        return events

    def _simple_replies(self, data: bytes, events: list[Event]) -> int:
        """Frame the whole replies to simple queries at the start of ``data``
        in one pass, as :meth:`_message` would one message at a time (the
        same events: the head up to what decides the summary, the rest as a
        part, the end); returns where the first one not framed here starts.

        Only a reply of the messages a simple query gets (rows, a command
        tag, an error, notices), with its ReadyForQuery, and at most
        ``HOLD_REPLY`` bytes before its summary; anything else is left to
        the message-by-message path.
        """
        pos, n = 0, len(data)
        queue = self._queue
        while (
            self._plan is None
            and queue
            and queue[0] == "Q"
            and not self._skipping
            and not self._parts
            and not self._opaque
        ):
            at = pos
            summary: str | None = None
            head_end = 0
            while True:
                if n - at < 5:
                    return pos
                kind, length = message_header(data, at)
                if kind not in _SIMPLE or length < 4 or n - at <= length:
                    return pos
                end = at + 1 + length
                if kind == _Z:
                    break
                if summary is None:
                    if kind == _C:
                        summary, head_end = f"C {cstring(data[at:end], 5)[0]}", end
                    elif kind == _E:
                        summary, head_end = f"E {_sqlstate(data[at:end])}", end
                    elif kind == _I:
                        summary, head_end = "I", end
                    elif end - pos > HOLD_REPLY:
                        return pos  # a long reply: held and decided early, message by message
                at = end
            self.session.status = data[at + 5 : at + 6]
            queue.popleft()
            if self.batch_limit:  # one of the batched requests': no longer to come
                self.batch_limit -= 1
            if summary is None:
                events += (Head(data[pos:end], MessageInfo("Z")), END)
            else:
                events += (
                    Head(data[pos:head_end], MessageInfo(summary)),
                    Part(data[head_end:end]),
                    END,
                )
            pos = end
            self._idle(events)
        return pos

    def _plain_replies(self, data: bytes | bytearray, pos: int, events: list[Event]) -> int:
        """Up to :attr:`batch_limit` whole replies to batched requests from
        ``pos`` in ``data``, as one :class:`Batch`; returns where they end
        (``pos`` if none is whole). The replies :meth:`_message` would frame one
        message at a time, with no summary made: it is followed step by step
        (the plans), and so are the transaction state (each ReadyForQuery)
        and the skip after an ErrorResponse until Sync's ReadyForQuery.

        Only the messages of queries and of the extended protocol's replies
        (:data:`_PLAIN_REPLY`); a reply with anything else (COPY, a function
        call's) is left, from its first byte, to the message-by-message path.
        """
        n, start, count, limit = len(data), pos, 0, self.batch_limit
        queue = self._queue
        skipping = self._skipping
        status: bytes | bytearray = b""
        while count < limit and queue:
            plan = queue[0]
            if not plan or (skipping and plan != "Y"):  # owed nothing, or skipped
                queue.popleft()
                count += 1
                continue
            at, end = pos, -1
            if plan == "Q" or plan == "Y":  # a query's or a Sync's: until ReadyForQuery
                while n - at >= 5:
                    kind, length = message_header(data, at)
                    if kind not in _PLAIN_REPLY or length < 4 or n - at <= length:
                        break
                    if kind == _Z:
                        status, end = data[at + 5 : at + 6], at + 1 + length
                        skipping = False
                        break
                    at += 1 + length
            else:  # an Execute group's or a Parse's...: step by step (P, B, S, O, C, E)
                step, steps = 0, len(plan)
                letter = plan[0]
                while n - at >= 5:
                    kind, length = message_header(data, at)
                    if kind not in _PLAIN_REPLY or length < 4 or n - at <= length:
                        break
                    after = at + 1 + length
                    if kind == _E:  # the server skips until Sync
                        skipping, end = True, after
                        break
                    if kind == _Z:
                        status, end = data[at + 5 : at + 6], after
                        skipping = False
                        break
                    at = after
                    if (
                        kind in _ASYNC
                        or (letter == "E" and kind not in _ROWS_END)
                        or (letter == "S" and kind == _t)
                    ):
                        continue  # notices, rows, a ParameterDescription: more to come
                    step += 1
                    if step == steps:
                        end = after
                        break
                    letter = plan[step]
            if end < 0:  # not whole
                break
            pos = end
            count += 1
            queue.popleft()
        self._skipping = skipping
        if status:
            self.session.status = bytes(status)
        if count:
            self.batch_limit -= count
            if start == 0 and pos == n and type(data) is bytes:
                events.append(Batch(data, count))
            else:
                events.append(Batch(bytes(data[start:pos]), count))
        return pos

    def _idle(self, events: list[Event]) -> None:
        """Between replies, the requests owed nothing get their empty reply."""
        queue = self._queue
        while (
            self._plan is None
            and queue
            and (queue[0] == "" or (self._skipping and queue[0] != "Y"))
        ):
            queue.popleft()
            if self.batch_limit:  # one of the batched requests': no longer to come
                self.batch_limit -= 1
            events += [Head(b"", MessageInfo("skipped" if self._skipping else "")), END]

    def _message(self, kind: int, message: bytes, events: list[Event]) -> None:
        if kind == ord("Z"):
            self.session.status = message[5:6]
        if self._plan is None:
            if not self._queue:  # owed to no request: relayed as it comes
                events += [Head(message, MessageInfo(chr(kind)), interim=True), END]
                return
            self._plan, self._step = self._queue.popleft(), 0
            self._held, self._size, self._summary, self._sent = [], 0, "", False
        if self._sent:
            self._parts.append(message)
        else:
            self._held.append(message)
            self._size += len(message)
        step = self._plan[self._step] if self._step < len(self._plan) else "Q"
        if kind == ord("C"):
            self._decide(f"C {cstring(message, 5)[0]}", events)
        elif kind in b"EIsZ":
            self._decide(f"E {_sqlstate(message)}" if kind == ord("E") else chr(kind), events)
        done = False
        if kind == ord("E"):
            if step not in "QY":
                done = True
                self._skipping = step != "A"
        elif kind == ord("Z"):
            done = True
            self._skipping = False
        elif kind in _COPY and step in "QE":
            self._decide("COPY", events)
            self._end(events)
            self._switch("PostgreSQL COPY", b"", events)
            return
        elif kind in _ASYNC or step in "QY":
            pass
        elif step == "A":
            code = int.from_bytes(message[5:9], "big")
            done = kind == ord("R") and code not in (0, 12)
            if done:
                self._decide(f"R {code}", events)
        elif (step == "E" and kind not in b"CIs") or (step == "S" and kind == ord("t")):
            pass  # rows, a ParameterDescription: more to come
        else:
            self._step += 1
            done = self._step >= len(self._plan)
        if not self._sent and self._size > HOLD_REPLY:
            self._decide(chr(self._held[0][0]), events)
        if done:
            if not self._sent:
                self._decide(chr(kind), events)
            self._end(events)
            self._idle(events)

    def _decide(self, summary: str, events: list[Event]) -> None:
        """The reply's head goes out with what was held, once its summary is known."""
        if not self._sent:
            self._sent = True
            events.append(Head(b"".join(self._held), MessageInfo(summary)))
            self._held, self._size = [], 0

    def _flush_parts(self, events: list[Event]) -> None:
        if self._parts:
            events.append(Part(b"".join(self._parts)))
            self._parts = []

    def _end(self, events: list[Event]) -> None:
        if not self._sent:
            self._decide(chr(self._held[0][0]) if self._held else "", events)
        self._flush_parts(events)
        events.append(END)
        self._plan = None
        if self.batch_limit:  # one of the batched requests': no longer to come
            self.batch_limit -= 1


def _sqlstate(message: bytes) -> str:
    """The SQLSTATE (field C) of an ErrorResponse."""
    at = 5
    while at < len(message) and message[at] != 0:
        value, after = cstring(message, at + 1)
        if message[at] == ord("C"):
            return value
        at = after
    return ""
