"""``blackout``: the connection is closed at the first data."""

from __future__ import annotations

from pytest_vaurien.handlers.base import BaseHandler
from pytest_vaurien.handlers.context import ExchangeFault, SocketView

__all__ = ["Blackout"]


class Blackout(BaseHandler):
    """Closes the client's connection at the first data; nothing is forwarded."""

    name = "blackout"
    options = {}

    def exchange_fault(self) -> ExchangeFault:
        """The client's connection closes when the request arrives."""
        return ExchangeFault(close_at_request=True)

    def __call__(self, client_sock: SocketView, backend_sock: SocketView, to_backend: bool) -> bool:
        self._get_data(client_sock, backend_sock, to_backend)
        return False
