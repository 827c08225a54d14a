"""Connecting to the distant: resolved once at start, each address in turn.

A DNS round trip per connection through gevent's thread-pool resolver cost
more than the relay itself; the name is resolved when the proxy starts and
each connection tries the addresses in the resolver's order, as
``socket.create_connection`` would (``localhost`` may give ``::1`` first
while the backend listens on 127.0.0.1 only).
"""

from __future__ import annotations

import _socket
import errno
import socket
from typing import Any

import gevent.socket

from pytest_vaurien.address import Address

__all__ = ["CONNECTING", "Upstream", "start_connect"]

#: Made non-blocking by ``socket()`` itself, one system call fewer (Linux).
_NONBLOCK: int = getattr(socket, "SOCK_NONBLOCK", 0)
#: What a non-blocking connect answers while the handshake is under way.
CONNECTING = frozenset({errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK})


class Upstream:
    """The backend's address, its resolved forms and how long a connect may take."""

    def __init__(self, address: Address, connect_timeout: float) -> None:
        self.address = address
        self.connect_timeout = connect_timeout
        #: ``(family, sockaddr)`` for each address of the distant; ``None``
        #: (resolve per connection) when the name did not resolve at start.
        self.resolved: list[tuple[int, Any]] | None = None

    def resolve(self) -> None:
        """Resolve now; a name that does not resolve is tried per connection."""
        numeric = _numeric(self.address)
        if numeric is not None:  # an IP address: no resolver call (each start pays it)
            self.resolved = [numeric]
            return
        try:
            infos = socket.getaddrinfo(self.address[0], self.address[1], type=socket.SOCK_STREAM)
        except OSError:
            self.resolved = None
            return
        self.resolved = [(family, sockaddr) for family, _, _, _, sockaddr in infos]

    def connect(self) -> gevent.socket.socket:
        """A socket connected to the distant, resolved now, in a greenlet: for
        a name that did not resolve at start (a connection to a resolved
        address connects in loop callbacks, with :func:`start_connect`).

        :raises OSError: from the last address tried (e.g. refused).
        """
        return gevent.socket.create_connection(self.address, timeout=self.connect_timeout)


def _numeric(address: Address) -> tuple[int, Any] | None:
    """``(family, sockaddr)`` for a literal IPv4 or IPv6 address, else None."""
    host, port = address
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return (family, (host, port)) if family == socket.AF_INET else (family, (host, port, 0, 0))
    return None


def start_connect(family: int, sockaddr: Any) -> tuple[_socket.socket, int]:
    """A plain non-blocking socket whose connect to ``sockaddr`` has begun,
    and what ``connect`` said (0, an errno of ``CONNECTING``, or a failure).

    :raises OSError: when no socket can be made (out of descriptors).
    """
    sock = _socket.socket(family, socket.SOCK_STREAM | _NONBLOCK)
    try:
        if not _NONBLOCK:  # pragma: no cover - not Linux
            sock.setblocking(False)
        result: int = sock.connect_ex(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock, result
