"""The built-in handlers, registered through the same pluggy hook as plugins.

Imported by the registry when it is first built, not by
``pytest_vaurien.handlers``: the handler API alone does not load gevent.
"""

from __future__ import annotations

from pytest_vaurien.handlers.abort import Abort
from pytest_vaurien.handlers.bandwidth import Bandwidth
from pytest_vaurien.handlers.base import BaseHandler
from pytest_vaurien.handlers.blackout import Blackout
from pytest_vaurien.handlers.delay import Delay
from pytest_vaurien.handlers.dummy import Dummy
from pytest_vaurien.handlers.error import Error
from pytest_vaurien.handlers.hang import Hang
from pytest_vaurien.handlers.latency import Latency
from pytest_vaurien.handlers.limit_data import LimitData
from pytest_vaurien.handlers.reset_peer import ResetPeer
from pytest_vaurien.handlers.slicer import Slicer
from pytest_vaurien.handlers.slow_close import SlowClose
from pytest_vaurien.handlers.timeout import Timeout
from pytest_vaurien.handlers.transient import Transient
from pytest_vaurien.hookspecs import hookimpl

__all__ = ["BUILTIN_HANDLERS", "vaurien_add_handlers"]

BUILTIN_HANDLERS: tuple[type[BaseHandler], ...] = (
    Abort,
    Bandwidth,
    Blackout,
    Delay,
    Dummy,
    Error,
    Hang,
    Latency,
    LimitData,
    ResetPeer,
    Slicer,
    SlowClose,
    Timeout,
    Transient,
)


@hookimpl
def vaurien_add_handlers() -> list[type[BaseHandler]]:
    """The built-ins enter the registry through the same hook as plugins."""
    return list(BUILTIN_HANDLERS)
