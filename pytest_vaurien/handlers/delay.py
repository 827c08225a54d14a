"""``delay``: vaurien's latency fault."""

from __future__ import annotations

from typing import Any

import gevent

from pytest_vaurien.handlers.base import BaseHandler

__all__ = ["Delay"]


class Delay(BaseHandler):
    """Delays each chunk: to the backend (before=True) or back to the client.

    Every chunk waits ``sleep`` seconds plus a uniform draw in
    [-jitter, +jitter] from the proxy's seeded random source, never below 0.
    """

    name = "delay"
    options = {
        "sleep": ("Delay in seconds", float, 1.0),
        "before": ("If True adds before the backend is called, otherwise after", bool, True),
        "jitter": ("Random variation of the delay, in seconds (+/-)", float, 0.0),
    }

    def pause(self) -> float:
        """The delay for one chunk, in seconds."""
        sleep: float = self.option("sleep")
        jitter: float = self.option("jitter")
        spread = self.random.uniform(-jitter, jitter) if jitter else 0.0
        return max(0.0, sleep + spread)

    def __call__(self, client_sock: Any, backend_sock: Any, to_backend: bool) -> bool:
        delayed = to_backend == self.option("before")
        if delayed:
            gevent.sleep(self.pause())
        data = self._get_data(client_sock, backend_sock, to_backend)
        if data:
            dest = backend_sock if to_backend else client_sock
            dest.sendall(data)
        return bool(data)
