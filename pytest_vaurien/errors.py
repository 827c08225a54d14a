"""Exceptions raised by pytest-vaurien.

Library code raises these; the pytest plugin turns configuration errors into
``pytest.UsageError`` (command line, ini) or a failed test (marker), so users
see one message that names the bad piece, never a traceback from gevent.
"""

from __future__ import annotations

__all__ = ["ConfigError", "HandlerError", "ProxyError", "VaurienError"]


class VaurienError(Exception):
    """Base class of every error pytest-vaurien raises on purpose."""


class ConfigError(VaurienError, ValueError):
    """A behavior, an address or a handler option is not valid."""


class HandlerError(VaurienError):
    """A handler is badly defined, or could not be found or loaded."""


class ProxyError(VaurienError):
    """The proxy could not start, or did not stop in time."""
