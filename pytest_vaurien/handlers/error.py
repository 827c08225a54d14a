"""``error``: the client gets garbage instead of the backend's reply."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_vaurien.handlers.base import BaseHandler, Range
from pytest_vaurien.handlers.context import ConnectionView, ProxyInfo, SocketView

__all__ = ["Error"]

#: How many random bytes replace, or are inserted into, a reply.
GARBAGE_SIZE = 1000


class Error(BaseHandler):
    """Requests reach the backend; the client gets random bytes instead of the reply.

    With ``inject``, the reply comes through with random bytes inserted in the
    middle of each chunk. The first ``warmup`` connections this handler is
    given on a proxy pass unharmed.
    """

    name = "error"
    options = {
        "inject": ("Insert random bytes into the reply instead of replacing it", bool, False),
        "warmup": ("Connections to let through before erroring", int, 0, Range(0)),
    }

    def __init__(
        self, settings: Mapping[str, Any] | None = None, proxy: ProxyInfo | None = None
    ) -> None:
        super().__init__(settings, proxy)
        self.connections_given = 0

    def on_connection(self, connection: ConnectionView) -> None:
        self.connections_given += 1
        connection.state_for(self)["faulty"] = self.is_faulty(self.connections_given)

    def is_faulty(self, number: int) -> bool:
        """Whether the connection this handler got as ``number`` (from 1) errs."""
        warmup: int = self.option("warmup")
        return number > warmup

    def garbage(self) -> bytes:
        """Random bytes from the proxy's seeded random source."""
        return self.random.randbytes(GARBAGE_SIZE)

    def __call__(self, client_sock: SocketView, backend_sock: SocketView, to_backend: bool) -> bool:
        data = self._get_data(client_sock, backend_sock, to_backend)
        if not data:
            return False
        faulty = client_sock.connection.state_for(self).get("faulty", True)
        if to_backend or not faulty:
            (backend_sock if to_backend else client_sock).sendall(data)
            return True
        if self.option("inject"):
            middle = len(data) // 2
            client_sock.sendall(data[:middle] + self.garbage() + data[middle:])
            return True
        client_sock.sendall(self.garbage())
        return False
