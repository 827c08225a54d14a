"""What a handler touches, as types: the socket view, its connection, the proxy.

A handler is called with two *socket views* (``client_sock``,
``backend_sock``). Each reads and writes one side of the connection and
counts the bytes, and both lead to the same :class:`ConnectionView`: where a
handler keeps per-connection state (``state_for``), runs helpers that die
with the connection (``spawn``), and ends it (``close``, ``reset_client``).
``BaseHandler.proxy`` is a :class:`ProxyInfo`.

These are :class:`typing.Protocol`\\ s: the engine's classes match them
structurally, and a handler written against them type-checks under
``mypy --strict`` without importing the engine (or gevent).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["RELAY", "Bytes", "ConnectionView", "ExchangeFault", "ProxyInfo", "SocketView", "Task"]

#: What a socket view sends: bytes, or a view into them (slices without a copy).
Bytes = bytes | bytearray | memoryview


@dataclass(frozen=True)
class ExchangeFault:
    """What a fault does to one exchange (a request and its reply) under a protocol.

    A handler's ``exchange_fault()`` returns one per exchange it is given;
    the proxy acts on it with the protocol's framing. A handler that
    returns ``None`` (the default) has its ``__call__`` run over the
    exchange's bytes instead, direction by direction. The default value
    relays the exchange untouched.
    """

    #: Answer with the protocol's error, built from these options (``status``,
    #: ``reply``, ...), instead of the backend's reply.
    answer: Mapping[str, Any] | None = None
    #: With ``answer``: forward the request first; the backend acts on it, and
    #: its reply is replaced by the error ("did my write happen?").
    after: bool = False
    #: Never forward the request, never answer it; the connection stays open.
    hold: bool = False
    #: Close the client's connection when the request arrives (``blackout``).
    close_at_request: bool = False
    #: Forward the request, then close the client's connection before the reply.
    close_before_reply: bool = False
    #: Seconds to wait before forwarding the request, and before relaying the reply.
    delay_request: float = 0.0
    delay_reply: float = 0.0


#: The exchange left alone (``dummy``, a spared ``transient``): the proxy may
#: relay it in the loop's callbacks, with no greenlet of its own.
RELAY = ExchangeFault()


class ProxyInfo(Protocol):
    """The proxy a handler runs in, as far as a handler needs to know it."""

    @property
    def name(self) -> str:
        """The proxy's name (its thread's name), for messages."""
        ...

    @property
    def distant(self) -> str:
        """The backend, as ``"HOST:PORT"``."""
        ...

    @property
    def seed(self) -> int:
        """The seed every random choice of this proxy derives from."""
        ...

    @property
    def read_size(self) -> int:
        """How many bytes one read takes at most."""
        ...

    @property
    def random(self) -> random.Random:
        """The proxy's own seeded random source (outside any connection)."""
        ...


class Task(Protocol):
    """A helper greenlet started by :meth:`ConnectionView.spawn`."""

    def kill(self, *args: Any, **kwargs: Any) -> None:
        """Stop it now (it would be killed with its connection anyway)."""
        ...


class ConnectionView(Protocol):
    """One relayed connection, as its handlers see it."""

    @property
    def index(self) -> int:
        """The connection's number on its proxy, from 0."""
        ...

    def state_for(self, handler: object) -> dict[Any, Any]:
        """A dict private to ``handler`` on this connection, made on first use.

        Where a handler keeps what it counts per connection (bytes sent, a
        timer, a writer), without clashing with another handler's keys.
        """
        ...

    def spawn(self, func: Callable[..., object], *args: object) -> Task:
        """Run ``func(*args)`` in a greenlet killed when the connection ends."""
        ...

    def close(self) -> None:
        """End the whole connection now: both sockets close."""
        ...

    def reset_client(self, reason: str) -> None:
        """Reset the client's side (an RST: it sees ECONNRESET), then end."""
        ...

    def random(self, stream: str) -> random.Random:
        """The seeded source of one stream (``"draw"``, ``"up"``, ``"down"``)."""
        ...


class SocketView(Protocol):
    """One side of a connection, as a handler reads and writes it.

    ``recv`` returns ``b""`` once that side closed (and sets ``eof``);
    ``send``/``sendall`` count the bytes that reached this side.
    """

    @property
    def connection(self) -> ConnectionView:
        """The connection this side belongs to."""
        ...

    @property
    def is_client(self) -> bool:
        """True for the client's side, False for the backend's."""
        ...

    @property
    def eof(self) -> bool:
        """True once ``recv`` returned ``b""``."""
        ...

    def recv(self, size: int) -> bytes: ...

    def send(self, data: Bytes) -> int: ...

    def sendall(self, data: Bytes) -> None: ...

    def shutdown(self, how: int) -> None: ...

    def close(self) -> None: ...

    def reset(self) -> None:
        """Close with an RST (``SO_LINGER`` 0): the peer sees ECONNRESET."""
        ...

    def fileno(self) -> int: ...
