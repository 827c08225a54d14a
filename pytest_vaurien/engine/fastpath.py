"""Moving bytes that no handler touches, in the event loop's own callbacks.

For a chain of handlers that neither override ``__call__`` nor
``_get_data`` (``dummy``), the relay need not run Python per chunk in a
greenlet: a read watcher's callback reads what is there and sends it on at
once, and a write watcher takes over only while the destination is full.
No greenlet switch per chunk, one per connection at most.

A :class:`Stream` is one direction. It ends (``on_end``) with ``False`` at
EOF, ``True`` when the proxy's plan changed (the chunk just read is
left in ``source.pending`` for the new chain), or the error it met.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gevent

from pytest_vaurien.engine.endpoint import Endpoint
from pytest_vaurien.records import ConnectionRecord

__all__ = ["CHUNKS_PER_WAKEUP", "Stream", "raw_sockets"]

#: Chunks one readiness callback moves before letting other connections run.
CHUNKS_PER_WAKEUP = 16
_READ, _WRITE = 1, 2


def raw_sockets(source: Any, dest: Any) -> tuple[Any, Any] | None:
    """The non-blocking OS sockets under two gevent sockets, where gevent has
    kept them for years (``_sock``); ``None`` if that ever changes."""
    raw_in = getattr(source, "_sock", None)
    raw_out = getattr(dest, "_sock", None)
    if raw_in is None or raw_out is None:  # pragma: no cover - other gevent internals
        return None
    return raw_in, raw_out


class Stream:
    """One direction of a connection, moved in callbacks until it ends."""

    def __init__(
        self,
        source: Endpoint,
        dest: Endpoint,
        raw: tuple[Any, Any],
        record: ConnectionRecord,
        read_size: int,
        still_current: Callable[[], bool],
        on_end: Callable[[Stream, object], None],
    ) -> None:
        self.source = source
        self.dest = dest
        self.to_backend = not dest.is_client
        self._recv = raw[0].recv
        self._send = raw[1].send
        self._record = record
        self._size = read_size
        self._still_current = still_current
        self._on_end = on_end
        self._unsent = b""
        self._loop = loop = gevent.get_hub().loop
        self._reader = loop.io(raw[0].fileno(), _READ)
        #: Made only once the destination is full (most connections never are).
        self._writer: Any = None
        self._dest_fileno: int = raw[1].fileno()
        self._ended = False

    def start(self) -> None:
        self._reader.start(self._on_readable)

    def close(self) -> None:
        """Stop and free the watchers; the stream never calls back after this."""
        self._ended = True
        for watcher in (self._reader, self._writer):
            if watcher is not None:
                watcher.stop()
                watcher.close()

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

    def _on_readable(self) -> None:
        # the per-chunk path of every transparent connection: locals only
        recv, send, size, record = self._recv, self._send, self._size, self._record
        to_backend = self.to_backend
        try:
            for _ in range(CHUNKS_PER_WAKEUP):
                try:
                    data = recv(size)
                except ConnectionResetError:
                    self.source.was_reset = True
                    raise
                if not data:
                    self.source.eof = True
                    self._end(False)
                    return
                if not self._still_current():
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
                    self._reader.stop()
                    if self._writer is None:
                        self._writer = self._loop.io(self._dest_fileno, _WRITE)
                    self._writer.start(self._on_writable)
                    return
                if len(data) < size:  # most likely drained: wait for more
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
            self._reader.start(self._on_readable)
