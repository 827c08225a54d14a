"""pytest-vaurien: a chaos TCP proxy for tests, after Mozilla's Vaurien."""

from __future__ import annotations

from pytest_vaurien.errors import ConfigError, HandlerError, ProxyError, VaurienError
from pytest_vaurien.handlers.base import BaseHandler
from pytest_vaurien.hookspecs import hookimpl
from pytest_vaurien.proxy import Proxy

__all__ = [
    "BaseHandler",
    "ConfigError",
    "HandlerError",
    "Proxy",
    "ProxyError",
    "VaurienError",
    "__version__",
    "hookimpl",
]

__version__ = "0.1.0"
