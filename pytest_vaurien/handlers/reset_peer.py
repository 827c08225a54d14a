"""``reset_peer``: toxiproxy's reset_peer toxic."""

from __future__ import annotations

import gevent

from pytest_vaurien.handlers.base import BaseHandler, Range
from pytest_vaurien.handlers.context import SocketView

__all__ = ["ResetPeer"]


class ResetPeer(BaseHandler):
    """Resets the client's connection (TCP RST) ``timeout`` seconds after the first data.

    The data is dropped; the client sees ECONNRESET ("connection reset by
    peer"), as when a server crashes or a firewall drops the connection.
    """

    name = "reset_peer"
    options = {
        "timeout": ("Seconds between the first data and the reset", float, 0.0, Range(0)),
    }

    def __call__(self, client_sock: SocketView, backend_sock: SocketView, to_backend: bool) -> bool:
        self._get_data(client_sock, backend_sock, to_backend)
        gevent.sleep(self.option("timeout"))
        client_sock.connection.reset_client(f"reset by {self.name}")
        return False
