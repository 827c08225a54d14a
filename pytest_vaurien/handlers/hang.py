"""``hang``: the request vanishes and the connection stays open."""

from __future__ import annotations

from typing import Any

import gevent

from pytest_vaurien.handlers.base import BaseHandler

__all__ = ["Hang"]


class Hang(BaseHandler):
    """Reads and swallows everything; nothing is forwarded or answered.

    The connection stays open until the client gives up or the proxy stops;
    even the client's EOF is swallowed, so a half-closed client keeps waiting.
    """

    name = "hang"
    options = {}

    def __call__(self, client_sock: Any, backend_sock: Any, to_backend: bool) -> bool:
        if not self._get_data(client_sock, backend_sock, to_backend):
            while True:  # keep the direction open; the proxy's stop ends this
                gevent.sleep(3600)
        return True
