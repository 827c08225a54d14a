"""Redis framing (RESP2 and RESP3): where each command and reply starts and ends.

Sans-IO, bytes in, events out; every event carries the original bytes. A
command is one unit (``Head`` with the whole command, then ``End``); one
over :data:`BIG` leaves its ``Head`` once its name and first arguments are
read and streams the rest, so a large ``SET`` is never held whole.

Parsing resumes where the last feed stopped (linear in the bytes fed), and
replies are parsed with an explicit stack, so nesting depth costs no
recursion. Pub/sub, ``MONITOR``, ``CLIENT REPLY`` and replication streams
drop the connection to plain relay after the command that asks for them;
what cannot be parsed does so at once: framing never breaks traffic.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from pytest_vaurien.protocols.base import (
    End,
    Event,
    Head,
    Matcher,
    MessageInfo,
    Opaque,
    Part,
    Switched,
    WireProtocol,
)
from pytest_vaurien.protocols.redis_match import (
    DEFAULT_REPLY,
    check_error_options,
    error_reply,
    parse_match,
)

__all__ = [
    "BIG",
    "DEFAULT_REPLY",
    "MAX_LINE",
    "PROTOCOL",
    "REDIS",
    "SUBSTITUTE",
    "RedisProtocol",
    "RedisRequestFramer",
    "RedisResponseFramer",
    "check_error_options",
    "error_reply",
    "parse_match",
]

#: A command held whole up to this size; past it, its head leaves and the rest streams.
BIG = 64 * 1024
#: The longest inline command or reply line (Redis' own inline limit).
MAX_LINE = 64 * 1024
_COUNT_LINE = 24  # "*N" and "$N" lines of a command: digits only

#: What an ``EXEC`` becomes after a queued command the proxy rejected: the
#: server discards the transaction, the client is told it was aborted.
SUBSTITUTE = (
    b"*1\r\n$7\r\nDISCARD\r\n",
    b"-EXECABORT Transaction discarded because of previous errors.\r\n",
)

_HANDSHAKE = frozenset({"HELLO", "AUTH"})
_CONTAINERS = frozenset(
    {
        "ACL", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "DEBUG", "FUNCTION", "LATENCY",
        "MEMORY", "MODULE", "OBJECT", "PUBSUB", "SCRIPT", "SLOWLOG", "XGROUP", "XINFO",
    }
)  # fmt: skip
_KEYLESS = _CONTAINERS.union(
    {
        "ASKING", "AUTH", "BGREWRITEAOF", "BGSAVE", "DBSIZE", "DISCARD", "ECHO", "EXEC",
        "FAILOVER", "FLUSHALL", "FLUSHDB", "HELLO", "INFO", "KEYS", "LASTSAVE", "LOLWUT",
        "MONITOR", "MULTI", "PING", "PSUBSCRIBE", "PSYNC", "PUBLISH", "PUNSUBSCRIBE", "QUIT",
        "RANDOMKEY", "READONLY", "READWRITE", "REPLCONF", "REPLICAOF", "RESET", "ROLE", "SAVE",
        "SCAN", "SELECT", "SHUTDOWN", "SLAVEOF", "SPUBLISH", "SSUBSCRIBE", "SUBSCRIBE",
        "SUNSUBSCRIBE", "SWAPDB", "SYNC", "TIME", "UNSUBSCRIBE", "UNWATCH", "WAIT", "WAITAOF",
    }
) - {"MEMORY", "OBJECT", "XGROUP", "XINFO"}  # fmt: skip
# Where the first key is, when not right after the name: an index, or
# -(index of a numkeys argument), the keys following it.
_KEY_AT = {
    "BITOP": 2, "MEMORY": 2, "MIGRATE": 3, "OBJECT": 2, "XGROUP": 2, "XINFO": 2,
    "EVAL": -2, "EVALSHA": -2, "EVAL_RO": -2, "EVALSHA_RO": -2, "FCALL": -2, "FCALL_RO": -2,
    "ZUNION": -1, "ZINTER": -1, "ZDIFF": -1, "ZINTERCARD": -1, "SINTERCARD": -1,
    "LMPOP": -1, "ZMPOP": -1, "BLMPOP": -2, "BZMPOP": -2,
}  # fmt: skip
# Commands after which the stream is no longer request, reply, request...
_SWITCH = {
    "SUBSCRIBE": "Redis pub/sub",
    "PSUBSCRIBE": "Redis pub/sub",
    "SSUBSCRIBE": "Redis pub/sub",
    "MONITOR": "Redis MONITOR",
    "SYNC": "Redis replication",
    "PSYNC": "Redis replication",
}
_SIMPLE = frozenset(b"+-:_,#(")  # one line is the whole value
_BULK = frozenset(b"$!=")  # a length line, then that many bytes and CRLF
_AGGREGATE = frozenset(b"*~>%|")  # a count line, then that many values (twice for % and |)
_END = End()
_NAMES: dict[bytes, str] = {}  # command name as sent -> upper-case str (a client repeats them)
_REPLIES: dict[tuple[bytes, bool], MessageInfo] = {}  # reply line -> its info (+OK, $5, :1)


class _Transaction:
    """One ``MULTI`` as the framer saw it: a command the proxy answered
    (rejected) inside it turns its ``EXEC`` into ``DISCARD``."""

    __slots__ = ("aborted", "exec_fields", "void")

    def __init__(self) -> None:
        self.aborted = False
        self.void = False  # the MULTI itself was answered by the proxy: no transaction
        self.exec_fields: dict[str, Any] | None = None

    def update(self) -> None:
        fields = self.exec_fields
        if fields is not None:
            if self.aborted and not self.void:
                fields["substitute"] = SUBSTITUTE
            else:
                fields.pop("substitute", None)

    def __repr__(self) -> str:
        return f"<MULTI aborted={self.aborted} void={self.void}>"


def _name(raw: bytes) -> str:
    name = _NAMES.get(raw)
    if name is None:
        name = raw.decode("latin-1").upper()
        if len(raw) <= 32:
            if len(_NAMES) >= 512:
                _NAMES.clear()
            _NAMES[raw] = name
    return name


def _key(command: str, args: list[bytes]) -> str | None:
    """The first key of a command (``args`` starts with its name), if it has one."""
    if command in _KEYLESS:
        return None
    at = _KEY_AT.get(command, 1)
    if at < 0:
        count = args[-at] if len(args) > -at else b""
        at = -at + 1 if count.isdigit() and int(count) > 0 else len(args)
    elif command in ("XREAD", "XREADGROUP"):
        upper = [arg.upper() for arg in args]
        at = upper.index(b"STREAMS") + 1 if b"STREAMS" in upper else len(args)
    return args[at].decode("latin-1") if len(args) > at else None


class RedisRequestFramer:
    """Cuts a client's stream into commands: multibulk arrays and inline lines.

    Keeps what the engine needs between commands: whether the handshake is
    over (``SELECT`` is part of it only before any other command) and the
    open ``MULTI``, for :meth:`answered`.
    """

    __slots__ = (
        "_args", "_bulk_end", "_left", "_opaque", "_pending", "_pos", "_sent",
        "_started", "_txn",
    )  # fmt: skip

    def __init__(self) -> None:
        self._pending = bytearray()
        self._opaque = False
        self._pos = 0  # where parsing resumes, from the held bytes' start
        self._left = 0  # arguments of the current command still to come
        self._bulk_end = -1  # where the current argument ends (with CRLF); -1: a $ line is next
        self._args: list[bytes] = []
        self._sent = False  # the current command's Head has left (a big command)
        self._started = False  # a command outside the handshake was seen
        self._txn: _Transaction | None = None

    def answered(self, info: MessageInfo) -> None:
        """The proxy answered ``info`` itself: inside ``MULTI`` the server never
        queued it, so the transaction must not run (design.md: state stays faithful)."""
        txn = info.fields.get("transaction")
        if isinstance(txn, _Transaction):
            command = info.fields.get("command")
            if command == "MULTI":
                txn.void = True
            elif command not in ("EXEC", "DISCARD"):
                txn.aborted = True
            txn.update()

    def feed(self, data: bytes) -> list[Event]:
        """Events for ``data``; ``b""`` is the client's EOF. Never raises."""
        if self._opaque:
            return [Opaque(bytes(data))] if data else []
        pending = self._pending
        if not data:
            self._opaque = True
            rest, self._pending = bytes(pending), bytearray()
            return [Switched("client closed mid-command", rest)] if rest else []
        buf: bytes | bytearray
        if pending:
            pending += data
            buf = pending
        else:
            buf = data
        events: list[Event] = []
        mark = self._run(buf, events)
        if mark >= len(buf):
            if pending:
                self._pending = bytearray()
        elif buf is pending:
            del pending[:mark]
        else:
            self._pending = bytearray(memoryview(buf)[mark:])
        return events

    def _fail(self, reason: str, buf: bytes | bytearray, mark: int, events: list[Event]) -> int:
        events.append(Switched(reason, bytes(buf[mark:])))
        self._opaque = True
        return len(buf)

    def _run(self, buf: bytes | bytearray, events: list[Event]) -> int:
        """Frame ``buf`` (held bytes, then new ones); returns how many were emitted."""
        n = len(buf)
        mark, pos = 0, self._pos  # first byte not emitted; first byte not parsed
        left, bulk_end, args = self._left, self._bulk_end, self._args
        while True:
            if left == 0:  # a command starts at pos
                if pos >= n:
                    break
                if buf[pos] == 42:  # "*": a multibulk array
                    nl = buf.find(b"\r\n", pos + 1, pos + _COUNT_LINE)
                    if nl < 0:
                        if n - pos >= _COUNT_LINE:
                            return self._fail("bad multibulk length", buf, mark, events)
                        break
                    count = buf[pos + 1 : nl]
                    if not count.isdigit():
                        if count.startswith(b"-") and count[1:].isdigit():
                            pos = nl + 2  # "*-1": Redis skips it, and so do we
                            continue
                        return self._fail("bad multibulk length", buf, mark, events)
                    pos = nl + 2
                    left, bulk_end, args = int(count), -1, []
                    if left == 0:  # "*0": no command; its bytes go with the next one's
                        continue
                else:  # an inline command: one line, words
                    nl = buf.find(b"\n", pos, pos + MAX_LINE)
                    if nl < 0:
                        if n - pos >= MAX_LINE:
                            return self._fail("inline command too long", buf, mark, events)
                        break
                    words = buf[pos:nl].split()
                    pos = nl + 1
                    if not words:
                        if pos - mark > MAX_LINE:
                            return self._fail("too many empty lines", buf, mark, events)
                        continue
                    args = [bytes(word) for word in words]
                    switch = self._command(args, buf, mark, pos, events)
                    if switch:
                        return self._switched(switch, buf, pos, events)
                    mark = pos
                    continue
            elif bulk_end < 0:  # a "$N" line
                if pos >= n:
                    break
                if buf[pos] != 36:
                    return self._fail("expected '$' in a command", buf, mark, events)
                nl = buf.find(b"\r\n", pos + 1, pos + _COUNT_LINE)
                if nl < 0:
                    if n - pos >= _COUNT_LINE:
                        return self._fail("bad bulk length", buf, mark, events)
                    break
                length = buf[pos + 1 : nl]
                if not length.isdigit():
                    return self._fail("bad bulk length", buf, mark, events)
                pos = nl + 2
                bulk_end = pos + int(length) + 2
            else:  # an argument's bytes, from pos (held whole unless the head has left)
                if bulk_end > n:
                    if self._sent:
                        pos = n
                    break
                if not self._sent:
                    args.append(bytes(buf[pos : bulk_end - 2]))
                pos, bulk_end = bulk_end, -1
                left -= 1
                if left == 0:
                    switch = self._command(args, buf, mark, pos, events)
                    if switch:
                        return self._switched(switch, buf, pos, events)
                    mark = pos
        if left and not self._sent and n - mark > BIG:  # a big command: its head leaves now
            if not args:
                return self._fail(f"command name over {BIG // 1024} KiB", buf, mark, events)
            if bulk_end >= 0:
                pos = n  # inside an argument: all of it so far leaves too
            events.append(Head(bytes(buf[mark:pos]), self._info(args)))
            self._sent, mark = True, pos
        elif self._sent and pos > mark:
            events.append(Part(bytes(buf[mark:pos])))
            mark = pos
        self._left, self._args = left, args
        self._pos = pos - mark
        self._bulk_end = bulk_end - mark if bulk_end >= 0 else -1
        return mark

    def _command(
        self, args: list[bytes], buf: bytes | bytearray, mark: int, end: int, events: list[Event]
    ) -> str | None:
        """Emit the command ending at ``end``; why the stream switches after it, if it does."""
        if self._sent:
            self._sent = False
            events.append(End(bytes(buf[mark:end])))
            return None  # a big command's info was made with its head
        info = self._info(args)
        events.append(Head(bytes(buf[mark:end]), info))
        events.append(_END)
        switch: str | None = info.fields.get("switch")
        return switch

    def _switched(self, reason: str, buf: bytes | bytearray, pos: int, events: list[Event]) -> int:
        events.append(Switched(reason))
        if pos < len(buf):
            events.append(Opaque(bytes(buf[pos:])))
        self._opaque = True
        return len(buf)

    def _info(self, args: list[bytes]) -> MessageInfo:
        """What the engine and rules know of a command; keeps the handshake
        and ``MULTI`` state."""
        command = _name(args[0])
        sub = ""
        if command in _CONTAINERS and len(args) > 1:
            sub = _name(args[1])
        fields: dict[str, Any] = {
            "command": command,
            "key": _key(command, args),
            "args": tuple(args[1:]),
        }
        if sub:
            fields["subcommand"] = sub
        if (
            command in _HANDSHAKE
            or (command == "CLIENT" and sub == "SETINFO")
            or (command == "SELECT" and not self._started)
        ):
            fields["handshake"] = True
        else:
            self._started = True
        txn = self._txn
        if txn is not None:
            if command in ("EXEC", "DISCARD", "RESET"):
                self._txn = None
                if command == "EXEC":
                    txn.exec_fields = fields
                    if txn.aborted and not txn.void:
                        fields["substitute"] = SUBSTITUTE
            if command not in ("WATCH", "QUIT", "RESET", "MULTI"):
                fields["transaction"] = txn
        elif command == "MULTI":
            self._txn = fields["transaction"] = _Transaction()
        switch = _SWITCH.get(command)
        if switch is None and command == "CLIENT" and sub == "REPLY" and len(args) > 2:
            mode = _name(args[2])
            if mode in ("OFF", "SKIP"):
                switch, fields["noreply"] = f"Redis CLIENT REPLY {mode}", True
        if switch is not None:
            fields["switch"] = switch
        return MessageInfo(f"{command} {sub}" if sub else command, fields)


class RedisResponseFramer:
    """Cuts a backend's stream into replies, one per expected command.

    A RESP3 push (``>``) at the top level answers no command (an
    invalidation, say): it is an interim ``Head`` the engine relays without
    ending the exchange, unless the command expected is a subscription,
    whose confirmation it is. Attributes (``|``) belong to the reply after them.
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
    )

    def __init__(self) -> None:
        self._expected: deque[MessageInfo] = deque()
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
        buf: bytes | bytearray
        if pending:
            pending += data
            buf = pending
        else:
            buf = data
        events: list[Event] = []
        mark = self._run(buf, events)
        if mark >= len(buf):
            if pending:
                self._pending = bytearray()
        elif buf is pending:
            del pending[:mark]
        else:
            self._pending = bytearray(memoryview(buf)[mark:])
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
        while True:
            if bulk_end >= 0:
                if bulk_end > n:
                    pos = n
                    break
                pos, bulk_end = bulk_end, -1
            else:
                if pos >= n:
                    break
                if info is None and not stack and expected and "noreply" in expected[0].fields:
                    # CLIENT REPLY OFF: no reply comes; what follows is not framed
                    reason = expected.popleft().fields["switch"]
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
        if expected and (not push or "switch" in expected[0].fields):
            push = False
            switch = expected.popleft().fields.get("switch")
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


class RedisProtocol:
    """Redis (RESP2, RESP3) for the proxy: framers, ``match`` forms and ``error`` replies."""

    name = "redis"

    def request_framer(self) -> RedisRequestFramer:
        return RedisRequestFramer()

    def response_framer(self) -> RedisResponseFramer:
        return RedisResponseFramer()

    def parse_match(self, match: object, where: str) -> Matcher:
        return parse_match(match, where)

    def error_reply(self, options: Mapping[str, Any], request: MessageInfo) -> tuple[bytes, str]:
        return error_reply(options, request)

    def check_error_options(self, options: Mapping[str, Any], where: str) -> None:
        check_error_options(options, where)


PROTOCOL = RedisProtocol()
#: The same object, typed as the interface (mypy checks that it conforms).
REDIS: WireProtocol = PROTOCOL
