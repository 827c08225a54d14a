"""The ``vaurien`` pluggy project: hooks for installed packages.

A package that serves both the ``vaurien`` command and pytest declares an
entry point in the ``vaurien`` group naming a module that implements these
hooks, decorated with :data:`hookimpl`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from pytest_vaurien.handlers.base import BaseHandler

__all__ = ["PROJECT", "hookimpl", "hookspec", "vaurien_add_handlers"]

PROJECT = "vaurien"

hookspec = pluggy.HookspecMarker(PROJECT)
#: Decorate implementations of the ``vaurien_*`` hooks with this.
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def vaurien_add_handlers() -> list[type[BaseHandler]]:  # type: ignore[empty-body]
    """Return handler classes to make available by their ``name``.

    Called once per plugin manager (each pytest run, each ``vaurien``
    command). Not ``firstresult``: every plugin's list is used; a name that
    two plugins both define is an error naming both.
    """
