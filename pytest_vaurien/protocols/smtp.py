"""SMTP (RFC 5321): where each command, message body and reply starts and ends.

Sans-IO: bytes in, events out. A command is a line; a reply is its lines up
to the one without a hyphen after the code. The server speaks first: its
greeting is framed as a reply to no request, which the engine relays. After
``354`` the client's message is a request of its own, verb ``BODY``, up to
the line that is a single dot; ``BDAT`` carries a chunk of the size on its
line, counted. After ``220`` to ``STARTTLS`` both sides drop to plain relay.

Whether the bytes after ``DATA`` are a body, or after ``STARTTLS`` are TLS,
depends on the server's reply: the two framers of one connection share a
:class:`Session`, made by :meth:`SmtpProtocol.framers`. The client waits for that reply before it sends those
bytes, so the response framer has always seen it by then; bytes that come
before it drop the connection to plain relay rather than guess.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping
from typing import Any

from pytest_vaurien.echo import echo
from pytest_vaurien.errors import ConfigError
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

__all__ = [
    "DEFAULT_CODE",
    "DEFAULT_TEXT",
    "MAX_LINE",
    "PROTOCOL",
    "SMTP",
    "Session",
    "SmtpMatcher",
    "SmtpProtocol",
    "SmtpRequestFramer",
    "SmtpResponseFramer",
    "check_error_options",
    "error_reply",
    "parse_match",
]

DEFAULT_CODE = 451
DEFAULT_TEXT = "4.3.0 injected by vaurien"
#: The longest command or reply line framed; longer drops to plain relay.
MAX_LINE = 64 * 1024

_HANDSHAKE = frozenset({"EHLO", "HELO", "LHLO"})
_REPLY_LINE = re.compile(rb"[2-5][0-9]{2}(?:[ -]|\r?\n)").match
_LINE, _BODY, _CHUNK, _OPAQUE = range(4)
_UNKNOWN, _YES, _NO = range(3)
_BODY_INFO = MessageInfo("BODY", {"verb": "BODY", "arg": "", "error_after": True})


class Session:
    """What the two framers of one connection share: the server's verdicts."""

    __slots__ = ("continuation", "data", "tls")

    def __init__(self) -> None:
        self.data = _NO  # after DATA: does a body follow (354)?
        self.tls = _NO  # after STARTTLS: does TLS follow (220)?
        self.continuation = False  # the last reply was 334: the next line answers it


class _Framer:
    """Lines, held back only while incomplete (at most :data:`MAX_LINE` bytes)."""

    __slots__ = ("_held", "_scan", "_state", "session")

    _what = "command"

    def __init__(self, session: Session) -> None:
        self.session = session
        self._held = bytearray()
        self._scan = 0
        self._state = _LINE

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
            if self._state != _LINE:
                pos = self._run(buf, pos, events)
                continue
            if self._verdict(buf, pos, events):
                continue  # the server's reply says what these bytes are
            nl = buf.find(b"\n", self._scan if pos == 0 and buf is held else pos)
            if nl < 0:
                if n - pos > MAX_LINE:
                    self._fail(f"{self._what} line too long", bytes(buf[pos:]), events)
                    pos = n
                break
            pos = self._line(buf, pos, nl + 1, events)
        if self._state == _OPAQUE and pos < n:
            events.append(Opaque(bytes(buf[pos:])))
            pos = n
        rest = n - pos
        if buf is held:
            del held[:pos]
        elif rest:
            self._held = bytearray(buf[pos:])
        self._scan = rest
        return events

    def _fail(self, reason: str, rest: bytes, events: list[Event]) -> None:
        events.append(Switched(reason, rest))
        self._state = _OPAQUE
        self._held = bytearray()

    def _eof(self, events: list[Event]) -> None:
        rest = bytes(self._held)
        if rest or self._busy():
            events.append(Switched(f"closed mid-{self._what}", rest))
        self._state = _OPAQUE
        self._held = bytearray()

    def _busy(self) -> bool:
        return self._state != _LINE

    def _verdict(self, buf: bytes | bytearray, pos: int, events: list[Event]) -> bool:
        """Whether the state changed before a line at ``pos`` (a body, TLS)."""
        return False

    def _line(self, buf: bytes | bytearray, start: int, end: int, events: list[Event]) -> int:
        raise NotImplementedError

    def _run(self, buf: bytes | bytearray, pos: int, events: list[Event]) -> int:
        raise NotImplementedError


class SmtpRequestFramer(_Framer):
    """Cuts a client's stream into commands, message bodies and BDAT chunks."""

    __slots__ = ("_in_body", "_left", "_tail")

    def __init__(self, session: Session | None = None) -> None:
        super().__init__(session or Session())
        self._left = 0  # BDAT chunk bytes still to come
        self._tail = b""  # the body's last bytes, to find a terminator split across feeds
        self._in_body = False  # the body's Head was sent

    def answered(self, request: MessageInfo) -> None:
        """The proxy answered ``request`` itself: no body, no TLS follows it."""
        verb = request.fields.get("verb")
        if verb == "DATA":
            self.session.data = _NO
        elif verb == "STARTTLS":
            self.session.tls = _NO

    def _verdict(self, buf: bytes | bytearray, pos: int, events: list[Event]) -> bool:
        session = self.session
        if session.data == _NO and session.tls == _NO:
            return False
        waited = "DATA" if session.data != _NO else "STARTTLS"
        verdict = session.data if session.data != _NO else session.tls
        session.data = session.tls = _NO
        if verdict == _YES and waited == "DATA":
            self._state, self._tail, self._in_body = _BODY, b"\n", False
        elif verdict == _YES:
            self._fail("SMTP STARTTLS", b"", events)
        elif verdict == _UNKNOWN:
            self._fail(f"SMTP: client sent before the reply to {waited}", b"", events)
        return verdict != _NO

    def _line(self, buf: bytes | bytearray, start: int, end: int, events: list[Event]) -> int:
        line = bytes(buf[start:end])
        events.append(Head(line, self._info(line)))
        if self._state == _CHUNK and self._left:
            return end
        self._state = _LINE
        events.append(End())
        return end

    def _info(self, line: bytes) -> MessageInfo:
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if self.session.continuation:  # a line answering 334 (AUTH): never shown
            self.session.continuation = False
            return MessageInfo("AUTH ...", {"verb": "AUTH", "arg": "", "continuation": True})
        verb, _, arg = text.strip().partition(" ")
        verb, arg = verb.upper(), arg.strip()
        fields: dict[str, Any] = {"verb": verb, "arg": arg}
        shown = arg
        if verb in _HANDSHAKE:
            fields["handshake"] = True
        elif verb == "DATA":
            self.session.data = _UNKNOWN
            fields["error_after"] = False  # a 354 replaced would leave the server in its data phase
        elif verb == "STARTTLS":
            self.session.tls = _UNKNOWN
            fields["error_after"] = False
        elif verb == "AUTH":
            shown = arg.split(" ", 1)[0]  # the mechanism, not the credentials
        elif verb == "BDAT":
            size = arg.split(" ", 1)[0]
            if size.isdigit() and len(size) < 16 and int(size):
                self._state, self._left = _CHUNK, int(size)
        summary = f"{verb} {shown[:60]}" if shown else verb
        return MessageInfo(summary, fields)

    def _run(self, buf: bytes | bytearray, pos: int, events: list[Event]) -> int:
        if self._state == _CHUNK:
            take = min(self._left, len(buf) - pos)
            self._left -= take
            data = bytes(buf[pos : pos + take])
            if self._left:
                events.append(Part(data))
            else:
                events.append(End(data))
                self._state = _LINE
            return pos + take
        # the body, up to a line that is a single dot: found across feeds
        # through the last three bytes seen
        tail = self._tail
        probe = tail + bytes(buf[pos : pos + 3])
        found = probe.find(b"\n.\r\n")
        if found >= 0:
            end = pos + found + 4 - len(tail)
        else:
            found = buf.find(b"\n.\r\n", pos)
            end = found + 4 if found >= 0 else len(buf)
        data = bytes(buf[pos:end])
        self._tail = (tail + data[-3:])[-3:]
        if not self._in_body:
            self._in_body = True
            events.append(Head(data, _BODY_INFO))
            data = b""
            if found < 0:
                return end
        if found >= 0:
            events.append(End(data))
            self._state, self._in_body = _LINE, False
        else:
            events.append(Part(data))
        return end


class SmtpResponseFramer(_Framer):
    """Cuts a server's stream into replies: the greeting, then one per request."""

    __slots__ = ("_expected", "_greeted", "_in_reply", "_switch")

    _what = "reply"

    def __init__(self, session: Session | None = None) -> None:
        super().__init__(session or Session())
        self._expected: deque[MessageInfo] = deque()
        self._greeted = False
        self._in_reply = False
        self._switch = False  # STARTTLS accepted: plain relay after this reply

    def expect(self, request: MessageInfo) -> None:
        """The next request forwarded, which the next reply answers."""
        self._expected.append(request)

    def _busy(self) -> bool:
        return self._in_reply

    def _line(self, buf: bytes | bytearray, start: int, end: int, events: list[Event]) -> int:
        line = bytes(buf[start:end])
        if not _REPLY_LINE(line):
            self._fail("not an SMTP reply", bytes(buf[start:]), events)
            return len(buf)
        last = line[3:4] != b"-"
        if self._in_reply:
            events.append(End(line) if last else Part(line))
        else:
            events.append(Head(line, self._info(line)))
            self._in_reply = True
            if last:
                events.append(End())
        if last:
            self._in_reply = False
            if self._switch:
                self._fail("SMTP STARTTLS", bytes(buf[end:]), events)
                return len(buf)
        return end

    def _info(self, line: bytes) -> MessageInfo:
        code = int(line[:3])
        request = None
        if self._greeted:
            request = self._expected.popleft() if self._expected else None
        self._greeted = True  # the first reply is the greeting, answering nothing
        session = self.session
        session.continuation = code == 334
        verb = request.fields.get("verb") if request is not None else None
        if verb == "DATA":
            session.data = _YES if code == 354 else _NO
        elif verb == "STARTTLS":
            session.tls = _YES if code == 220 else _NO
            self._switch = code == 220
        return MessageInfo(str(code), {"code": code, "unsolicited": request is None})


_VERB = re.compile(r"[A-Za-z]+").fullmatch
_FORMS = (
    'expected "VERB" or "VERB ARG-REGEX", verbs joined by "|", '
    'e.g. "RCPT", "MAIL|RCPT", "RCPT <.*@example.org>"'
)


class SmtpMatcher:
    """A parsed SMTP ``match``: verbs and a regex searched in the argument."""

    __slots__ = ("_arg", "_verbs", "text")

    def __init__(self, verbs: frozenset[str] | None, arg: re.Pattern[str] | None, text: str):
        self._verbs = verbs
        self._arg = arg
        self.text = text

    def __call__(self, request: MessageInfo) -> bool:
        fields = request.fields
        if self._verbs is not None and fields.get("verb") not in self._verbs:
            return False
        return self._arg is None or self._arg.search(str(fields.get("arg", ""))) is not None

    def __repr__(self) -> str:
        return f"SmtpMatcher({self.text!r})"


def _verbs(value: object, where: str) -> frozenset[str]:
    names = value.split("|") if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not names:
        raise ConfigError(f"{where}: verb={echo(value)}: expected a verb or a list of verbs")
    for name in names:
        if not isinstance(name, str) or not _VERB(name.strip()):
            raise ConfigError(f"{where}: {echo(name)} is not an SMTP verb; {_FORMS}")
    return frozenset(name.strip().upper() for name in names)


def _regex(value: object, where: str) -> re.Pattern[str]:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: arg={echo(value)}: expected a regex, e.g. '<.*@example.org>'")
    try:
        return re.compile(value)
    except re.error as error:
        raise ConfigError(f"{where}: arg={echo(value)} is not a regex: {error}") from None


def parse_match(match: object, where: str) -> Matcher:
    """A rule's ``match``: ``"RCPT <.*@example.org>"`` or ``{"verb": ..., "arg": ...}``.

    :raises ConfigError: naming ``where`` and the bad piece.
    """
    if isinstance(match, str):
        verbs, _, arg = match.strip().partition(" ")
        if not verbs:
            raise ConfigError(f"{where}: match={echo(match)}: {_FORMS}")
        regex = _regex(arg.strip(), where) if arg.strip() else None
        return SmtpMatcher(_verbs(verbs, where), regex, match)
    if isinstance(match, Mapping):
        unknown = sorted(str(k) for k in match if k not in ("verb", "arg"))
        if unknown:
            raise ConfigError(f"{where}: unknown match key(s) {unknown}; known: verb, arg")
        verb, regex = match.get("verb"), match.get("arg")
        return SmtpMatcher(
            _verbs(verb, where) if verb is not None else None,
            _regex(regex, where) if regex is not None else None,
            repr(dict(match)),
        )
    raise ConfigError(f"{where}: match={echo(match)}: {_FORMS}, or a dict with verb, arg")


def _reply(options: Mapping[str, Any], where: str) -> tuple[int, str]:
    code = options.get("code", DEFAULT_CODE)
    if isinstance(code, str) and code.strip().isdigit():
        code = int(code)
    if isinstance(code, bool) or not isinstance(code, int) or not 400 <= code <= 599:
        raise ConfigError(f"{where}: code={echo(code)}: expected an SMTP error code, 400 to 599")
    text = options.get("text") or DEFAULT_TEXT
    if not isinstance(text, str) or "\r" in text or "\n" in text:
        raise ConfigError(f"{where}: text={echo(text)}: expected one line of text")
    return code, text.strip()


def check_error_options(options: Mapping[str, Any], where: str) -> None:
    """``code`` must be an error code (4xx, 5xx), ``text`` one line."""
    _reply(options, where)


def error_reply(options: Mapping[str, Any], request: MessageInfo) -> tuple[bytes, str]:
    """``451 4.3.0 injected by vaurien``: one reply line, whatever the request."""
    code, text = _reply(options, "error")
    return f"{code} {text}\r\n".encode(), str(code)


class SmtpProtocol:
    """SMTP for the proxy: framers sharing a session, ``match`` forms, ``error`` replies."""

    name = "smtp"

    def framers(self) -> tuple[SmtpRequestFramer, SmtpResponseFramer]:
        """A connection's two framers, sharing one session."""
        requests = SmtpRequestFramer()
        return requests, SmtpResponseFramer(requests.session)

    def request_framer(self) -> SmtpRequestFramer:
        """A request framer alone, with a session of its own."""
        return SmtpRequestFramer()

    def response_framer(self) -> SmtpResponseFramer:
        """A response framer alone, with a session of its own."""
        return SmtpResponseFramer(None)

    def parse_match(self, match: object, where: str) -> Matcher:
        return parse_match(match, where)

    def error_reply(self, options: Mapping[str, Any], request: MessageInfo) -> tuple[bytes, str]:
        return error_reply(options, request)

    def check_error_options(self, options: Mapping[str, Any], where: str) -> None:
        check_error_options(options, where)


PROTOCOL = SmtpProtocol()
#: The same object, typed as the interface (mypy checks that it conforms).
SMTP: WireProtocol = PROTOCOL
