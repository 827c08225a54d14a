"""memcached's text protocol: where each command and reply starts and ends.

Sans-IO: bytes in, events out. A command is a line, plus a data block for
the storage commands and ``ms`` (its size is on the line, so it is counted,
never scanned). A reply is a line, plus data blocks after ``VALUE`` (up to
``END``) and ``VA``; ``stats`` and ``lru_crawler`` answer lines up to ``END``.
The binary protocol (first byte 0x80) drops the connection to plain relay.

Commands sent with ``noreply`` (and ``quit``) get no reply. The engine still
waits for one per forwarded request, so the response framer answers them
itself with an empty reply (a :class:`Head` and an :class:`End` without
bytes) as soon as it is fed again: before the next reply starts, or at EOF.
The fields carry ``noreply`` so that an engine may close those exchanges at
once instead. Meta commands in quiet mode (flag ``q``) get a reply only for
some outcomes (``mg``: a hit; ``ms``, ``md``, ``ma``: a failure); a reply
that cannot be theirs (``MN``, the code quiet mode suppresses, another
opaque token) moves on to the next command.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import re
from collections import deque
from collections.abc import Mapping
from typing import Any

from pytest_vaurien.echo import echo
from pytest_vaurien.errors import ConfigError
from pytest_vaurien.protocols.base import (
    End,
    Event,
    Framed,
    Head,
    Matcher,
    MessageInfo,
    Opaque,
    Part,
    Switched,
    WireProtocol,
)

__all__ = [
    "DEFAULT_REPLY",
    "MAX_LINE",
    "MEMCACHE",
    "PROTOCOL",
    "MemcacheMatcher",
    "MemcacheRequestFramer",
    "MemcacheResponseFramer",
    "check_error_options",
    "error_reply",
    "parse_match",
]

#: What the client gets from ``error`` when the rule gives no ``reply``.
DEFAULT_REPLY = "SERVER_ERROR injected by vaurien"
#: The longest line framed; a longer one drops the connection to plain relay.
MAX_LINE = 64 * 1024

_STORAGE = frozenset({"set", "add", "replace", "append", "prepend"})
_NOREPLY = _STORAGE | {"cas", "delete", "incr", "decr", "touch", "flush_all", "verbosity"}
_ONE_KEY = _NOREPLY - {"flush_all", "verbosity"} | {"mg", "ms", "md", "ma", "me"}
_META = frozenset({"mg", "ms", "md", "ma", "me", "mn"})
#: Commands answered by lines up to ``END`` (unless the first line is one of _SINGLE).
_LISTING = frozenset({"stats", "lru_crawler"})
_SINGLE = frozenset({"OK", "RESET", "END", "ERROR", "CLIENT_ERROR", "SERVER_ERROR", "BUSY"})
_ERRORS = frozenset({"ERROR", "CLIENT_ERROR", "SERVER_ERROR"})
#: What quiet mode suppresses, per meta command: a reply with this code is not theirs.
_QUIET_SUPPRESSES = {"mg": {"EN"}, "ms": {"HD"}, "md": {"HD"}, "ma": {"HD"}}
_EMPTY = MessageInfo("noreply", {"noreply": True})
_BINARY = 0x80
_LINE, _DATA, _OPAQUE = range(3)


class _LineFramer:
    """What both directions share: lines, counted data blocks, held bytes.

    Only an incomplete line is held back (at most :data:`MAX_LINE` bytes, its
    search resuming where it stopped); data blocks leave as they arrive.
    """

    __slots__ = ("_held", "_left", "_scan", "_state")

    _binary = _BINARY
    _what = "command"

    def __init__(self) -> None:
        self._held = bytearray()
        self._scan = 0
        self._state = _LINE
        self._left = 0  # data block bytes still to come

    def feed(self, data: bytes) -> list[Event]:
        """Events for ``data``; ``b""`` is the peer's EOF. Never raises."""
        if self._state == _OPAQUE:
            return [Opaque(bytes(data))] if data else []
        events: list[Event] = []
        if not data:
            self._eof(events)
            return events
        held = self._held
        buf: bytes | bytearray = data
        if held:
            held += data
            buf = held
        pos, n = 0, len(buf)
        while pos < n and self._state != _OPAQUE:
            if self._state == _DATA:
                take = min(self._left, n - pos)
                self._left -= take
                self._block(bytes(buf[pos : pos + take]), events)
                pos += take
                continue
            if buf[pos] == self._binary and not self._busy():
                self._fail(f"memcache binary protocol ({self._what})", bytes(buf[pos:]), events)
                pos = n
                break
            nl = buf.find(b"\n", self._scan if pos == 0 and buf is held else pos)
            if nl < 0:
                if n - pos > MAX_LINE:
                    self._fail(f"{self._what} line too long", bytes(buf[pos:]), events)
                    pos = n
                break
            line = bytes(buf[pos : nl + 1])
            pos = nl + 1
            self._line(line, events)
            if self._state == _OPAQUE and pos < n:
                events.append(Opaque(bytes(buf[pos:])))
                pos = n
        rest = n - pos
        if buf is held:
            del held[:pos]
        elif rest:
            self._held = bytearray(buf[pos:])
        self._scan = max(rest, 0)
        return events

    def _fail(self, reason: str, rest: bytes, events: list[Event]) -> None:
        events.append(Switched(reason, rest))
        self._state = _OPAQUE
        self._held = bytearray()

    def _eof(self, events: list[Event]) -> None:
        rest = bytes(self._held)
        if rest or self._state == _DATA or self._busy():
            events.append(Switched(f"closed mid-{self._what}", rest))
        self._state = _OPAQUE
        self._held = bytearray()

    def _busy(self) -> bool:
        """Whether a message is under way (a line now continues it)."""
        return self._state == _DATA

    def _line(self, line: bytes, events: list[Event]) -> None:
        raise NotImplementedError

    def _block(self, data: bytes, events: list[Event]) -> None:
        raise NotImplementedError


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace").rstrip("\r\n")


class MemcacheRequestFramer(_LineFramer):
    """Cuts a client's stream into commands: a line, and its data block if any."""

    __slots__ = ()

    def _line(self, line: bytes, events: list[Event]) -> None:
        tokens = _text(line).split()
        command = tokens[0].lower() if tokens else ""
        size = _data_size(command, tokens)
        events.append(Head(line, _request_info(command, tokens)))
        if size is None:
            events.append(End())
        else:
            self._state, self._left = _DATA, size + 2
            if not self._left:  # pragma: no cover - size + 2 is never 0
                events.append(End())

    def _block(self, data: bytes, events: list[Event]) -> None:
        if self._left:
            events.append(Part(data))
        else:
            events.append(End(data))
            self._state = _LINE


def _data_size(command: str, tokens: list[str]) -> int | None:
    """The size of the data block the command carries, as memcached reads it."""
    if (command in _STORAGE and len(tokens) in (5, 6)) or (
        command == "cas" and len(tokens) in (6, 7)
    ):
        size = tokens[4]
    elif command == "ms" and len(tokens) >= 3:
        size = tokens[2]
    else:
        return None
    return int(size) if size.isdigit() and len(size) < 12 else None


def _request_info(command: str, tokens: list[str]) -> MessageInfo:
    if command in ("get", "gets"):
        keys = tokens[1:]
    elif command in ("gat", "gats"):
        keys = tokens[2:]
    elif command in _ONE_KEY and len(tokens) > 1:
        keys = tokens[1:2]
    else:
        keys = []
    fields: dict[str, Any] = {"command": command}
    if command in _META:
        flags = tokens[3:] if command == "ms" else tokens[2:]
        if "b" in flags and keys:  # the key is base64: matched decoded
            try:
                keys = [base64.b64decode(keys[0], validate=True).decode("utf-8", "replace")]
            except (binascii.Error, ValueError):
                pass
        fields["quiet"] = "q" in flags
        if len(tokens) > 1:
            fields["wire_key"] = tokens[1]
        fields["opaque"] = next((f[1:] for f in flags if f[:1] == "O"), None)
    fields["noreply"] = (
        command in _NOREPLY and len(tokens) > 1 and tokens[-1] == "noreply"
    ) or command == "quit"
    fields["keys"] = tuple(keys)
    fields["key"] = keys[0] if keys else ""
    summary = command if not keys else f"{command} {keys[0][:60]}"
    if len(keys) > 1:
        summary += " ..."
    return MessageInfo(summary, fields)


class MemcacheResponseFramer(_LineFramer):
    """Cuts a memcached's stream into replies, told by :meth:`expect` what each answers."""

    __slots__ = ("_expected", "_in_reply", "_listing", "_va")

    _binary = _BINARY + 1
    _what = "reply"

    def __init__(self) -> None:
        super().__init__()
        self._expected: deque[MessageInfo] = deque()
        self._in_reply = False
        self._listing = False  # a stats listing: VALUE is a line like any other
        self._va = False  # the data block ends the reply (VA), or a line follows (VALUE)

    def expect(self, request: MessageInfo) -> None:
        """The next command forwarded, which the next reply answers (unless noreply)."""
        self._expected.append(request)

    def feed(self, data: bytes) -> list[Event]:
        """Events for ``data``, after the empty replies owed to noreply commands."""
        if self._in_reply or self._state == _OPAQUE:
            return super().feed(data)
        events: list[Event] = []
        self._owed(events)
        events += super().feed(data)
        return events

    def _busy(self) -> bool:
        return self._in_reply or self._state == _DATA

    def _owed(self, events: list[Event], quiet: bool = False) -> None:
        """The empty replies of the noreply commands next in line (and quiet ones at EOF)."""
        expected = self._expected
        while expected and (
            expected[0].fields.get("noreply") or (quiet and expected[0].fields.get("quiet"))
        ):
            expected.popleft()
            events += (Head(b"", _EMPTY), End())

    def _eof(self, events: list[Event]) -> None:
        if not self._busy():
            self._owed(events, quiet=True)
        super()._eof(events)

    def _line(self, line: bytes, events: list[Event]) -> None:
        tokens = _text(line).split()
        word = tokens[0] if tokens else ""
        if self._in_reply:  # a line of a VALUE or STAT listing
            if word == "VALUE" and not self._listing:
                self._data_line(line, tokens, events)
            elif word == "END" or word in _ERRORS:
                self._finish(End(line), events)
            else:
                events.append(Part(line))
            return
        request = self._answering(word, tokens, events)
        command = request.fields.get("command", "") if request else ""
        info = MessageInfo(word[:40], {"command": command, "unsolicited": request is None})
        events.append(Head(line, info))
        self._in_reply = True
        self._listing = command in _LISTING
        if word == "VALUE" and not self._listing:
            self._data_line(line, tokens, events, head=True)
        elif word == "VA" and len(tokens) > 1:
            self._va = True
            self._count(tokens[1], events)
        elif (command in _LISTING and word not in _SINGLE) or word in ("STAT", "ITEM"):
            pass  # lines up to END
        else:
            self._finish(End(), events)
        if command == "watch" and word == "OK" and self._state != _OPAQUE:
            self._fail("memcache watch", b"", events)

    def _answering(self, word: str, tokens: list[str], events: list[Event]) -> MessageInfo | None:
        """The request this reply answers, after those that get none (their empty replies)."""
        expected = self._expected
        while expected:
            fields = expected[0].fields
            if fields.get("noreply") or (
                fields.get("quiet") and not _quiet_owns(fields, word, tokens)
            ):
                expected.popleft()
                events += (Head(b"", _EMPTY), End())
                continue
            return expected.popleft()
        return None

    def _data_line(
        self, line: bytes, tokens: list[str], events: list[Event], head: bool = False
    ) -> None:
        if not head:
            events.append(Part(line))
        self._va = False
        self._count(tokens[3] if len(tokens) > 3 else "", events)

    def _count(self, size: str, events: list[Event]) -> None:
        if not (size.isdigit() and len(size) < 12):
            self._fail("bad data block size in a reply", b"", events)
            return
        self._state, self._left = _DATA, int(size) + 2

    def _block(self, data: bytes, events: list[Event]) -> None:
        if self._left:
            events.append(Part(data))
            return
        self._state = _LINE
        if self._va:  # the block ends the reply
            self._finish(End(data), events)
        else:
            events.append(Part(data))

    def _finish(self, end: End, events: list[Event]) -> None:
        events.append(end)
        self._in_reply = self._va = False
        self._owed(events)


def _quiet_owns(fields: Mapping[str, Any], word: str, tokens: list[str]) -> bool:
    """Whether a quiet meta command owns this reply (else it got none)."""
    command = fields.get("command", "")
    if (word == "MN" and command != "mn") or word in _QUIET_SUPPRESSES.get(command, ()):
        return False
    flags = {t[:1]: t[1:] for t in tokens[1:] if t}
    if "O" in flags and flags["O"] != fields.get("opaque"):
        return False  # the reply names another opaque token
    return "k" not in flags or flags["k"] == fields.get("wire_key", flags["k"])


_COMMAND = re.compile(r"[A-Za-z_][A-Za-z0-9_]*").fullmatch
_FORMS = (
    'expected "COMMAND" or "COMMAND KEY-GLOB", commands joined by "|", '
    'e.g. "set", "get|gets", "get user:*"'
)


class MemcacheMatcher:
    """A parsed memcache ``match``: command names and a glob on any key, both must hold."""

    __slots__ = ("_commands", "_key", "text")

    def __init__(self, commands: frozenset[str] | None, key: str | None, text: str) -> None:
        self._commands = commands
        self._key = re.compile(fnmatch.translate(key)).match if key is not None else None
        self.text = text

    def __call__(self, request: MessageInfo) -> bool:
        fields = request.fields
        if self._commands is not None and fields.get("command") not in self._commands:
            return False
        key = self._key
        return key is None or any(key(k) for k in fields.get("keys", ()))

    def __repr__(self) -> str:
        return f"MemcacheMatcher({self.text!r})"


def _commands(value: object, where: str) -> frozenset[str]:
    names = value.split("|") if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not names:
        raise ConfigError(f"{where}: command={echo(value)}: expected a name or a list of names")
    for name in names:
        if not isinstance(name, str) or not _COMMAND(name.strip()):
            raise ConfigError(f"{where}: {echo(name)} is not a memcache command name; {_FORMS}")
    return frozenset(name.strip().lower() for name in names)


def parse_match(match: object, where: str) -> Matcher:
    """A rule's ``match``: ``"get|gets user:*"`` or ``{"command": ..., "key": ...}``.

    :raises ConfigError: naming ``where`` and the bad piece.
    """
    if isinstance(match, str):
        parts = match.split()
        if not parts or len(parts) > 2:
            raise ConfigError(f"{where}: match={echo(match)}: {_FORMS}")
        key = parts[1] if len(parts) > 1 else None
        return MemcacheMatcher(_commands(parts[0], where), key, match)
    if isinstance(match, Mapping):
        unknown = sorted(str(k) for k in match if k not in ("command", "key"))
        if unknown:
            raise ConfigError(f"{where}: unknown match key(s) {unknown}; known: command, key")
        glob = match.get("key")
        if glob is not None and (not isinstance(glob, str) or not glob or " " in glob):
            raise ConfigError(f"{where}: key={echo(glob)}: expected a glob, e.g. 'user:*'")
        command = match.get("command")
        commands = _commands(command, where) if command is not None else None
        return MemcacheMatcher(commands, glob, repr(dict(match)))
    raise ConfigError(f"{where}: match={echo(match)}: {_FORMS}, or a dict with command, key")


def _reply(options: Mapping[str, Any], where: str) -> str:
    reply = options.get("reply") or DEFAULT_REPLY
    if not isinstance(reply, str) or "\r" in reply or "\n" in reply or not reply.strip():
        raise ConfigError(
            f"{where}: reply={echo(reply)}: expected one line, e.g. 'SERVER_ERROR out of memory'"
        )
    return reply.strip()


def check_error_options(options: Mapping[str, Any], where: str) -> None:
    """``reply`` must be one line of text (``CLIENT_ERROR ...``, ``SERVER_ERROR ...``)."""
    _reply(options, where)


def error_reply(options: Mapping[str, Any], request: MessageInfo) -> tuple[bytes, str]:
    """The ``reply`` line: memcached sends errors even to ``noreply`` commands, so do we."""
    reply = _reply(options, "error")
    return f"{reply}\r\n".encode(), reply.split()[0][:40]


PROTOCOL = Framed(
    "memcache",
    MemcacheRequestFramer,
    MemcacheResponseFramer,
    parse_match,
    error_reply,
    check_error_options,
)
#: The same object, typed as the interface (mypy checks that it conforms).
MEMCACHE: WireProtocol = PROTOCOL
