"""PostgreSQL (frontend/backend protocol v3) framing, without a socket.

Requests: the startup (SSLRequest, GSSENCRequest, StartupMessage) and
authentication messages are the handshake, relayed outside the rules. A
simple Query is one unit; in the extended protocol each Execute, with the
Parse/Bind/Describe/Close messages before it, is one unit, matched on the
SQL of the statement it executes. Those few messages are held only until
the next message arrives (the server answers nothing before a Flush or a
Sync, which is such a message): never until a Sync. Sync, Flush and
messages that no Execute follows are relayed outside the rules.

Replies: the response framer knows from each request which messages answer
it (``_plan`` in its fields) and after an ErrorResponse skips, as the
server does, every request until Sync. A reply's head is held until the
message that says what the reply is (``"C SELECT 1"``, ``"E 40001"``, at
most 64 KiB). Messages the server sends when no request waits (a
NotificationResponse, a ParameterStatus) are interim replies.

Both framers of a connection share a :class:`Session`: the response framer
writes the transaction state from each ReadyForQuery, and a switch (COPY,
TLS) seen on one side; the request framer reads them.
:meth:`PostgresqlProtocol.framers` makes the pair.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pytest_vaurien.protocols import postgresql_match
from pytest_vaurien.protocols.base import (
    Batch,
    Event,
    Head,
    Matcher,
    MessageInfo,
    Opaque,
    WireProtocol,
)
from pytest_vaurien.protocols.postgresql_replies import (
    END,
    MAX_MESSAGE,
    Framer,
    PgResponseFramer,
    Session,
    cstring,
    message_header,
)

__all__ = [
    "PROTOCOL",
    "PgRequestFramer",
    "PgResponseFramer",
    "PostgresqlProtocol",
    "RequestBatch",
    "Session",
]

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
MAX_STARTUP = 10000  # the server's MAX_STARTUP_PACKET_LENGTH
SUMMARY_WIDTH = 40

_CLIENT_TYPES = frozenset(b"QPBDECSHFXp")
#: What a batch of requests is made of (the others are framed one by one).
_BATCHED = frozenset(b"QPBDECSH")
_Q, _P, _B, _D, _E, _C, _S, _H = b"QPBDECSH"

#: Request messages no Execute followed, by their first plan letter (plans: postgresql_replies).
_NAMES = {"P": "Parse", "B": "Bind", "S": "Describe", "O": "Describe", "C": "Close"}


def shorten(sql: str) -> str:
    """The SQL on one line, cut at a word near 40 characters (``"UPDATE accounts ..."``);
    remembered, as a client sends the same statements again and again."""
    short = _SHORT.get(sql)
    if short is None:
        short = _shorten(sql)
        if len(sql) <= 4096:
            if len(_SHORT) >= 512:
                _SHORT.clear()
            _SHORT[sql] = short
    return short


#: SQL already shortened (a bounded cache).
_SHORT: dict[str, str] = {}


def _shorten(sql: str) -> str:
    text = " ".join(sql.split())
    if len(text) <= SUMMARY_WIDTH:
        return text
    cut = text[:SUMMARY_WIDTH]
    space = cut.rfind(" ")
    return (cut[:space] if space > 0 else cut).rstrip() + " ..."


@dataclass(frozen=True, init=False)
class RequestBatch(Batch):
    """A :class:`Batch` of requests of which not all are units: ``count``
    requests the server owes a reply (what pairs them with their replies:
    queries, Execute groups, Syncs, Flushes, Parse or Bind groups no Execute
    followed), ``units`` of them units (queries and Executes: each takes an
    ordinal); the others are relayed outside the rules, as one by one."""

    units: int

    def __init__(self, data: bytes, count: int, units: int) -> None:
        # one a chunk of requests: the fields set as a frozen dataclass's
        # own __init__ would, in half its time (0.2 us)
        fields = self.__dict__
        fields["data"], fields["count"], fields["units"] = data, count, units


class PgRequestFramer(Framer):
    """Cuts the client's stream into startup, queries, Execute groups and the rest.

    With :attr:`batch` set (by the engine, feed by feed), a run of simple
    queries and extended-protocol messages leaves as one
    :class:`RequestBatch`: cut in one pass, with no summary, fields or
    transaction state made for each (no one reads them when every unit is
    relayed untouched and no record is kept). The statement names are still
    mapped to their SQL, and the plans of the replies owed go to the
    response framer through the session.
    """

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        #: Emit runs of queries and extended-protocol messages as batches.
        self.batch = False
        self._startup = True
        self._held: list[bytes] = []  # Parse/Bind/Describe/Close waiting for what follows
        self._plan = ""  # their plan letters
        self._statements: dict[bytes, bytes] = {}  # prepared statement name -> SQL
        self._portals: dict[bytes, bytes] = {}  # portal name -> statement name
        #: The names (``name\0sql\0``, ``portal\0statement\0``) of the last
        #: Parse and Bind a batch took, whose entries the maps hold: a client
        #: sends the same ones again and again (None: not known).
        self._parsed: bytes | None = None
        self._bound: bytes | None = None
        self._recent: list[dict[str, Any]] = []  # fields of this feed's requests, in order
        self._skipping = False  # the proxy answered an Execute: skip until Sync

    def feed(self, data: bytes) -> list[Event]:
        """Events for ``data``; ``b""`` is the client's EOF. Never raises."""
        if self._opaque:
            return [Opaque(bytes(data))] if data else []
        events: list[Event] = []
        if (
            self.batch
            and data
            and not self._buf
            and not self._skipping
            and not self._startup
            and self.session.switched is None
        ):
            # most often a chunk of requests to batch, whole: framed at once
            # (with nothing framed one by one, no request's fields to keep)
            done = self._batch(data, 0, len(data), events)
            if done == len(data):
                return events
            data = data[done:]
        self._recent = []
        if self.session.switched is not None:  # the server side switched (COPY, TLS)
            self._switch(self.session.switched, self._take() + bytes(data), events)
            return events
        if not data:
            if self._held:
                self._flush_held(events)
            if self._buf:
                self._switch("PostgreSQL: closed mid-message", self._take(), events)
            return events
        # held bytes, then the new ones; most often nothing is held, and the
        # messages are cut from ``data`` itself, with no copy
        buf: bytes | bytearray = self._buf
        if buf:
            self._buf += data
        elif not self._startup:
            buf = data
        else:
            buf = self._buf = bytearray(data)
        pos, n = 0, len(buf)
        while not self._opaque:
            if self._startup:
                if n - pos < 8:
                    break
                length = int.from_bytes(buf[pos : pos + 4], "big")
                code = int.from_bytes(buf[pos + 4 : pos + 8], "big")
                if not 8 <= length <= MAX_STARTUP:
                    self._fail("PostgreSQL: not a startup message", pos, events)
                    break
                if n - pos < length:
                    break
                self._startup_message(code, bytes(buf[pos : pos + length]), pos, events)
                pos += length
                continue
            if n - pos < 5:
                break
            kind, length = message_header(buf, pos)
            if kind not in _CLIENT_TYPES or not 4 <= length <= MAX_MESSAGE:
                if buf is not self._buf:
                    self._buf = bytearray(buf)
                self._fail(f"PostgreSQL: unknown message {chr(kind)!r}", pos, events)
                break
            if n - pos <= length:
                break
            if self.batch and kind in _BATCHED and not self._skipping:
                pos = self._batch(buf, pos, n, events)
                continue
            self._message(chr(kind), bytes(buf[pos : pos + 1 + length]), events)
            pos += 1 + length
        if not self._opaque:
            if buf is self._buf:
                del self._buf[:pos]
            elif pos < n:
                self._buf = bytearray(buf[pos:])
        return events

    def _take(self) -> bytes:
        """Everything not emitted yet: held messages, then held bytes."""
        data = b"".join(self._held) + bytes(self._buf)
        self._held, self._plan, self._buf = [], "", bytearray()
        return data

    def _fail(self, reason: str, pos: int, events: list[Event]) -> None:
        del self._buf[:pos]
        self._switch(reason, self._take(), events)

    def _emit(self, data: bytes, summary: str, fields: dict[str, Any], events: list[Event]) -> None:
        kind = fields.get("kind")
        if self._skipping and kind not in ("sync", "terminate"):
            _skip(fields)
        self._recent.append(fields)
        events.append(Head(data, MessageInfo(summary, fields)))
        events.append(END)

    def _startup_message(self, code: int, message: bytes, pos: int, events: list[Event]) -> None:
        if code in (SSL_REQUEST, GSSENC_REQUEST) and len(message) == 8:
            name = "SSLRequest" if code == SSL_REQUEST else "GSSENCRequest"
            fields = {"kind": "startup", "handshake": True, "_plan": "L"}
            self._emit(message, name, fields, events)
        elif code == CANCEL_REQUEST and len(message) >= 12:
            self._switch(
                "PostgreSQL CancelRequest", message + bytes(self._buf[pos + len(message) :]), events
            )
        elif code >> 16 == 3:
            fields = {"kind": "startup", "handshake": True, "_plan": "A"}
            params = message[8:].split(b"\0")
            for key, value in zip(params[::2], params[1::2], strict=False):
                if key in (b"user", b"database"):
                    fields[key.decode()] = value.decode("utf-8", "replace")
            self._startup = False
            self._emit(message, "startup", fields, events)
        else:
            self._fail(f"PostgreSQL: unsupported startup code {code}", pos, events)

    def _message(self, kind: str, message: bytes, events: list[Event]) -> None:
        if kind in "PBDC":
            self._hold(kind, message)
        elif kind == "E":
            portal = message[5 : _nul(message, 5)]
            raw = self._statements.get(self._portals.get(portal, b"\0"), b"")
            sql = raw.decode("utf-8", "replace")
            fields = self._unit("execute", sql)
            data = b"".join(self._held) + message
            fields["_plan"] = self._plan + "E"
            self._held, self._plan = [], ""
            self._emit(data, shorten(sql) if sql else "Execute", fields, events)
        elif kind == "H" and self._held:
            self._held.append(message)
            self._flush_held(events)
        else:
            if self._held:
                self._flush_held(events)
            if kind == "Q":
                sql, _ = cstring(message, 5)
                fields = self._unit("query", sql)
                fields["_plan"] = "Q"
                self._emit(message, shorten(sql), fields, events)
            elif kind == "F":
                fields = self._unit("function", "")
                fields["_plan"] = "Q"
                self._emit(message, "FunctionCall", fields, events)
            elif kind == "S":
                self._emit(
                    message, "Sync", {"kind": "sync", "handshake": True, "_plan": "Y"}, events
                )
                self._skipping = False
            elif kind == "p":
                self._emit(
                    message, "auth", {"kind": "auth", "handshake": True, "_plan": "A"}, events
                )
            else:  # Flush, Terminate: the server owes nothing
                name, what = ("Flush", "flush") if kind == "H" else ("Terminate", "terminate")
                self._emit(message, name, {"kind": what, "handshake": True, "_plan": ""}, events)

    def _batch(self, buf: bytes | bytearray, pos: int, n: int, events: list[Event]) -> int:
        """Frame in one pass the run of whole queries and extended-protocol
        messages from ``pos`` as :meth:`_message` would one by one: the
        requests owed a reply go out as one :class:`RequestBatch` (their
        plans to the session), the Parse/Bind/Describe/Close messages after
        the last of them are held, as there, until what follows says what
        they are; returns where the run ends (a message it does not take,
        malformed ones included, is left to :meth:`_message`).
        """
        data = buf if type(buf) is bytes else bytes(buf)  # names are sliced as bytes
        statements, portals = self._statements, self._portals
        parsed, bound = self._parsed, self._bound
        plans = self.session.batched
        owed = len(plans)
        units = 0
        plan = self._plan  # the letters of the group waiting for what follows
        start = done = pos  # done: where the last request owed a reply ends
        while n - pos >= 5:
            kind, length = message_header(data, pos)
            end = pos + 1 + length
            if not 4 <= length <= MAX_MESSAGE or n < end:
                break
            if kind == _Q:  # a simple query
                if plan:
                    plans.append(plan)
                    plan = ""
                plans.append("Q")
                units += 1
            elif kind == _E:
                plans.append(plan + "E")
                units += 1
                plan = ""
            elif kind == _S:
                if plan:  # Parse/Bind... no Execute followed
                    plans.append(plan)
                    plan = ""
                plans.append("Y")
            elif kind == _B:  # a portal's statement, by name
                if bound is None or not data.startswith(bound, pos + 5, end):
                    named = _remember(portals, data, pos + 5, end)
                    if named is None:
                        break
                    bound = named
                plan += "B"
            elif kind == _P:  # a statement's SQL, by name
                if parsed is None or not data.startswith(parsed, pos + 5, end):
                    named = _remember(statements, data, pos + 5, end)
                    if named is None:
                        break
                    parsed = named
                plan += "P"
            elif kind == _D:
                plan += "S" if length > 4 and data[pos + 5] == _S else "O"
            elif kind == _H:  # with the group before it, or alone: owed nothing
                plans.append(plan)
                plan = ""
            elif kind == _C:
                plan += "C"
            else:
                break
            pos = end
            if not plan:
                done = end
        if done > start:
            whole = data[start:done]  # all of ``data``: not copied
            if self._held:
                whole = b"".join(self._held) + whole
                self._held = []
            events.append(RequestBatch(whole, len(plans) - owed, units))
        if done < pos:
            self._held.append(data[done:pos])
        self._plan = plan
        self._parsed, self._bound = parsed, bound
        return pos

    def _unit(self, kind: str, sql: str) -> dict[str, Any]:
        return {"kind": kind, "sql": sql, "in_transaction": self.session.status != b"I"}

    def _hold(self, kind: str, message: bytes) -> None:
        """Parse, Bind, Describe, Close: remember names, and wait for what follows."""
        if kind == "P":
            at = _nul(message, 5)
            self._statements[message[5:at]] = message[at + 1 : _nul(message, at + 1)]
            self._parsed = None  # a batch's last may no longer stand
            letter = "P"
        elif kind == "B":
            at = _nul(message, 5)
            self._portals[message[5:at]] = message[at + 1 : _nul(message, at + 1)]
            self._bound = None
            letter = "B"
        else:
            letter = "C" if kind == "C" else "S" if message[5:6] == b"S" else "O"
        self._held.append(message)
        self._plan += letter

    def _flush_held(self, events: list[Event]) -> None:
        """Held messages no Execute followed: relayed outside the rules."""
        data = b"".join(self._held)
        fields = {"kind": "extended", "handshake": True, "_plan": self._plan}
        summary = _NAMES.get(self._plan[:1], "Flush")
        self._held, self._plan = [], ""
        self._emit(data, summary, fields, events)

    def answered(self, info: MessageInfo) -> None:
        """The proxy answered an Execute itself: as the server would after an
        error, the requests after it up to Sync are skipped (not sent, and
        answered with nothing), those already framed as well as those to come."""
        if info.fields.get("kind") != "execute":
            return
        later = False
        for fields in self._recent:
            if fields is info.fields:
                later = True
            elif later:
                if fields.get("kind") == "sync":
                    return
                if fields.get("kind") != "terminate":
                    _skip(fields)
        if later:
            self._skipping = True


def _nul(data: bytes | bytearray, start: int, end: int | None = None) -> int:
    """Where the NUL ending the string at ``start`` is (``end``, or the end
    of ``data``, if none is: as :func:`cstring`)."""
    at = data.find(b"\0", start, end)
    if at < 0:
        return len(data) if end is None else end
    return at


def _remember(names: dict[bytes, bytes], data: bytes, start: int, end: int) -> bytes | None:
    """Map the NUL-terminated name at ``start`` to the NUL-terminated string
    after it (a Parse's statement and SQL, a Bind's portal and statement);
    returns both strings, NULs included, to tell the same message again at
    once (``None``, remembering nothing, if either is cut short)."""
    at = data.find(b"\0", start, end)
    value = data.find(b"\0", at + 1, end)
    if at < 0 or value < 0:
        return None
    names[data[start:at]] = data[at + 1 : value]
    return data[start : value + 1]


def _skip(fields: dict[str, Any]) -> None:
    """A request the server would skip after an error: not sent, answered with nothing."""
    fields.update(handshake=True, skipped=True, substitute=(b"", b""), _plan="")


class PostgresqlProtocol:
    """PostgreSQL for the proxy: framers, ``match`` forms and ``error`` replies."""

    name = "postgresql"

    def framers(self) -> tuple[PgRequestFramer, PgResponseFramer]:
        """A connection's two framers, sharing one session."""
        session = Session()
        return PgRequestFramer(session), PgResponseFramer(session)

    def request_framer(self) -> PgRequestFramer:
        """A request framer alone, with a session of its own."""
        return PgRequestFramer(Session())

    def response_framer(self) -> PgResponseFramer:
        """A response framer alone, with a session of its own."""
        return PgResponseFramer(Session())

    def parse_match(self, match: object, where: str) -> Matcher:
        return postgresql_match.parse_match(match, where)

    def check_error_options(self, options: Mapping[str, Any], where: str) -> None:
        postgresql_match.check_error_options(options, where)

    def error_reply(self, options: Mapping[str, Any], request: MessageInfo) -> tuple[bytes, str]:
        return postgresql_match.error_reply(options, request)

    def error_request(self, options: Mapping[str, Any], request: MessageInfo) -> bytes | None:
        return postgresql_match.error_request(options, request)

    def closes_after_error(self, options: Mapping[str, Any]) -> bool:
        """A FATAL (or PANIC) error ends the session: the server closes the
        connection after it, and so does the proxy."""
        return str(options.get("severity", "ERROR")).upper() in ("FATAL", "PANIC")


PROTOCOL = PostgresqlProtocol()
#: The same object, typed as the interface (mypy checks that it conforms).
POSTGRESQL: WireProtocol = PROTOCOL
