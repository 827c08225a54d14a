"""The handler API (``BaseHandler``, the typed context) and one module per fault.

``from pytest_vaurien.handlers import BaseHandler`` is the documented import;
the built-in faults live in their own modules, gathered by
:mod:`pytest_vaurien.handlers.builtin`.
"""

from __future__ import annotations

from pytest_vaurien.handlers.base import BaseHandler
from pytest_vaurien.handlers.context import ConnectionView, ProxyInfo, SocketView

__all__ = ["BaseHandler", "ConnectionView", "ProxyInfo", "SocketView"]
