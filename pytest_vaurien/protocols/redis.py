"""Redis framing (RESP2 and RESP3): where each command and reply starts and ends.

Sans-IO, bytes in, events out; every event carries the original bytes. A
command is one unit (``Head`` with the whole command, then ``End``); one
over :data:`BIG` leaves its ``Head`` once its name and first arguments are
read and streams the rest, so a large ``SET`` is never held whole.

Parsing resumes where the last feed stopped (linear in the bytes fed);
replies are framed by :mod:`redis_reply`, what a command names and the
``match`` forms are in :mod:`redis_match`. Pub/sub, ``MONITOR``, ``CLIENT REPLY`` and replication streams
drop the connection to plain relay after the command that asks for them;
what cannot be parsed does so at once: framing never breaks traffic.
"""

from __future__ import annotations

from typing import Any

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
from pytest_vaurien.protocols.redis_batch import commands, count_run
from pytest_vaurien.protocols.redis_match import (
    CONTAINERS,
    DEFAULT_REPLY,
    check_error_options,
    command_name,
    error_reply,
    first_key,
    parse_match,
)
from pytest_vaurien.protocols.redis_reply import RedisResponseFramer

__all__ = [
    "BIG",
    "DEFAULT_REPLY",
    "MAX_LINE",
    "PROTOCOL",
    "REDIS",
    "SUBSTITUTE",
    "RedisRequestFramer",
    "RedisResponseFramer",
    "check_error_options",
    "error_reply",
    "parse_match",
]

#: A command held whole up to this size; past it, its head leaves and the rest streams.
BIG = 64 * 1024
#: The longest inline command (Redis' own limit).
MAX_LINE = 64 * 1024
_COUNT_LINE = 24  # "*N" and "$N" lines of a command: digits only

#: What an ``EXEC`` becomes after a queued command the proxy rejected: the
#: server discards the transaction, the client is told it was aborted.
SUBSTITUTE = (
    b"*1\r\n$7\r\nDISCARD\r\n",
    b"-EXECABORT Transaction discarded because of previous errors.\r\n",
)

_HANDSHAKE = frozenset({"HELLO", "AUTH"})
# Commands after which the stream is no longer request, reply, request...
_SWITCH = {
    "SUBSCRIBE": "Redis pub/sub",
    "PSUBSCRIBE": "Redis pub/sub",
    "SSUBSCRIBE": "Redis pub/sub",
    "MONITOR": "Redis MONITOR",
    "SYNC": "Redis replication",
    "PSYNC": "Redis replication",
}
_END = End()


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


class RedisRequestFramer:
    """Cuts a client's stream into commands: multibulk arrays and inline lines.

    Keeps what the engine needs between commands: whether the handshake is
    over (``SELECT`` is part of it only before any other command) and the
    open ``MULTI``, for :meth:`answered`.

    With :attr:`batch` set (by the engine, feed by feed), a run of ordinary
    multibulk commands leaves as one :class:`Batch` (see :mod:`redis_batch`);
    the commands that need their own events (the handshake, ``MULTI``,
    ``EXEC``, a switch, a long value, an inline command) still get them, in order.
    """

    __slots__ = (
        "_args", "_bulk_end", "_left", "_opaque", "_pending", "_pos", "_sent",
        "_started", "_txn", "batch",
    )  # fmt: skip

    def __init__(self) -> None:
        #: Emit runs of ordinary commands as one :class:`Batch` each.
        self.batch = False
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
        events, self._pending = frame_held(pending, data, self._run)
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
        span = commands() if self.batch else None
        first = True  # a feed's first batch: findall alone may do (count_run)
        while True:
            if left == 0:  # a command starts at pos
                if pos >= n:
                    break
                if span is not None and buf[pos] == 42:
                    # a run of ordinary commands: framed in one pass
                    end, batched, _ = count_run(span, buf, pos, first)
                    first = False
                    if batched:
                        data = (
                            buf
                            if mark == 0 and end == n and isinstance(buf, bytes)
                            else bytes(buf[mark:end])
                        )
                        events.append(Batch(data, batched))
                        mark = pos = end
                        self._started = True
                        continue
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
            elif bulk_end < 0:  # "$N" lines and their bytes, as long as whole ones are here
                sent, find, append = self._sent, buf.find, args.append
                while left:
                    if pos >= n:
                        break
                    if buf[pos] != 36:
                        return self._fail("expected '$' in a command", buf, mark, events)
                    nl = find(b"\r\n", pos + 1, pos + _COUNT_LINE)
                    if nl < 0:
                        if n - pos >= _COUNT_LINE:
                            return self._fail("bad bulk length", buf, mark, events)
                        break
                    length = buf[pos + 1 : nl]
                    if not length.isdigit():
                        return self._fail("bad bulk length", buf, mark, events)
                    end = nl + 2 + int(length)
                    if end + 2 > n:  # held until the rest comes, unless the head has left
                        pos, bulk_end = n if sent else nl + 2, end + 2
                        break
                    if not sent:
                        append(bytes(buf[nl + 2 : end]))
                    pos = end + 2
                    left -= 1
                else:
                    switch = self._command(args, buf, mark, pos, events)
                    if switch:
                        return self._switched(switch, buf, pos, events)
                    mark = pos
                    continue
                break
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
        command = command_name(args[0])
        sub = ""
        if command in CONTAINERS and len(args) > 1:
            sub = command_name(args[1])
        fields: dict[str, Any] = {
            "command": command,
            "key": first_key(command, args),
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
            mode = command_name(args[2])
            if mode in ("OFF", "SKIP"):
                switch, fields["noreply"] = f"Redis CLIENT REPLY {mode}", True
        if switch is not None:
            fields["switch"] = switch
        return MessageInfo(f"{command} {sub}" if sub else command, fields)


PROTOCOL = Framed(
    "redis", RedisRequestFramer, RedisResponseFramer, parse_match, error_reply, check_error_options
)
#: The same object, typed as the interface (mypy checks that it conforms).
REDIS: WireProtocol = PROTOCOL
