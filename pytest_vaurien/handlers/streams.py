"""What the toxiproxy-style handlers share: a ``direction`` option, and a
writer that delivers chunks later without stopping the reads.

Toxiproxy applies a toxic to one stream: ``upstream`` (client to backend) or
``downstream`` (backend to client, its default). Here the same handler sees
both directions; ``affects()`` says whether this one is its business, and
the other is relayed unchanged.
"""

from __future__ import annotations

import time

import gevent
import gevent.event
import gevent.queue

from pytest_vaurien.handlers.base import BaseHandler, OptionSpec
from pytest_vaurien.handlers.context import ConnectionView, SocketView

__all__ = ["DIRECTION_OPTION", "DelayedWriter", "affects", "relay", "wait_delivered"]

DIRECTIONS = ("both", "downstream", "upstream")
DIRECTION_OPTION: OptionSpec = (
    "Stream to act on: upstream (client to backend), downstream (backend to client) or both",
    str,
    "downstream",
    DIRECTIONS,
)
#: Chunks a delayed direction holds before reading stops (toxiproxy: 1024).
DELAY_BUFFER = 1024


def affects(handler: BaseHandler, to_backend: bool) -> bool:
    """Whether ``handler``'s ``direction`` option covers this direction."""
    direction: str = handler.option("direction")
    return direction == "both" or (direction == "upstream") == to_backend


def relay(
    handler: BaseHandler, client_sock: SocketView, backend_sock: SocketView, to_backend: bool
) -> bool:
    """Pass one chunk through unchanged (the directions a handler leaves alone)."""
    return BaseHandler.__call__(handler, client_sock, backend_sock, to_backend)


class DelayedWriter:
    """Delivers each chunk at its due time, in order, from a helper greenlet.

    Reading goes on meanwhile, so a chunk waits its delay from the moment it
    arrived, not behind the delays of the chunks before it (toxiproxy's
    latency). At most ``DELAY_BUFFER`` chunks wait; then reading waits too.
    """

    def __init__(self, connection: ConnectionView, dest: SocketView) -> None:
        self.dest = dest
        self.queue: gevent.queue.Queue[tuple[float, bytes | None]] = gevent.queue.Queue(
            DELAY_BUFFER
        )
        self.drained = gevent.event.Event()
        #: Set while nothing queued is left to deliver.
        self.idle = gevent.event.Event()
        self.idle.set()
        self._queued = 0
        self.error: BaseException | None = None
        connection.spawn(self._deliver)

    @classmethod
    def of(
        cls,
        handler: BaseHandler,
        client_sock: SocketView,
        backend_sock: SocketView,
        to_backend: bool,
    ) -> DelayedWriter:
        """The writer of this handler, connection and direction (made once)."""
        connection = client_sock.connection
        state = connection.state_for(handler)
        key = ("writer", to_backend)
        writer: DelayedWriter | None = state.get(key)
        if writer is None:
            dest = backend_sock if to_backend else client_sock
            writer = state[key] = cls(connection, dest)
        return writer

    def send_later(self, due: float, data: bytes) -> None:
        """Queue ``data`` for ``due`` (a ``time.monotonic()`` time)."""
        self._check()
        self._queued += 1
        self.idle.clear()
        self.queue.put((due, data))

    def finish(self) -> None:
        """Wait until every queued chunk is delivered."""
        self.queue.put((0.0, None))
        self.drained.wait()
        self._check()

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    def _deliver(self) -> None:
        try:
            while True:
                due, data = self.queue.get()
                if data is None:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    gevent.sleep(wait)
                self.dest.sendall(data)
                self._queued -= 1
                if not self._queued:
                    self.idle.set()
        except OSError as error:
            self.error = error
        finally:
            self.drained.set()
            self.idle.set()


def wait_delivered(handler: BaseHandler, connection: ConnectionView) -> None:
    """Wait until every chunk ``handler`` holds back on ``connection`` went out.

    Under a protocol, one exchange's delayed bytes must not be overtaken by
    the next exchange's.
    """
    for value in list(connection.state_for(handler).values()):
        if isinstance(value, DelayedWriter):
            value.idle.wait()
            value._check()


def forward_later(
    handler: BaseHandler,
    client_sock: SocketView,
    backend_sock: SocketView,
    to_backend: bool,
    pause: float,
) -> bool:
    """Read one chunk and have it delivered ``pause`` seconds after it arrived.

    At EOF, wait until everything queued is delivered, then end the
    direction (the relay passes the half-close on).
    """
    arrived = time.monotonic()
    data = handler._get_data(client_sock, backend_sock, to_backend)
    writer = DelayedWriter.of(handler, client_sock, backend_sock, to_backend)
    if not data:
        writer.finish()
        return False
    writer.send_later(arrived + pause, data)
    return True
