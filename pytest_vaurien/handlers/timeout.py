"""``timeout``: toxiproxy's timeout toxic."""

from __future__ import annotations

import time

import gevent

from pytest_vaurien.handlers.base import BaseHandler, Range
from pytest_vaurien.handlers.context import ConnectionView, SocketView

__all__ = ["Timeout"]


class Timeout(BaseHandler):
    """Lets no data through; closes the connection ``timeout`` seconds after the last data.

    The timer starts with the connection and restarts with each chunk that
    arrives (and is dropped), in either direction. With 0, the connection is
    never closed by the handler. A side's EOF closes the connection at once.
    """

    name = "timeout"
    options = {
        "timeout": (
            "Seconds without data before the connection is closed; 0: never",
            float,
            0.0,
            Range(0),
        ),
    }

    def on_connection(self, connection: ConnectionView) -> None:
        timeout: float = self.option("timeout")
        if timeout > 0:
            connection.state_for(self)["due"] = time.monotonic() + timeout
            connection.spawn(self._close_when_quiet, connection)

    def _close_when_quiet(self, connection: ConnectionView) -> None:
        while True:
            wait = connection.state_for(self)["due"] - time.monotonic()
            if wait <= 0:
                connection.close()
                return
            gevent.sleep(wait)

    def __call__(self, client_sock: SocketView, backend_sock: SocketView, to_backend: bool) -> bool:
        data = self._get_data(client_sock, backend_sock, to_backend)
        connection = client_sock.connection
        if not data:
            connection.close()
            return False
        state = connection.state_for(self)
        if "due" in state:
            state["due"] = time.monotonic() + self.option("timeout")
        return True
