"""What every protocol module provides: sans-IO framers, matching, error replies.

A *framer* is fed the bytes of one direction as they arrive and returns
events; it never touches a socket (h11's lesson: bytes in, events out,
tested without sockets). Every event carries the exact original bytes it
covers, so that joining ``event.data`` over all events gives back what was
fed, byte for byte: the proxy forwards those bytes untouched.

What the engine reads in a request's ``MessageInfo.fields`` besides what
matching needs:

- ``handshake`` (bool): a message of the protocol's handshake (Redis
  ``HELLO``, ``AUTH``): relayed outside the rules - no unit, no count, no
  record - unless a rule's ``match`` names it.
- ``substitute`` (``(bytes, bytes | None)``): send these bytes to the backend
  instead of the request (whose body is dropped), and answer the client with
  the second item instead of the backend's reply if it is not ``None``; the
  protocol keeps both sides in step this way (Redis: ``EXEC`` after a command
  the proxy rejected becomes ``DISCARD``, answered ``-EXECABORT``).

Optional hooks: a request framer's ``answered(info)`` is called when the
proxy answered that request itself (it never reached the backend); a
protocol's ``error_request(options, info)`` may return a request that makes
the *backend* raise the error (inside a PostgreSQL transaction, so that
server and client agree it failed), whose reply then goes to the client; or a
tuple ``(request, reply)``: the request puts the backend in the state the
error implies (MySQL: ``ROLLBACK`` for a deadlock), and the client gets the
protocol's error (``reply``, if not empty, instead of ``error_reply``'s); a protocol's ``closes_after_error(options) -> bool``
says that an error the proxy answered ends the session (PostgreSQL FATAL):
the proxy closes the connection after it.

A request framer cuts the client's stream into requests; a response framer
cuts the backend's stream into the replies answering them, told by
``expect()`` which request each reply answers (an HTTP reply to HEAD has no
body). When a framer meets what it cannot parse, or a protocol switch
(Upgrade, CONNECT, TLS), it emits :class:`Switched` and from then on only
:class:`Opaque` events: framing never breaks traffic.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

__all__ = [
    "Batch",
    "End",
    "Event",
    "Framed",
    "Head",
    "Matcher",
    "MessageInfo",
    "Opaque",
    "Part",
    "RequestFramer",
    "ResponseFramer",
    "Switched",
    "WireProtocol",
]


@dataclass(frozen=True)
class MessageInfo:
    """What the proxy knows of one request or reply once its head is parsed.

    ``summary`` is for records and reports (``"POST /payments/7"``,
    ``"503"``); ``fields`` holds what matching needs (for HTTP: ``method``,
    ``path``, ``headers``), protocol by protocol.
    """

    summary: str
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Head:
    """A message starts; ``data`` is its head (HTTP: request or status line
    and headers). For a reply, ``interim`` marks a 1xx that a final reply
    will follow."""

    data: bytes
    info: MessageInfo
    interim: bool = False


@dataclass(frozen=True)
class Part:
    """More bytes of the current message (its body, or a part of it)."""

    data: bytes


@dataclass(frozen=True)
class End:
    """The current message is complete; ``data`` is its last bytes, if any
    (HTTP: the final ``0\\r\\n\\r\\n`` of a chunked body)."""

    data: bytes = b""


@dataclass(frozen=True)
class Switched:
    """From here on the stream is not framed, for ``reason``."""

    reason: str
    data: bytes = b""


@dataclass(frozen=True)
class Batch:
    """``count`` whole messages at once that need nothing but relaying: no
    handshake, no transaction, no switch, no summary. Each is a unit (takes
    an ordinal) unless ``units`` says how many are: requests that pair with
    replies but are no unit of their own (PostgreSQL's Sync) count in
    ``count`` only.

    Only a framer whose ``batch`` attribute the engine set emits these (for
    requests, while every unit of the plan in force is relayed untouched and
    no one reads the exchange records; for replies, up to ``batch_limit``
    replies answering such requests). Framing a pipeline in one pass of the
    C regex engine instead of a Python loop per message is what makes a
    protocol mode nearly as cheap as ``tcp``.
    """

    data: bytes
    count: int
    units: int | None = None


@dataclass(frozen=True)
class Opaque:
    """Bytes after a switch: relayed as they are, part of no message."""

    data: bytes


Event = Head | Part | End | Switched | Opaque | Batch


class RequestFramer(Protocol):
    """Cuts the client's byte stream into requests."""

    def feed(self, data: bytes) -> list[Event]:
        """Events for ``data``; ``b""`` means the client closed (EOF)."""
        ...


class ResponseFramer(Protocol):
    """Cuts the backend's byte stream into replies, in request order."""

    def expect(self, request: MessageInfo) -> None:
        """The next unanswered request, in the order the client sent them."""
        ...

    def feed(self, data: bytes) -> list[Event]:
        """Events for ``data``; ``b""`` means the backend closed (EOF), which
        ends a reply delimited by the connection's close."""
        ...


class Matcher(Protocol):
    """A rule's ``match``, parsed for one protocol."""

    def __call__(self, request: MessageInfo) -> bool: ...


class WireProtocol(Protocol):
    """One protocol module's entry point (``pytest_vaurien.protocols.http.HTTP``)."""

    @property
    def name(self) -> str: ...

    def framers(self) -> tuple[RequestFramer, ResponseFramer]:
        """The two framers of one connection (sharing what they must, such as
        PostgreSQL's transaction state or SMTP's DATA)."""
        ...

    def request_framer(self) -> RequestFramer: ...

    def response_framer(self) -> ResponseFramer: ...

    def parse_match(self, match: object, where: str) -> Matcher:
        """A rule's ``match`` (string short form or dict), checked.

        :raises ConfigError: naming ``where``, the bad piece and what is expected.
        """
        ...

    def check_error_options(self, options: Mapping[str, Any], where: str) -> None:
        """Check the ``error`` fault's options for this protocol, before any fires.

        :raises ConfigError: naming ``where`` and the bad option.
        """
        ...

    def error_reply(self, options: Mapping[str, Any], request: MessageInfo) -> tuple[bytes, str]:
        """The protocol's own error answering ``request`` and its summary
        (``b"HTTP/1.1 503 ..."``, ``"503"``), from the ``error`` handler's options."""
        ...


@dataclass(frozen=True)
class Framed:
    """A protocol whose framers share nothing: its parts, as plain functions.

    What most protocol modules export as ``PROTOCOL`` (HTTP, Redis,
    memcache): one line instead of a class that only delegates.
    """

    name: str
    request_framer: Callable[[], RequestFramer]
    response_framer: Callable[[], ResponseFramer]
    parse_match: Callable[[object, str], Matcher]
    error_reply: Callable[[Mapping[str, Any], MessageInfo], tuple[bytes, str]]
    check_error_options: Callable[[Mapping[str, Any], str], None]

    def framers(self) -> tuple[RequestFramer, ResponseFramer]:
        """A connection's framers: here they share nothing."""
        return self.request_framer(), self.response_framer()


class SharedSession(Protocol):
    """What two framers of one connection share, at the least: why the
    connection went to plain relay, as either side saw it."""

    switched: str | None


S = TypeVar("S", bound=SharedSession)


class SessionFramer(Generic[S]):
    """A framer of a pair sharing a session (PostgreSQL, MySQL): its held
    bytes, and the switch to plain relay that the other side sees too."""

    def __init__(self, session: S) -> None:
        self.session = session
        self._buf = bytearray()
        self._opaque = False

    def _switch(self, reason: str, data: bytes, events: list[Event]) -> None:
        if self.session.switched is None:
            self.session.switched = reason
        self._opaque = True
        self._buf = bytearray()
        events.append(Switched(reason, data))


def frame_held(
    held: bytearray, data: bytes, run: Callable[[bytes | bytearray, list[Event]], int]
) -> tuple[list[Event], bytearray]:
    """Frame the held bytes, then ``data``, with ``run`` (which appends its
    events and returns how many bytes they cover); returns the events and
    the bytes to hold until the next feed. With nothing held, ``data`` is
    framed as it is, with no copy."""
    buf: bytes | bytearray = data
    if held:
        held += data
        buf = held
    events: list[Event] = []
    mark = run(buf, events)
    if mark >= len(buf):
        return events, bytearray() if held else held
    if buf is held:
        del held[:mark]
        return events, held
    return events, bytearray(memoryview(buf)[mark:])
