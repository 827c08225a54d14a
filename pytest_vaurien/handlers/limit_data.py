"""``limit_data``: toxiproxy's limit_data toxic."""

from __future__ import annotations

from pytest_vaurien.handlers.base import BaseHandler, Range
from pytest_vaurien.handlers.context import SocketView
from pytest_vaurien.handlers.streams import DIRECTION_OPTION, affects, relay

__all__ = ["LimitData"]


class LimitData(BaseHandler):
    """Closes the connection once ``bytes`` have been transmitted in a direction.

    Exactly that many bytes get through; with ``both``, each direction counts
    its own bytes.
    """

    name = "limit_data"
    options = {
        "bytes": ("Bytes to transmit before the connection is closed", int, 0, Range(0)),
        "direction": DIRECTION_OPTION,
    }

    def __call__(self, client_sock: SocketView, backend_sock: SocketView, to_backend: bool) -> bool:
        if not affects(self, to_backend):
            return relay(self, client_sock, backend_sock, to_backend)
        data = self._get_data(client_sock, backend_sock, to_backend)
        if not data:
            return False
        state = client_sock.connection.state_for(self)
        key = ("sent", to_backend)
        limit: int = self.option("bytes")
        sent: int = state.get(key, 0)
        allowed = data[: max(0, limit - sent)]
        if allowed:
            (backend_sock if to_backend else client_sock).sendall(allowed)
            sent += len(allowed)
            state[key] = sent
        return sent < limit  # falsy without EOF: the whole connection closes
