"""MySQL / MariaDB client/server protocol framing, without a socket.

A packet is a 3-byte little-endian length, a sequence id and a payload; a
payload of 0xFFFFFF bytes continues in the next packet (one *logical*
packet). The server speaks first: its greeting is an unsolicited reply.
The client's login (HandshakeResponse) and every authentication packet
after it are the handshake, relayed outside the rules, each paired with the
server packets up to the point where the server waits for the client again
(OK, ERR, an auth switch, more auth data). An SSLRequest drops the
connection to plain relay ("MySQL TLS").

After the login each command (sequence id 0) is one unit; the reply framer
knows from the command which packets answer it (``_plan`` in its fields):
a result set's column count, column definitions, EOF (unless the client
set CLIENT_DEPRECATE_EOF), rows and final EOF/OK, several of them while the
server says more results exist. COM_STMT_EXECUTE is matched on the SQL its
statement was prepared with (the prepare reply gives the id). An unknown
command, LOCAL INFILE or a packet out of step switches to plain relay.

Both framers of a connection share a :class:`Session`: the request framer
writes the client's capabilities, the response framer the server status
(``in_transaction``) and prepared statement ids; either writes a switch.
:meth:`MysqlProtocol.framers` makes the pair.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from pytest_vaurien.protocols import mysql_match
from pytest_vaurien.protocols.base import (
    End,
    Event,
    Head,
    Matcher,
    MessageInfo,
    Opaque,
    Part,
    SessionFramer,
    WireProtocol,
)

__all__ = [
    "PROTOCOL",
    "MysqlProtocol",
    "MysqlRequestFramer",
    "MysqlResponseFramer",
    "Session",
    "shorten",
]

MAX_PAYLOAD = 0xFFFFFF
HOLD_REPLY = 64 * 1024  # reply bytes held at most while its summary is unknown
SUMMARY_WIDTH = 40

CLIENT_PROTOCOL_41 = 0x200
CLIENT_SSL = 0x800
CLIENT_QUERY_ATTRIBUTES = 1 << 27
CLIENT_DEPRECATE_EOF = 1 << 24
MARIADB_CACHE_METADATA = 1 << 4  # in MariaDB's extended capabilities
SERVER_STATUS_IN_TRANS = 0x0001
SERVER_MORE_RESULTS_EXISTS = 0x0008

#: command byte -> (name, reply plan). Plans: "result" (OK, ERR or result
#: sets), "prepare", "one" (one packet), "fields" (definitions until EOF),
#: "rows" (rows until EOF/OK), "" (no reply).
COMMANDS: dict[int, tuple[str, str]] = {
    0x01: ("Quit", ""),
    0x02: ("InitDB", "one"),
    0x03: ("Query", "result"),
    0x04: ("FieldList", "fields"),
    0x07: ("Refresh", "one"),
    0x08: ("Shutdown", "one"),
    0x09: ("Statistics", "one"),
    0x0C: ("ProcessKill", "one"),
    0x0D: ("Debug", "one"),
    0x0E: ("Ping", "one"),
    0x16: ("Prepare", "prepare"),
    0x17: ("Execute", "result"),
    0x18: ("SendLongData", ""),
    0x19: ("Close", ""),
    0x1A: ("Reset", "one"),
    0x1B: ("SetOption", "one"),
    0x1C: ("Fetch", "rows"),
    0x1F: ("ResetConnection", "one"),
}


def shorten(sql: str) -> str:
    """The SQL on one line, cut at a word near 40 characters (``"UPDATE accounts ..."``)."""
    text = " ".join(sql.split())
    if len(text) <= SUMMARY_WIDTH:
        return text
    cut = text[:SUMMARY_WIDTH]
    space = cut.rfind(" ")
    return (cut[:space] if space > 0 else cut).rstrip() + " ..."


def lenenc(data: bytes, at: int) -> tuple[int, int]:
    """A length-encoded integer at ``at`` and where the next field starts
    (NULL and truncated values read as 0)."""
    if at >= len(data):
        return 0, at + 1
    first = data[at]
    width = {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(first)
    if width is None:
        return (first if first < 0xFB else 0), at + 1
    return int.from_bytes(data[at + 1 : at + 1 + width], "little"), at + 1 + width


def payload_of(message: bytes) -> bytes:
    """A logical packet's payload: its physical packets' headers taken out."""
    parts, pos = [], 0
    while pos + 4 <= len(message):
        length = int.from_bytes(message[pos : pos + 3], "little")
        parts.append(message[pos + 4 : pos + 4 + length])
        pos += 4 + length
    return b"".join(parts)


class Session:
    """What the two framers of one connection share."""

    __slots__ = ("capabilities", "statements", "status", "switched")

    def __init__(self) -> None:
        #: The client's capability flags, from its login.
        self.capabilities = CLIENT_PROTOCOL_41
        #: The server status flags of the last OK or EOF packet.
        self.status = 0
        #: Prepared statement id -> its SQL.
        self.statements: dict[int, str] = {}
        #: Why the connection is plain relay now (seen by either framer).
        self.switched: str | None = None

    @property
    def deprecate_eof(self) -> bool:
        return bool(self.capabilities & CLIENT_DEPRECATE_EOF)


class MysqlRequestFramer(SessionFramer[Session]):
    """Cuts the client's stream into the login, auth packets and commands."""

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self._phase = "login"  # then "auth", then "command"

    def feed(self, data: bytes) -> list[Event]:
        """Events for ``data``; ``b""`` is the client's EOF. Never raises."""
        if self._opaque:
            return [Opaque(bytes(data))] if data else []
        events: list[Event] = []
        if self.session.switched is not None:  # the server side switched (LOCAL INFILE)
            self._switch(self.session.switched, bytes(self._buf) + bytes(data), events)
            return events
        if not data:
            if self._buf:
                self._switch("MySQL: closed mid-packet", bytes(self._buf), events)
            return events
        buf = self._buf
        buf += data
        pos, n = 0, len(buf)
        while not self._opaque:
            end, seq = pos, 0
            while True:  # the end of one logical packet, if it is all here
                if n - end < 4:
                    end = -1
                    break
                length = buf[end] | buf[end + 1] << 8 | buf[end + 2] << 16
                seq = buf[end + 3]
                if n - end < 4 + length:
                    end = -1
                    break
                end += 4 + length
                if length < MAX_PAYLOAD:
                    break
            if end < 0:
                break
            # what follows the packet is copied only if it switches to plain relay
            self._packet(bytes(buf[pos:end]), seq, buf, end, events)
            pos = end
        if not self._opaque:
            del buf[:pos]
        return events

    def _packet(
        self, message: bytes, seq: int, buf: bytearray, end: int, events: list[Event]
    ) -> None:
        first_seq = message[3]
        if len(message) == 4:
            self._switch("MySQL: empty client packet", message + bytes(buf[end:]), events)
            return
        if self._phase == "auth" and first_seq == 0:
            self._phase = "command"
        if self._phase == "login":
            self._login(message, buf, end, events)
        elif self._phase == "auth":
            fields = {"command": "Auth", "handshake": True, "_plan": "auth", "_seq": seq}
            events += [Head(message, MessageInfo("auth", fields)), End()]
        elif first_seq != 0:
            self._switch(
                f"MySQL: client packet out of step (id {first_seq})",
                message + bytes(buf[end:]),
                events,
            )
        else:
            self._command(message, seq, buf, end, events)

    def _login(self, message: bytes, buf: bytearray, end: int, events: list[Event]) -> None:
        payload = message[4:]
        caps = int.from_bytes(payload[:2], "little")
        if caps & CLIENT_PROTOCOL_41:
            caps = int.from_bytes(payload[:4], "little")
        if caps & CLIENT_SSL:
            self._switch("MySQL TLS", message + bytes(buf[end:]), events)
            return
        extended = int.from_bytes(payload[28:32], "little") if caps & CLIENT_PROTOCOL_41 else 0
        if not caps & 1 and extended & MARIADB_CACHE_METADATA:
            # MariaDB's extended capabilities (CLIENT_MYSQL, bit 0, unset)
            self._switch("MySQL: MariaDB metadata cache", message + bytes(buf[end:]), events)
            return
        self.session.capabilities = caps
        fields: dict[str, Any] = {"command": "Login", "handshake": True, "_plan": "auth"}
        if caps & CLIENT_PROTOCOL_41 and len(payload) > 32:
            nul = payload.find(b"\0", 32)
            fields["user"] = payload[32 : nul if nul >= 0 else None].decode("utf-8", "replace")
        fields["_seq"] = message[3]
        self._phase = "auth"
        events += [Head(message, MessageInfo("login", fields)), End()]

    def _command(
        self, message: bytes, seq: int, buf: bytearray, end: int, events: list[Event]
    ) -> None:
        code = message[4]
        known = COMMANDS.get(code)
        if known is None:
            self._switch(f"MySQL command 0x{code:02X}", message + bytes(buf[end:]), events)
            return
        name, plan = known
        sql: str | None = None
        if code in (0x03, 0x16):
            body = payload_of(message)[1:]
            if code == 0x03 and self.session.capabilities & CLIENT_QUERY_ATTRIBUTES:
                count, at = lenenc(body, 0)
                if count == 0:
                    _, at = lenenc(body, at)
                    body = body[at:]
            sql = body.decode("utf-8", "replace")
        elif code in (0x17, 0x19, 0x1A, 0x1C, 0x18):
            statement = int.from_bytes(message[5:9], "little")
            sql = self.session.statements.get(statement, "")
            if code == 0x19:
                self.session.statements.pop(statement, None)
        fields: dict[str, Any] = {
            "command": name,
            "in_transaction": bool(self.session.status & SERVER_STATUS_IN_TRANS),
            "_plan": plan,
            "_seq": seq,
        }
        if sql is not None:
            fields["sql"] = sql
        if not plan:
            # no reply comes (Close, Quit): an error the client never asked for
            # would pass for the reply to its next command, so these are never
            # faulted, as the handshake is not
            fields["noreply"] = True
            fields["handshake"] = True
        summary = shorten(sql) if sql and code in (0x03, 0x16, 0x17) else name
        if code == 0x16:
            summary = f"PREPARE {summary}"
        events += [Head(message, MessageInfo(summary, fields)), End()]


class MysqlResponseFramer(SessionFramer[Session]):
    """Cuts the server's stream into the greeting and the replies commands are owed."""

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self._queue: deque[tuple[str, str]] = deque()  # (plan, sql) of requests waiting
        self._greeted = False
        self._plan: str | None = None  # the current reply's plan; None between replies
        self._sql = ""
        self._phase = ""
        self._left = 0  # definitions still to come
        self._rows = 0
        self._first = True  # in the reply's first result
        self._cont = False  # the last physical packet was full: the next continues it
        self._held: list[bytes] = []
        self._size = 0
        self._summary: str | None = None
        self._sent = False
        self._parts: list[bytes] = []

    def expect(self, request: MessageInfo) -> None:
        plan = request.fields.get("_plan", "result")
        sql = request.fields.get("sql", "")
        self._queue.append((plan if isinstance(plan, str) else "result", str(sql)))

    def feed(self, data: bytes) -> list[Event]:
        """Events for ``data``; ``b""`` is the server's EOF. Never raises."""
        if self._opaque:
            return [Opaque(bytes(data))] if data else []
        events: list[Event] = []
        if self.session.switched is not None:  # the client side switched (TLS)
            self._switch(self.session.switched, self._take() + bytes(data), events)
            return events
        if not data:
            if self._plan is not None:
                self._summary = self._summary or "closed"
                self._end(events)
            if self._buf:
                self._switch("MySQL: closed mid-packet", bytes(self._buf), events)
            return events
        buf = self._buf
        buf += data
        pos, n = 0, len(buf)
        while not self._opaque and n - pos >= 4:
            length = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
            if n - pos < 4 + length:
                break
            packet = bytes(buf[pos : pos + 4 + length])
            pos += 4 + length
            cont, self._cont = self._cont, length == MAX_PAYLOAD
            if cont and self._plan is not None:
                self._add(packet, events)
                continue
            self._packet(packet, length, events)
            if self._opaque and pos < n:
                events.append(Opaque(bytes(buf[pos:])))
        if self._opaque:
            return events
        del buf[:pos]
        if self._sent and self._parts:
            events.append(Part(b"".join(self._parts)))
            self._parts = []
        return events

    def _take(self) -> bytes:
        data = b"".join(self._held) + b"".join(self._parts) + bytes(self._buf)
        self._held, self._parts, self._buf = [], [], bytearray()
        return data

    def _add(self, packet: bytes, events: list[Event]) -> None:
        if self._sent:
            self._parts.append(packet)
            return
        self._held.append(packet)
        self._size += len(packet)
        if self._summary is None and self._size > HOLD_REPLY:
            self._summary = "rows"
        if self._summary is not None:
            events.append(Head(b"".join(self._held), MessageInfo(self._summary)))
            self._held, self._size, self._sent = [], 0, True

    def _end(self, events: list[Event]) -> None:
        if not self._sent:
            self._summary = self._summary or "reply"
            self._add(b"", events)
        events.append(End(b"".join(self._parts)))
        self._parts, self._plan, self._summary, self._sent = [], None, None, False

    def _start(self) -> None:
        if not self._greeted:
            self._greeted = True
            self._plan, self._sql = "one", ""
        elif self._queue:
            self._plan, self._sql = self._queue.popleft()
        else:
            self._plan, self._sql = "one", ""  # unsolicited: an ERR before a close
        self._phase = {"result": "first", "prepare": "first", "fields": "rows"}.get(
            self._plan, self._plan
        )
        self._rows, self._first = 0, True

    def _status(self, payload: bytes, ok: bool) -> int:
        """The status flags of an OK (``ok``) or EOF packet, remembered."""
        if ok:
            _, at = lenenc(payload, 1)
            _, at = lenenc(payload, at)
        else:
            at = 3
        if len(payload) >= at + 2:
            self.session.status = int.from_bytes(payload[at : at + 2], "little")
        return self.session.status

    def _packet(self, packet: bytes, length: int, events: list[Event]) -> None:
        if self._plan is None:
            self._start()
        payload = packet[4:]
        first = payload[0] if payload else -1
        done = False
        if first == 0xFF and self._phase != "auth-data":
            errno = int.from_bytes(payload[1:3], "little")
            self._summary = self._summary or f"ERR {errno}"
            done = True
        elif self._phase == "one":
            if first == 0x00:
                self._status(payload, True)
            self._summary = {0x00: "OK", 0xFE: "EOF", 0x0A: "greeting"}.get(first, "reply")
            done = True
        elif self._phase == "auth":
            if first == 0x00:
                self._status(payload, True)
                self._summary, done = "OK", True
            elif first == 0xFE:
                self._summary, done = "auth switch", True
            elif first == 0x01 and payload[1:2] != b"\x03":
                self._summary, done = "auth more data", True
        elif self._phase == "first":
            if self._plan == "prepare":
                if first == 0x00 and len(payload) >= 9:
                    statement = int.from_bytes(payload[1:5], "little")
                    self.session.statements[statement] = self._sql
                    columns = int.from_bytes(payload[5:7], "little")
                    params = int.from_bytes(payload[7:9], "little")
                    eofs = 0 if self.session.deprecate_eof else (params > 0) + (columns > 0)
                    self._left = columns + params + eofs
                self._summary = "OK"
                self._phase, done = "skip", self._left == 0
            elif first == 0x00:
                more = self._status(payload, True) & SERVER_MORE_RESULTS_EXISTS
                if self._first:
                    self._summary = "OK"
                self._first, done = False, not more
            elif first == 0xFB:
                data = b"".join(self._held) + packet
                self._held = []
                self._switch("MySQL LOCAL INFILE", data, events)
                return
            else:
                self._left, _ = lenenc(payload, 0)
                self._phase = "columns"
                if self._left == 0:
                    self._phase = "rows" if self.session.deprecate_eof else "eof"
        elif self._phase == "columns":
            self._left -= 1
            if self._left <= 0:
                self._phase = "rows" if self.session.deprecate_eof else "eof"
        elif self._phase == "eof":
            self._phase = "rows"
        elif self._phase == "skip":
            self._left -= 1
            done = self._left <= 0
        elif self._phase == "rows":
            if first == 0xFE and length < MAX_PAYLOAD:
                more = 0
                if self._plan != "fields":
                    ok = self.session.deprecate_eof
                    more = self._status(payload, ok) & SERVER_MORE_RESULTS_EXISTS
                if self._first:
                    self._summary = f"rows {self._rows}" if self._plan != "fields" else "fields"
                if more:
                    self._phase, self._first = "first", False
                else:
                    done = True
            else:
                self._rows += 1
        self._add(packet, events)
        if done:
            self._end(events)


class MysqlProtocol:
    """MySQL and MariaDB for the proxy: framers, ``match`` forms and ``error`` replies."""

    name = "mysql"

    def framers(self) -> tuple[MysqlRequestFramer, MysqlResponseFramer]:
        """A connection's two framers, sharing one session."""
        session = Session()
        return MysqlRequestFramer(session), MysqlResponseFramer(session)

    def request_framer(self) -> MysqlRequestFramer:
        """A request framer alone, with a session of its own."""
        return MysqlRequestFramer(Session())

    def response_framer(self) -> MysqlResponseFramer:
        """A response framer alone, with a session of its own."""
        return MysqlResponseFramer(Session())

    def parse_match(self, match: object, where: str) -> Matcher:
        return mysql_match.parse_match(match, where)

    def check_error_options(self, options: Mapping[str, Any], where: str) -> None:
        mysql_match.check_error_options(options, where)

    def error_reply(self, options: Mapping[str, Any], request: MessageInfo) -> tuple[bytes, str]:
        return mysql_match.error_reply(options, request)

    def error_request(
        self, options: Mapping[str, Any], request: MessageInfo
    ) -> tuple[bytes, bytes] | None:
        """A deadlock inside a transaction: the server rolls it back too (a
        ROLLBACK goes instead of the command), the client gets the ERR."""
        return mysql_match.rollback_request(options, request)


PROTOCOL = MysqlProtocol()
#: The same object, typed as the interface (mypy checks that it conforms).
MYSQL: WireProtocol = PROTOCOL
