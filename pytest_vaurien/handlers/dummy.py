"""``dummy``: the transparent relay."""

from __future__ import annotations

from pytest_vaurien.handlers.base import BaseHandler

__all__ = ["Dummy"]


class Dummy(BaseHandler):
    """Relays every byte unchanged, both ways."""

    name = "dummy"
    options = {}
