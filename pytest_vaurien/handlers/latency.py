"""``latency``: toxiproxy's latency toxic."""

from __future__ import annotations

from pytest_vaurien.handlers.base import BaseHandler, Range
from pytest_vaurien.handlers.context import SocketView
from pytest_vaurien.handlers.delay import jittered
from pytest_vaurien.handlers.streams import DIRECTION_OPTION, affects, forward_later, relay

__all__ = ["Latency"]


class Latency(BaseHandler):
    """Delivers every chunk ``latency`` (+/- ``jitter``) seconds after it arrived.

    Bytes keep their order; reading goes on meanwhile, as in toxiproxy.
    """

    name = "latency"
    options = {
        "latency": ("Delay in seconds", float, 0.0, Range(0)),
        "jitter": ("Random variation of the delay, in seconds (+/-)", float, 0.0, Range(0)),
        "direction": DIRECTION_OPTION,
    }

    def pause(self) -> float:
        """The delay for one chunk, in seconds."""
        latency: float = self.option("latency")
        jitter: float = self.option("jitter")
        return jittered(self, latency, jitter)

    def __call__(self, client_sock: SocketView, backend_sock: SocketView, to_backend: bool) -> bool:
        if not affects(self, to_backend):
            return relay(self, client_sock, backend_sock, to_backend)
        return forward_later(self, client_sock, backend_sock, to_backend, self.pause())
