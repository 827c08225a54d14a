"""``blackout``: the connection is closed at the first data."""

from __future__ import annotations

from typing import Any

from pytest_vaurien.handlers.base import BaseHandler

__all__ = ["Blackout"]


class Blackout(BaseHandler):
    """Closes the client's connection at the first data; nothing is forwarded."""

    name = "blackout"
    options = {}

    def __call__(self, client_sock: Any, backend_sock: Any, to_backend: bool) -> bool:
        self._get_data(client_sock, backend_sock, to_backend)
        return False
