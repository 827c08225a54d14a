"""``abort``: the request is delivered, the reply never comes back."""

from __future__ import annotations

from pytest_vaurien.handlers.base import BaseHandler
from pytest_vaurien.handlers.context import ExchangeFault, SocketView

__all__ = ["Abort"]


class Abort(BaseHandler):
    """Forwards the request to the backend, then closes before any reply reaches the client."""

    name = "abort"
    options = {}

    def exchange_fault(self) -> ExchangeFault:
        """The request reaches the backend; the client's connection closes before the reply."""
        return ExchangeFault(close_before_reply=True)

    def __call__(self, client_sock: SocketView, backend_sock: SocketView, to_backend: bool) -> bool:
        data = self._get_data(client_sock, backend_sock, to_backend)
        if to_backend and data:
            backend_sock.sendall(data)
            return True
        return False  # the reply (or the backend's EOF) ends the whole connection
