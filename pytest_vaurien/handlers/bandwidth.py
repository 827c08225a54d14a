"""``bandwidth``: toxiproxy's bandwidth toxic."""

from __future__ import annotations

import time

import gevent

from pytest_vaurien.handlers.base import BaseHandler, Range
from pytest_vaurien.handlers.context import SocketView
from pytest_vaurien.handlers.streams import DIRECTION_OPTION, affects, relay

__all__ = ["Bandwidth"]

KB = 1000
#: Pacing granularity: data leaves in slices worth this many seconds.
SLICE = 0.01


class Bandwidth(BaseHandler):
    """Limits throughput to ``rate`` KB/s (1 KB = 1000 bytes), smoothly.

    Data leaves in slices of 10 ms worth, each on its schedule, so the rate
    holds over any stretch longer than that, not in one burst per second.
    A rate of 0 means no limit.
    """

    name = "bandwidth"
    options = {
        "rate": (
            "Throughput limit in KB/s (1 KB = 1000 bytes); 0 means no limit",
            float,
            0.0,
            Range(0),
        ),
        "direction": DIRECTION_OPTION,
    }

    def __call__(self, client_sock: SocketView, backend_sock: SocketView, to_backend: bool) -> bool:
        rate = self.option("rate") * KB
        if rate <= 0 or not affects(self, to_backend):
            return relay(self, client_sock, backend_sock, to_backend)
        data = self._get_data(client_sock, backend_sock, to_backend)
        if not data:
            return False
        dest = backend_sock if to_backend else client_sock
        state = client_sock.connection.state_for(self)
        key = ("due", to_backend)
        # the schedule: when the next byte may leave. Kept across chunks, so the
        # time spent reading does not slow the rate down; a link idle for more
        # than a slice starts afresh, earning no credit for a burst.
        now = time.monotonic()
        due = state.get(key, now)
        if now - due > SLICE:
            due = now
        step = max(1, int(rate * SLICE))
        view = memoryview(data)
        for start in range(0, len(view), step):
            piece = view[start : start + step]
            dest.sendall(piece)
            due += len(piece) / rate
            wait = due - time.monotonic()
            if wait > 0:
                gevent.sleep(wait)
        state[key] = due
        return True
