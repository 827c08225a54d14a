"""The fault plan: what one proxy does to each unit of traffic.

Built once from resolved settings - the behavior, the handler instances with
their options converted, the protocol - and never changed afterwards: a live
change builds a new plan and the proxy swaps it whole, so a connection knows
its chain is stale by comparing plans by identity, and two threads never see
half a change.

The *unit* is what one fault decision is made for. Under ``tcp`` it is the
connection (design.md, "The unit of traffic"); the engine hands the plan a
:class:`Unit` and gets a :class:`Decision` back. Pure: no gevent, no pytest.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pytest_vaurien.behavior import Behavior, parse_behavior
from pytest_vaurien.errors import ConfigError, HandlerError, VaurienError
from pytest_vaurien.handlers.base import BaseHandler, ConvertedOptions
from pytest_vaurien.handlers.context import ProxyInfo
from pytest_vaurien.registry import Registry
from pytest_vaurien.settings import Settings, Sourced

__all__ = [
    "TCP",
    "Decision",
    "Plan",
    "SourcedOptions",
    "Unit",
    "build_plan",
    "check_settings",
    "plan_from_settings",
    "relayered",
]

#: The protocol whose unit is the whole connection.
TCP = "tcp"

#: ``handler name -> option -> raw value and its source``, as settings hold them.
SourcedOptions = Mapping[str, Mapping[str, Sourced]]


@dataclass(frozen=True)
class Unit:
    """One thing a fault is decided for (under ``tcp``: a connection)."""

    #: The connection's index on its proxy, from 0.
    connection: int
    #: 1, 2, ... in arrival order at the proxy.
    ordinal: int
    #: Seconds since the proxy started.
    time: float


@dataclass(frozen=True)
class Decision:
    """The fault one unit gets: a chain of handler names and their instances."""

    names: tuple[str, ...]
    handlers: tuple[BaseHandler, ...]
    #: What chose it: ``"draw"`` for the behavior mix.
    by: str = "draw"

    @property
    def chain(self) -> str:
        """The chain as behaviors write it, ``"latency+bandwidth"``."""
        return "+".join(self.names)


class Plan:
    """A behavior, its handler instances and the options they were made with."""

    def __init__(
        self,
        behavior: Behavior,
        instances: Mapping[str, BaseHandler],
        options: SourcedOptions,
        protocol: str = TCP,
    ) -> None:
        self.behavior = behavior
        self.instances = dict(instances)
        #: The raw options, with their sources: a live change lays its own over them.
        self.options = options
        self.protocol = protocol

    @property
    def spec(self) -> str:
        """The behavior as written, else in canonical form."""
        return self.behavior.spec or str(self.behavior)

    def handler(self, name: str) -> BaseHandler:
        """The instance the behavior uses under ``name``."""
        return self.instances[name]

    def decide(self, unit: Unit, draw: Callable[[], random.Random]) -> Decision:
        """The fault ``unit`` gets: the behavior mix draws from ``draw()``.

        ``draw`` is called only when there is a choice to make, so the
        common ``100:NAME`` case costs no random source.
        """
        names = self.behavior.choose(draw)
        return Decision(names, tuple(self.instances[name] for name in names))

    def __repr__(self) -> str:
        return f"<Plan {self.protocol} {self.spec!r}>"


def _convert_options(
    options: SourcedOptions, behavior: Behavior, registry: Registry, skip_unknown: bool
) -> dict[str, ConvertedOptions]:
    """Convert every option to its handler's declared type, once.

    :raises ConfigError: naming the source, the handler, the option and the value.
    """
    targets = registry.option_targets(behavior)
    converted: dict[str, ConvertedOptions] = {}
    for name, values in options.items():
        if not values:
            continue
        handler = targets.get(name)
        if handler is None:
            if skip_unknown and "." not in name:
                continue
            source = next(iter(values.values())).source
            raise ConfigError(
                f"{source}: options given for unknown handler {name!r}; "
                f"known: {', '.join(sorted(targets))}"
            )
        out = converted[name] = ConvertedOptions()
        for option, sourced in values.items():
            try:
                out[option] = handler.convert_option(option, sourced.value)
            except ConfigError as error:
                raise ConfigError(f"{sourced.source}: {error}") from None
    return converted


def _instantiate(
    handler_class: type[BaseHandler],
    settings: ConvertedOptions,
    proxy: ProxyInfo | None,
    where: str,
) -> BaseHandler:
    """Make one handler; whatever its ``__init__`` raises becomes one clear error."""
    try:
        return handler_class(settings, proxy)
    except VaurienError:
        raise
    except Exception as error:
        raise HandlerError(
            f"{where}: handler {handler_class.name!r} ({handler_class.__module__}."
            f"{handler_class.__qualname__}) failed to start: {error!r}"
        ) from error


def build_plan(
    behavior: Behavior,
    options: SourcedOptions,
    registry: Registry,
    *,
    behavior_source: str = "behavior",
    proxy: ProxyInfo | None = None,
    reuse: Plan | None = None,
    skip_unknown: bool = False,
) -> Plan:
    """Resolve every name, convert every option once, make the handlers.

    :param reuse: a previous plan whose instances are kept where the class
        and options are unchanged (so are their counters, e.g. ``warmup``).
    :param skip_unknown: leave names ``registry`` does not know, and their
        options (at start-up, a ``conftest.py`` not loaded yet may define them).
    :raises ConfigError: for an unknown name or a bad option, naming its source.
    :raises HandlerError: for a handler that cannot be loaded or made.
    """
    converted = _convert_options(options, behavior, registry, skip_unknown)
    instances: dict[str, BaseHandler] = {}
    for name in behavior.names:
        if skip_unknown and name not in registry.names and "." not in name:
            continue
        handler_class = registry.resolve(name, behavior_source)
        settings = ConvertedOptions(
            {**converted.get(handler_class.name, {}), **converted.get(name, {})}
        )
        old = reuse.instances.get(name) if reuse is not None else None
        if old is not None and type(old) is handler_class and old.settings == settings:
            instances[name] = old  # unchanged: it keeps its counters
        else:
            instances[name] = _instantiate(handler_class, settings, proxy, behavior_source)
    return Plan(behavior, instances, options)


def plan_from_settings(
    settings: Settings, registry: Registry, proxy: ProxyInfo | None = None
) -> Plan:
    """The plan the resolved ``settings`` give."""
    return build_plan(
        settings.behavior,
        settings.options,
        registry,
        behavior_source=settings.behavior_source,
        proxy=proxy,
    )


def check_settings(settings: Settings, registry: Registry, *, skip_unknown: bool = False) -> None:
    """Raise what building a plan from ``settings`` would raise, and nothing else."""
    build_plan(
        settings.behavior,
        settings.options,
        registry,
        behavior_source=settings.behavior_source,
        skip_unknown=skip_unknown,
    )


def relayered(
    plan: Plan,
    spec: str,
    options: Mapping[tuple[str, str], object],
    registry: Registry,
    *,
    where: str,
    proxy: ProxyInfo | None = None,
) -> Plan:
    """A new plan: ``spec`` and ``options`` laid over ``plan``'s options (a live change).

    :raises ConfigError: for a bad spec or option; ``plan`` is untouched.
    """
    merged: dict[str, dict[str, Sourced]] = {
        name: dict(values) for name, values in plan.options.items()
    }
    for (name, option), value in options.items():
        merged.setdefault(name, {})[option] = Sourced(value, where)
    return build_plan(
        parse_behavior(spec, where),
        merged,
        registry,
        behavior_source=where,
        proxy=proxy,
        reuse=plan,
    )
