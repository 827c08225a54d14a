"""``hang``: the request vanishes and the connection stays open."""

from __future__ import annotations

import gevent

from pytest_vaurien.handlers.base import BaseHandler
from pytest_vaurien.handlers.context import ExchangeFault, SocketView

__all__ = ["Hang"]


class Hang(BaseHandler):
    """Reads and swallows everything; nothing is forwarded or answered.

    The connection stays open until the client gives up or the proxy stops;
    even a side's EOF is swallowed, so a half-closed client keeps waiting.
    With ``close_on_eof``, a side's EOF closes the connection instead, which
    frees it at once when a client gives up (for long-running proxies).
    """

    name = "hang"
    options = {
        "close_on_eof": (
            "Close the connection when either side closes, instead of holding it",
            bool,
            False,
        ),
    }

    def exchange_fault(self) -> ExchangeFault:
        """The request is never forwarded and never answered."""
        return HOLD

    def __call__(self, client_sock: SocketView, backend_sock: SocketView, to_backend: bool) -> bool:
        if self._get_data(client_sock, backend_sock, to_backend):
            return True
        if self.option("close_on_eof"):
            client_sock.connection.close()
            return False
        while True:  # keep the direction open; the proxy's stop ends this
            gevent.sleep(3600)


HOLD = ExchangeFault(hold=True)
