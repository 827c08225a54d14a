"""Moving bytes that no handler touches, in the event loop's own callbacks.

For a chain of handlers that neither override ``__call__`` nor
``_get_data`` (``dummy``), the relay need not run Python per chunk in a
greenlet: a read watcher's callback reads what is there and sends it on at
once, and a write watcher takes over only while the destination is full.
No greenlet switch per chunk, and none at all when the connection itself
lives in loop callbacks (``Connection.relay_in_callbacks``).

A direction that has moved more than ``SPLICE_AFTER`` bytes in reads that
filled the buffer (a bulk transfer) goes on with ``os.splice`` through a
pipe of its own (Linux): the bytes go from one socket to the other inside
the kernel, never copied into Python objects. Short connections and
request/reply traffic, whose reads come back short, never pay for a pipe:
for small messages a splice in and a splice out cost more than a ``recv``
and a ``send``. A pipe that cannot be made (out of descriptors) leaves the
direction on ``recv``/``send``.

A splicing direction whose destination is on this machine (loopback) caps
that socket's send buffer (``LOOPBACK_SEND_BUFFER``). Left to autotuning it
grows to megabytes of spliced pages in flight (most likely too many to
stay in the cache): proxybench's 1 GiB went through at 1.7-2.0 GB/s that
way, 2.2-4.8 with the cap (haproxy: 2.0-2.2). A remote destination keeps
autotuning, which a long round trip needs.

A :class:`Stream` is one direction. It ends (``on_end``) with ``False`` at
EOF, ``True`` when the proxy's plan changed (``host.plan`` is no longer the
plan it started under; the chunk just read is left in ``source.pending``
for the new chain), or the error it met.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Callable
from typing import Any, Protocol

import gevent

from pytest_vaurien.address import is_loopback
from pytest_vaurien.engine.endpoint import Endpoint, os_socket
from pytest_vaurien.records import ConnectionRecord

__all__ = ["CHUNKS_PER_WAKEUP", "SPLICE_AFTER", "Stream", "Watchers", "raw_sockets"]

#: Chunks one readiness callback moves before letting other connections run.
CHUNKS_PER_WAKEUP = 16
#: Bytes a direction moves by ``recv``/``send`` in reads that filled the
#: buffer before it takes a pipe and splices (``None``: never, where
#: ``os.splice`` is missing).
SPLICE_AFTER: int | None = 256 * 1024 if hasattr(os, "splice") else None
#: What a splicing direction's pipe holds (the kernel's default is 64 KiB).
PIPE_SIZE = 256 * 1024
#: Send buffer asked for a splicing direction's loopback destination; the
#: kernel doubles it, to two pipes' worth (asking 128 KiB was slower in
#: proxybench, 384 or 512 KiB no faster).
LOOPBACK_SEND_BUFFER = PIPE_SIZE
_SPLICE_FLAGS = getattr(os, "SPLICE_F_NONBLOCK", 0) | getattr(os, "SPLICE_F_MOVE", 0)
_READ, _WRITE = 1, 2
#: What a readiness callback iterates over (a tuple: no range object per wakeup).
_CHUNKS = (None,) * CHUNKS_PER_WAKEUP


class PlanHolder(Protocol):
    """Whoever holds the plan in force (the proxy): read once per chunk."""

    @property
    def plan(self) -> object: ...


def raw_sockets(source: Any, dest: Any) -> tuple[Any, Any] | None:
    """The non-blocking OS sockets of two sides, plain or under gevent
    sockets; ``None`` if gevent ever keeps them elsewhere."""
    raw_in, raw_out = os_socket(source), os_socket(dest)
    if raw_in is None or raw_out is None:  # pragma: no cover - other gevent internals
        return None
    return raw_in, raw_out


class Watchers:
    """Spare io watchers of one loop, reused from one connection to the next.

    Making a watcher costs an allocation and a system call (gevent checks
    the descriptor with ``fcntl(F_GETFD)``); a stopped one takes another
    descriptor and events by assignment. A connection served in loop
    callbacks takes its two from here and gives them back as it ends.
    """

    #: Spares kept at most; more are closed as they come back.
    LIMIT = 256

    def __init__(self, loop: Any) -> None:
        self._loop = loop
        self._spare: list[Any] = []

    def io(self, fd: int, events: int) -> Any:
        """A stopped io watcher for ``fd`` and ``events``."""
        if self._spare:
            watcher = self._spare.pop()
            watcher.fd = fd
            watcher.events = events
            return watcher
        return self._loop.io(fd, events)

    def give_back(self, watcher: Any) -> None:
        """Stop ``watcher`` and keep it for the next connection (or close it)."""
        watcher.stop()
        if len(self._spare) < self.LIMIT:
            self._spare.append(watcher)
        else:
            watcher.close()

    def close(self) -> None:
        """Close every spare (the proxy is done)."""
        spare, self._spare = self._spare, []
        for watcher in spare:
            watcher.close()


def _on_loopback(sock: socket.socket) -> bool:
    """Whether ``sock``'s peer is on this machine; False when it cannot be told."""
    try:
        host = sock.getpeername()[0]
    except (OSError, IndexError):
        return False
    return isinstance(host, str) and is_loopback(host)


def _pipe() -> tuple[int, int, int] | None:
    """A non-blocking pipe for splicing, as large as the system lets us have
    (``PIPE_SIZE``): its read end, write end and size; ``None`` when none
    can be made (out of descriptors)."""
    try:
        read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:  # past the per-user soft limit a larger pipe is refused: keep the default
        size = fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        size = fcntl.fcntl(write_end, fcntl.F_GETPIPE_SZ)
    return read_end, write_end, size


class Stream:
    """One direction of a connection, moved in callbacks until it ends."""

    def __init__(
        self,
        source: Endpoint,
        dest: Endpoint,
        raw: tuple[Any, Any],
        record: ConnectionRecord,
        read_size: int,
        host: PlanHolder,
        plan: object,
        on_end: Callable[[Stream, object], None],
        reader: Any = None,
    ) -> None:
        """``host.plan`` is ``plan`` for as long as the stream may move
        bytes. ``reader``: a stopped io watcher on the source's descriptor
        to read with, which stays its giver's (``close`` only stops it); one
        of the stream's own is made when ``None``."""
        self.source = source
        self.dest = dest
        self.to_backend = not dest.is_client
        self._recv = raw[0].recv
        self._send = raw[1].send
        self._record = record
        self._size = read_size
        self._host = host
        self._plan = plan
        self._on_end = on_end
        self._unsent = b""
        self._loop = loop = gevent.get_hub().loop
        self._source_fileno: int = raw[0].fileno()
        #: Whether ``close`` closes the reader (made here) or only stops it.
        self._own_reader = reader is None
        self._reader = loop.io(self._source_fileno, _READ) if reader is None else reader
        #: Made only once the destination is full (most connections never are).
        self._writer: Any = None
        self._dest_fileno: int = raw[1].fileno()
        self._raw_dest = raw[1]
        self._ended = False
        #: Bytes left before this direction splices; ``None``: it never will.
        self._until_splice = SPLICE_AFTER
        #: ``(read end, write end, size)`` once splicing, and the bytes in it.
        self._pipe: tuple[int, int, int] | None = None
        self._in_pipe = 0

    def leftover(self) -> bytes:
        """Take out what this stream read but could not send yet (its
        destination was full): the connection sends it before handing over."""
        if self._pipe is not None:
            return self._read_pipe()
        data, self._unsent = self._unsent, b""
        return data

    def start(self) -> None:
        self._read_when_readable()

    # The callbacks are bound when a watcher starts, never kept on the
    # stream: a stream holding its own bound methods is a reference cycle,
    # left to the cyclic garbage collector once per stream. A stopped
    # watcher drops its callback, so an ended stream is freed at once.

    def _read_when_readable(self) -> None:
        self._reader.start(self._on_readable if self._pipe is None else self._on_splice_readable)

    def close(self) -> None:
        """Stop the watchers, free its own and the pipe; the stream never
        calls back after this."""
        self._ended = True
        self._reader.stop()
        if self._own_reader:
            self._reader.close()
        if self._writer is not None:
            self._writer.stop()
            self._writer.close()
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            os.close(pipe[0])
            os.close(pipe[1])

    def _end(self, result: object) -> None:
        if not self._ended:
            self._ended = True
            self._reader.stop()
            if self._writer is not None:
                self._writer.stop()
            self._on_end(self, result)

    def _count(self, size: int) -> None:
        if self.to_backend:
            self._record.bytes_to_backend += size
        else:
            self._record.bytes_to_client += size

    def _wait_for_room(self) -> None:
        """The destination is full: stop reading, write when it has room."""
        self._reader.stop()
        if self._writer is None:
            self._writer = self._loop.io(self._dest_fileno, _WRITE)
        self._writer.start(self._on_writable if self._pipe is None else self._on_splice_writable)

    def _on_readable(self) -> None:
        # the per-chunk path of every transparent connection: locals only
        recv, send, size, record = self._recv, self._send, self._size, self._record
        to_backend = self.to_backend
        host, plan = self._host, self._plan
        try:
            for _ in _CHUNKS:
                try:
                    data = recv(size)
                except ConnectionResetError:
                    self.source.was_reset = True
                    raise
                if not data:
                    self.source.eof = True
                    self._end(False)
                    return
                if host.plan is not plan:  # a live change: the new chain takes over
                    self.source.pending = data
                    self._end(True)
                    return
                try:
                    sent = send(data)
                except BlockingIOError:
                    sent = 0
                except ConnectionResetError:
                    self.dest.was_reset = True
                    raise
                if to_backend:
                    record.bytes_to_backend += sent
                else:
                    record.bytes_to_client += sent
                if sent < len(data):  # the destination is full: wait for room
                    self._unsent = data[sent:]
                    self._wait_for_room()
                    return
                if len(data) < size:  # most likely drained: wait for more
                    return
                if self._until_splice is not None:  # a full read: bulk, maybe
                    self._until_splice -= sent
                    if self._until_splice <= 0 and self._start_splicing():
                        return
        except BlockingIOError:
            return
        except Exception as error:  # never leave an error in the hub: end the stream
            self._end(error)

    def _on_writable(self) -> None:
        try:
            sent = self._send(self._unsent)
        except BlockingIOError:
            return
        except Exception as error:
            if isinstance(error, ConnectionResetError):
                self.dest.was_reset = True
            self._end(error)
            return
        self._count(sent)
        self._unsent = self._unsent[sent:]
        if not self._unsent:
            self._writer.stop()
            self._read_when_readable()

    # -- splicing: a bulk direction's bytes stay in the kernel ---------------

    def _start_splicing(self) -> bool:
        """Go on through a pipe from the next readiness on; False (and never
        again) when no pipe can be had."""
        self._until_splice = None
        pipe = _pipe()
        if pipe is None:
            return False
        self._pipe = pipe
        if _on_loopback(self._raw_dest):
            try:
                self._raw_dest.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, LOOPBACK_SEND_BUFFER)
            except OSError:  # pragma: no cover - the peer went away meanwhile
                pass
        if self._writer is not None:
            self._writer.stop()
            self._writer.close()
            self._writer = None
        self._reader.stop()
        self._read_when_readable()
        return True

    def _on_splice_readable(self) -> None:
        """Source to pipe to destination; the pipe is empty whenever this runs."""
        assert self._pipe is not None
        read_end, write_end, pipe_size = self._pipe
        source, dest = self._source_fileno, self._dest_fileno
        splice, host, plan = os.splice, self._host, self._plan
        try:
            for _ in _CHUNKS:
                try:
                    size = splice(source, write_end, pipe_size, flags=_SPLICE_FLAGS)
                except ConnectionResetError:
                    self.source.was_reset = True
                    raise
                if not size:
                    self.source.eof = True
                    self._end(False)
                    return
                self._in_pipe = size
                if host.plan is not plan:
                    self._drain_pipe_into_pending()
                    self._end(True)
                    return
                if not self._splice_out(read_end, dest):
                    self._wait_for_room()
                    return
                if size < pipe_size:  # most likely drained: wait for more
                    return
        except BlockingIOError:
            return
        except Exception as error:  # never leave an error in the hub: end the stream
            self._end(error)

    def _splice_out(self, read_end: int, dest: int) -> bool:
        """Move what the pipe holds to the destination; False when it is full first."""
        splice, in_pipe = os.splice, self._in_pipe
        try:
            while in_pipe:
                try:
                    sent = splice(read_end, dest, in_pipe, flags=_SPLICE_FLAGS)
                except BlockingIOError:
                    return False
                except ConnectionResetError:
                    self.dest.was_reset = True
                    raise
                in_pipe -= sent
                self._count(sent)
        finally:
            self._in_pipe = in_pipe
        return True

    def _on_splice_writable(self) -> None:
        assert self._pipe is not None
        try:
            if not self._splice_out(self._pipe[0], self._dest_fileno):
                return
        except Exception as error:
            self._end(error)
            return
        self._writer.stop()
        self._read_when_readable()

    def _read_pipe(self) -> bytes:
        """Take out what the pipe holds."""
        assert self._pipe is not None
        parts = []
        while self._in_pipe:
            part = os.read(self._pipe[0], self._in_pipe)
            self._in_pipe -= len(part)
            parts.append(part)
        return b"".join(parts)

    def _drain_pipe_into_pending(self) -> None:
        """The plan changed with bytes in the pipe: they go to the new chain first."""
        self.source.pending = self._read_pipe()
