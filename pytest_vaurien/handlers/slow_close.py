"""``slow_close``: toxiproxy's slow_close toxic."""

from __future__ import annotations

import gevent

from pytest_vaurien.handlers.base import BaseHandler, Range
from pytest_vaurien.handlers.context import SocketView
from pytest_vaurien.handlers.streams import DIRECTION_OPTION, affects, relay

__all__ = ["SlowClose"]


class SlowClose(BaseHandler):
    """Relays data unchanged, but passes a side's close on only ``delay`` seconds later."""

    name = "slow_close"
    options = {
        "delay": ("Seconds to hold a close before passing it on", float, 0.0, Range(0)),
        "direction": DIRECTION_OPTION,
    }

    def __call__(self, client_sock: SocketView, backend_sock: SocketView, to_backend: bool) -> bool:
        if relay(self, client_sock, backend_sock, to_backend):
            return True
        if affects(self, to_backend):
            gevent.sleep(self.option("delay"))
        return False
