"""One side of a connection as handlers see it: a gevent socket that counts.

``Endpoint`` matches :class:`pytest_vaurien.handlers.context.SocketView`.
On the fast path it holds the plain non-blocking OS socket (no gevent
socket, no watchers of its own: a connection relayed in loop callbacks never
needs them); ``green()`` wraps it in a gevent socket the moment a handler
or a pump does.
"""

from __future__ import annotations

import _socket
import socket
import struct
from typing import Any

import gevent.socket

from pytest_vaurien.handlers.context import Bytes, ConnectionView
from pytest_vaurien.records import ConnectionRecord

__all__ = ["Endpoint", "os_socket", "reset_socket"]

_LINGER_RESET = struct.pack("ii", 1, 0)


def reset_socket(sock: _socket.socket | gevent.socket.socket) -> None:
    """Close ``sock`` with an RST (``SO_LINGER`` 0): the peer sees ECONNRESET."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    except OSError:
        pass
    sock.close()


def os_socket(sock: object) -> _socket.socket | None:
    """The non-blocking OS socket: ``sock`` itself, or the one under a gevent
    socket, where gevent has kept it for years (``_sock``); ``None`` if that
    ever changes."""
    if isinstance(sock, _socket.socket):
        return sock
    raw = getattr(sock, "_sock", None)
    return raw if isinstance(raw, _socket.socket) else None


class Endpoint:
    """One side's socket: ``recv`` remembers EOF (so the relay can tell a
    half-close from a handler's decision to close) and ``send``/``sendall``
    count the bytes that reached this side in the connection's record.
    """

    __slots__ = (
        "_raw_send",
        "connection",
        "eof",
        "is_client",
        "pending",
        "record",
        "sock",
        "was_reset",
    )

    def __init__(
        self,
        sock: _socket.socket | gevent.socket.socket,
        connection: ConnectionView,
        record: ConnectionRecord,
        is_client: bool,
    ) -> None:
        self.sock = sock
        self.connection = connection
        self.record = record
        self.is_client = is_client
        self.eof = False
        #: The peer of this side reset its connection (ECONNRESET): the relay
        #: resets the other side too, so a crash is not passed on as a clean EOF.
        self.was_reset = False
        raw = os_socket(sock)
        #: The non-blocking OS socket's ``send``: gevent's ``sendall`` asks the
        #: kernel for the send buffer's size on every call, one system call a
        #: chunk more than a message needs.
        self._raw_send = raw.send if raw is not None else None
        #: Bytes read but not yet handled (the fast path read them just as the
        #: plan changed); the next ``recv`` returns them first.
        self.pending = b""

    def green(self) -> None:
        """Make ``sock`` a gevent socket (handlers and pumps wait on it), if
        it is still the plain one the fast path had."""
        sock = self.sock
        if isinstance(sock, _socket.socket):
            self.sock = gevent.socket.socket(sock.family, sock.type, sock.proto, sock.detach())
            raw = os_socket(self.sock)
            self._raw_send = raw.send if raw is not None else None

    def recv(self, size: int, *flags: int) -> bytes:
        if self.pending:
            held, self.pending = self.pending[:size], self.pending[size:]
            return held
        try:
            data: bytes = self.sock.recv(size, *flags)
        except ConnectionResetError:
            self.was_reset = True
            raise
        if not data:
            self.eof = True
        return data

    def sendall(self, data: Bytes, *flags: int) -> None:
        try:
            sent = 0
            if self._raw_send is not None and not flags:
                try:
                    sent = self._raw_send(data)  # most often all of it, at once
                except BlockingIOError:
                    sent = 0
            if sent < len(data):  # the rest waits for room, as gevent does
                self.sock.sendall(memoryview(data)[sent:], *flags)
        except ConnectionResetError:
            self.was_reset = True
            raise
        self._count(len(data))

    def send_now(self, data: bytes) -> int:
        """Send what the socket takes at once, without waiting (from a loop callback)."""
        if self._raw_send is None:  # pragma: no cover - other gevent internals
            return 0
        try:
            sent: int = self._raw_send(data)
        except BlockingIOError:
            return 0
        except ConnectionResetError:
            self.was_reset = True
            raise
        if self.is_client:  # _count, inline: once per chunk of the exchange layer
            self.record.bytes_to_client += sent
        else:
            self.record.bytes_to_backend += sent
        return sent

    def send(self, data: Bytes, *flags: int) -> int:
        try:
            sent: int = self.sock.send(data, *flags)
        except ConnectionResetError:
            self.was_reset = True
            raise
        self._count(sent)
        return sent

    def _count(self, size: int) -> None:
        if self.is_client:
            self.record.bytes_to_client += size
        else:
            self.record.bytes_to_backend += size

    def shutdown(self, how: int) -> None:
        self.sock.shutdown(how)

    def close(self) -> None:
        self.sock.close()

    def fileno(self) -> int:
        fileno: int = self.sock.fileno()
        return fileno

    def reset(self) -> None:
        """Close with an RST (``SO_LINGER`` 0): the peer sees ECONNRESET."""
        reset_socket(self.sock)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)
