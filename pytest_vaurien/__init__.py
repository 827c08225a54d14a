"""pytest-vaurien: a chaos TCP proxy for tests, after Mozilla's Vaurien.

The public names load lazily: ``import pytest_vaurien.behavior`` (or any
other pure module) must not pay for gevent, which ``Proxy`` needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pytest_vaurien.errors import ConfigError, HandlerError, ProxyError, VaurienError
from pytest_vaurien.rules import Rule

if TYPE_CHECKING:
    from pytest_vaurien.engine.proxy import Proxy
    from pytest_vaurien.handlers.base import BaseHandler
    from pytest_vaurien.hookspecs import hookimpl

__all__ = [
    "BaseHandler",
    "ConfigError",
    "HandlerError",
    "Proxy",
    "ProxyError",
    "Rule",
    "VaurienError",
    "__version__",
    "hookimpl",
]

__version__ = "0.1.0"

_LAZY = {
    "BaseHandler": "pytest_vaurien.handlers.base",
    "Proxy": "pytest_vaurien.engine.proxy",
    "hookimpl": "pytest_vaurien.hookspecs",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_vaurien' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
