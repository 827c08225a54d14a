"""``timeout``: toxiproxy's timeout toxic."""

from __future__ import annotations

import time
from typing import Any

import gevent

from pytest_vaurien.handlers.base import BaseHandler

__all__ = ["Timeout"]


class Timeout(BaseHandler):
    """Lets no data through; closes the connection ``timeout`` seconds after the last data.

    The timer starts with the connection and restarts with each chunk that
    arrives (and is dropped), in either direction. With 0, the connection is
    never closed by the handler. A side's EOF closes the connection at once.
    """

    name = "timeout"
    options = {
        "timeout": ("Seconds without data before the connection is closed; 0: never", float, 0.0),
    }

    def on_connection(self, connection: Any) -> None:
        timeout: float = self.option("timeout")
        if timeout > 0:
            connection.state[id(self)] = time.monotonic() + timeout
            connection.spawn(self._close_when_quiet, connection)

    def _close_when_quiet(self, connection: Any) -> None:
        while True:
            wait = connection.state[id(self)] - time.monotonic()
            if wait <= 0:
                connection.close()
                return
            gevent.sleep(wait)

    def __call__(self, client_sock: Any, backend_sock: Any, to_backend: bool) -> bool:
        data = self._get_data(client_sock, backend_sock, to_backend)
        connection = client_sock.connection
        if not data:
            connection.close()
            return False
        if id(self) in connection.state:
            connection.state[id(self)] = time.monotonic() + self.option("timeout")
        return True
