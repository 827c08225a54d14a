"""Where handler classes come from, by name.

Four sources meet here: the built-ins and installed packages (both through
the ``vaurien`` pluggy project), batches from the pytest hook
``pytest_vaurien_add_handlers`` (handed in by the plugin, so this module
never imports pytest), and dotted paths named in a behavior.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass

import pluggy

from pytest_vaurien import hookspecs
from pytest_vaurien.behavior import Behavior
from pytest_vaurien.errors import ConfigError, HandlerError
from pytest_vaurien.handlers.base import BaseHandler

__all__ = ["Registration", "Registry", "make_plugin_manager", "registry_from_plugins"]

BUILTIN_ORIGIN = "built-in"


@dataclass(frozen=True)
class Registration:
    """A handler class and where it came from, for messages and listings."""

    handler: type[BaseHandler]
    origin: str


def make_plugin_manager(load_entrypoints: bool = True) -> pluggy.PluginManager:
    """The ``vaurien`` plugin manager: built-ins plus the ``vaurien`` entry points."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    from pytest_vaurien.handlers import builtin  # the faults load gevent: only when needed

    manager.register(builtin, name=BUILTIN_ORIGIN)
    if load_entrypoints:
        manager.load_setuptools_entrypoints(hookspecs.PROJECT)
    manager.check_pending()
    return manager


class Registry:
    """Handler classes by name; a name defined twice is an error naming both."""

    def __init__(self) -> None:
        self._by_name: dict[str, Registration] = {}

    def add(self, handler: object, origin: str) -> None:
        """Register ``handler`` under its ``name``.

        :raises HandlerError: when it is not a handler class, has no name, or
            its name is taken by another class (the message names both origins).
        """
        if not (isinstance(handler, type) and issubclass(handler, BaseHandler)):
            raise HandlerError(
                f"{origin} returned {handler!r}; expected a subclass of pytest_vaurien.BaseHandler"
            )
        name = handler.name
        if not isinstance(name, str) or not name.isidentifier():
            raise HandlerError(
                f"{origin}: handler class {handler.__qualname__} has name "
                f"{name!r}; expected an identifier such as 'delay'"
            )
        known = self._by_name.get(name)
        if known is not None and known.handler is not handler:
            raise HandlerError(
                f"handler name {name!r} is defined twice: by {known.origin} "
                f"({_qualname(known.handler)}) and by {origin} "
                f"({_qualname(handler)})"
            )
        self._by_name.setdefault(name, Registration(handler, origin))

    def add_batch(self, batch: object, origin: str) -> None:
        """Register every class a hook returned (``None`` counts as none)."""
        if batch is None:
            return
        if isinstance(batch, (str, bytes)) or not isinstance(batch, Iterable):
            raise HandlerError(f"{origin} returned {batch!r}; expected a list of handler classes")
        for handler in batch:
            self.add(handler, origin)

    def alias(self, name: str, path: str, origin: str) -> None:
        """Register the handler class at dotted ``path`` under ``name`` too.

        :raises ConfigError: if ``name`` is taken or ``path`` is not a handler.
        """
        handler = _import_handler(path, origin)
        known = self._by_name.get(name)
        if known is not None:
            raise HandlerError(
                f"handler name {name!r} is defined twice: by {known.origin} "
                f"({_qualname(known.handler)}) and by {origin} ({path})"
            )
        self._by_name[name] = Registration(handler, origin)

    def copy(self) -> Registry:
        """A registry that starts with the same handlers and can grow apart."""
        clone = Registry()
        clone._by_name = dict(self._by_name)
        return clone

    @property
    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._by_name)

    def registrations(self) -> list[tuple[str, Registration]]:
        """``(name, registration)`` pairs, sorted by name."""
        return sorted(self._by_name.items())

    def option_targets(self, behavior: Behavior) -> dict[str, type[BaseHandler]]:
        """Every name options may be given under, for ``behavior``.

        The registered names, plus each dotted path the behavior uses, under
        the path and under its class's own ``name`` (``--handlers.upper.suffix``
        for ``100:mymodule.Upper``).
        """
        targets = {name: registration.handler for name, registration in self._by_name.items()}
        for name in behavior.names:
            if name not in targets and "." in name:
                handler = self.resolve(name)
                targets[name] = handler
                targets.setdefault(handler.name, handler)
        return targets

    def resolve(self, name: str, where: str = "behavior") -> type[BaseHandler]:
        """The handler class for a registered name or a dotted path.

        :raises ConfigError: for an unknown name, listing the known ones.
        :raises HandlerError: for a dotted path that does not import or does
            not name a handler class.
        """
        registration = self._by_name.get(name)
        if registration is not None:
            return registration.handler
        if "." in name:
            return _import_handler(name, where)
        raise ConfigError(f"{where}: unknown handler {name!r}; known: {', '.join(self.names)}")


def registry_from_plugins(manager: pluggy.PluginManager) -> Registry:
    """A registry holding what every plugin of ``manager`` adds, origins named."""
    registry = Registry()
    for impl in reversed(manager.hook.vaurien_add_handlers.get_hookimpls()):
        origin = (
            BUILTIN_ORIGIN
            if impl.plugin_name == BUILTIN_ORIGIN
            else f"entry point {impl.plugin_name!r}"
        )
        try:
            batch = impl.function()
        except Exception as error:
            raise HandlerError(f"{origin}: vaurien_add_handlers() failed: {error!r}") from error
        registry.add_batch(batch, origin)
    return registry


def _import_handler(path: str, where: str) -> type[BaseHandler]:
    module_name, _, attribute = path.rpartition(".")
    parts = [attribute]
    while module_name:
        try:
            target: object = importlib.import_module(module_name)
        except ImportError as error:
            if (
                error.name is not None
                and not module_name.startswith(error.name)
                and not error.name.startswith(module_name)
            ):
                raise HandlerError(f"{where}: importing {path!r} failed: {error}") from error
            module_name, _, head = module_name.rpartition(".")
            parts.insert(0, head)
            continue
        except Exception as error:
            raise HandlerError(f"{where}: importing {path!r} failed: {error!r}") from error
        for part in parts:
            try:
                target = getattr(target, part)
            except AttributeError:
                raise ConfigError(
                    f"{where}: {path!r}: {module_name!r} has no attribute {part!r}"
                ) from None
        if isinstance(target, type) and issubclass(target, BaseHandler):
            return target
        raise ConfigError(
            f"{where}: {path!r} is {target!r}; expected a subclass of pytest_vaurien.BaseHandler"
        )
    raise ConfigError(f"{where}: unknown handler {path!r}: no module of that path imports")


def _qualname(handler: type) -> str:
    return f"{handler.__module__}.{handler.__qualname__}"
