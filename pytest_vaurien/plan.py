"""The fault plan: what one proxy does to each unit of traffic.

Built once from resolved settings - the behavior, the handler instances with
their options converted, the protocol - and never changed afterwards: a live
change builds a new plan and the proxy swaps it whole, so a connection knows
its chain is stale by comparing plans by identity, and two threads never see
half a change.

The *unit* is what one fault decision is made for: under ``tcp`` the
connection, under a protocol one request and its reply (design.md, "The
unit of traffic"). The engine hands the plan a :class:`Unit` and gets a
:class:`Decision` back: the first rule that matches the unit and whose
schedule and percent hold, else the behavior mix. Pure: no gevent, no pytest.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from pytest_vaurien.behavior import Behavior, parse_behavior
from pytest_vaurien.errors import ConfigError, HandlerError, VaurienError
from pytest_vaurien.handlers.base import BaseHandler, ConvertedOptions
from pytest_vaurien.handlers.context import ProxyInfo
from pytest_vaurien.protocols import TCP, check_protocol, wire_protocol
from pytest_vaurien.protocols.base import Matcher, MessageInfo, WireProtocol
from pytest_vaurien.registry import Registry
from pytest_vaurien.rules import Rule, coerce_rules
from pytest_vaurien.settings import Settings, Sourced

__all__ = [
    "TCP",
    "BoundRule",
    "Decision",
    "Plan",
    "SourcedOptions",
    "Unit",
    "build_plan",
    "check_settings",
    "percent_draw",
    "plan_from_settings",
    "rebuilt",
    "relayered",
    "with_behavior_of",
    "with_rules",
]

#: ``handler name -> option -> raw value and its source``, as settings hold them.
SourcedOptions = Mapping[str, Mapping[str, Sourced]]


class Unit(NamedTuple):
    """One thing a fault is decided for (under ``tcp``: a connection).

    A named tuple: one is made per request under a protocol, on the hot path.
    """

    #: The connection's index on its proxy, from 0.
    connection: int
    #: 1, 2, ... in arrival order at the proxy.
    ordinal: int
    #: Seconds since the proxy started.
    time: float
    #: The request, under a protocol (``None`` under ``tcp``).
    request: MessageInfo | None = None


@dataclass(frozen=True)
class Decision:
    """The fault one unit gets: a chain of handler names and their instances."""

    names: tuple[str, ...]
    handlers: tuple[BaseHandler, ...]
    #: What chose it: ``"draw"`` for the behavior mix, else the rule's name.
    by: str = "draw"
    #: The live rule that fired, if one did.
    rule: Rule | None = None

    @property
    def chain(self) -> str:
        """The chain as behaviors write it, ``"latency+bandwidth"``."""
        return "+".join(self.names)


@dataclass(frozen=True)
class BoundRule:
    """A live rule with what it needs to decide: its position, its matcher
    (``None``: every unit) and its own handler instances."""

    rule: Rule
    position: int
    matcher: Matcher | None
    names: tuple[str, ...]
    handlers: tuple[BaseHandler, ...]


def percent_draw(seed: int, position: int, ordinal: int, connection: int | None = None) -> float:
    """A number in [0, 100) that depends on nothing but its arguments.

    So the same seed fires the same units whatever the thread interleaving,
    the test order or the xdist worker (design.md, "Rules and schedules").
    """
    key = f"{seed}:{position}:{ordinal}" + ("" if connection is None else f":{connection}")
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * 100.0


class Plan:
    """A behavior, rules, their handler instances and the options they were made with."""

    def __init__(
        self,
        behavior: Behavior,
        instances: Mapping[str, BaseHandler],
        options: SourcedOptions,
        protocol: str = TCP,
        rules: Sequence[BoundRule] = (),
        seed: int = 0,
        rules_source: str = "rules",
    ) -> None:
        self.behavior = behavior
        self.instances = dict(instances)
        #: The raw options, with their sources: a live change lays its own over them.
        self.options = options
        self.protocol = protocol
        #: The protocol's framers and matchers; ``None`` under ``tcp``.
        self.wire: WireProtocol | None = wire_protocol(protocol)
        self.bound_rules = tuple(rules)
        self.seed = seed
        self.rules_source = rules_source
        entries = behavior.entries
        #: A behavior with nothing to draw (one chain for 100 %) decides the
        #: same for every unit: made once (a decision per request adds up).
        self._fixed: Decision | None = None
        if not entries or (len(entries) == 1 and entries[0].percent >= 100.0):
            names = entries[0].chain if entries else ("dummy",)
            if all(name in self.instances for name in names):
                self._fixed = Decision(names, tuple(self.instances[name] for name in names))

    @property
    def fixed(self) -> Decision | None:
        """The decision every unit gets when no rule fires, if the behavior
        has nothing to draw (``100:dummy``); else ``None``."""
        return self._fixed

    @property
    def rules(self) -> list[Rule]:
        """The live rules, in order."""
        return [bound.rule for bound in self.bound_rules]

    @property
    def spec(self) -> str:
        """The behavior as written, else in canonical form."""
        return self.behavior.spec or str(self.behavior)

    def handler(self, name: str) -> BaseHandler:
        """The instance the behavior uses under ``name``."""
        return self.instances[name]

    def decide(
        self,
        unit: Unit,
        draw: Callable[[], random.Random],
        per_connection: MutableMapping[int, int] | None = None,
    ) -> Decision:
        """The fault ``unit`` gets: the first rule that fires, else the behavior mix.

        Each rule whose match holds counts the unit; it fires if its
        schedule and percent hold too. ``per_connection`` keeps the ordinals
        of ``per="connection"`` rules for the unit's connection. ``draw`` is
        called only when the behavior has a choice to make, so the common
        ``100:NAME`` case costs no random source.
        """
        for bound in self.bound_rules:
            rule = bound.rule
            if bound.matcher is not None and (
                unit.request is None or not bound.matcher(unit.request)
            ):
                continue
            rule.matched += 1
            connection: int | None = None
            if rule.per == "connection":
                counts = per_connection if per_connection is not None else {}
                ordinal = counts[bound.position] = counts.get(bound.position, 0) + 1
                connection = unit.connection
            else:
                ordinal = rule.matched
            if not rule.schedule.holds(ordinal, unit.time, rule.fired):
                continue
            if rule.percent < 100.0 and (
                percent_draw(self.seed, bound.position, ordinal, connection) >= rule.percent
            ):
                continue
            rule.fired += 1
            return Decision(bound.names, bound.handlers, rule.name, rule)
        return self.draw(draw)

    def draw(self, draw: Callable[[], random.Random]) -> Decision:
        """The behavior mix alone: a unit no rule fired for, drawn again
        after a live change of behavior."""
        if self._fixed is not None:
            return self._fixed
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


def check_replies(wire: WireProtocol, handlers: Sequence[BaseHandler], where: str) -> None:
    """Check, at configuration time, the error replies ``handlers`` would make,
    so a bad header line is said now, not when the fault first fires."""
    for handler in handlers:
        reply = getattr(handler, "reply_options", None)
        if reply is not None:
            wire.check_error_options(reply(), where)


def _bind_rules(
    rules: Sequence[Rule],
    converted: Mapping[str, ConvertedOptions],
    registry: Registry,
    wire: WireProtocol | None,
    protocol: str,
    *,
    where: str,
    proxy: ProxyInfo | None,
    reuse: Plan | None,
) -> list[BoundRule]:
    """Live rules, checked: names, options, match forms, error options."""
    bound: list[BoundRule] = []
    names: set[str] = set()
    previous = {id(b.rule): b for b in reuse.bound_rules} if reuse is not None else {}
    for position, rule in enumerate(rules, start=1):
        rule.name = rule.given_name or f"{rule.fault}#{position}"
        here = f"{where}: rule {rule.name!r}"
        if rule.name in names:
            raise ConfigError(f"{here}: the name is taken by an earlier rule; names must differ")
        names.add(rule.name)
        if wire is None:
            if rule.match is not None:
                raise ConfigError(
                    f"{here}: match={rule.match!r} needs a protocol; under tcp the unit is the "
                    "connection and a rule matches every one (set protocol='http', ...)"
                )
            matcher = None
        else:
            matcher = wire.parse_match(rule.match, f"{here}: match") if rule.match else None
        classes = [registry.resolve(name, here) for name in rule.chain]
        for (handler, option), value in rule.handler_options.items():
            owner = next(
                (
                    cls
                    for name, cls in zip(rule.chain, classes, strict=True)
                    if handler in (name, cls.name)
                ),
                None,
            )
            if owner is None:
                raise ConfigError(
                    f"{here}: option {handler}__{option} names no handler of its fault "
                    f"{rule.fault!r}"
                )
            try:
                owner.convert_option(option, value)
            except ConfigError as error:
                raise ConfigError(f"{here}: {error}") from None
        old = previous.get(id(rule))
        handlers = []
        for index, (name, cls) in enumerate(zip(rule.chain, classes, strict=True)):
            settings = ConvertedOptions({**converted.get(cls.name, {}), **converted.get(name, {})})
            for (handler, option), value in rule.handler_options.items():
                if handler in (name, cls.name):
                    settings[option] = cls.convert_option(option, value)
            kept = old.handlers[index] if old is not None and index < len(old.handlers) else None
            if kept is not None and type(kept) is cls and kept.settings == settings:
                handlers.append(kept)
            else:
                handlers.append(_instantiate(cls, settings, proxy, here))
        if wire is not None:
            check_replies(wire, handlers, here)
        bound.append(BoundRule(rule, position, matcher, rule.chain, tuple(handlers)))
    return bound


def build_plan(
    behavior: Behavior,
    options: SourcedOptions,
    registry: Registry,
    *,
    behavior_source: str = "behavior",
    proxy: ProxyInfo | None = None,
    reuse: Plan | None = None,
    skip_unknown: bool = False,
    protocol: str = TCP,
    rules: Sequence[Rule] = (),
    rules_source: str = "rules",
    seed: int = 0,
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
    wire = wire_protocol(check_protocol(protocol, "protocol"))
    if wire is not None:
        check_replies(wire, list(instances.values()), behavior_source)
    if skip_unknown:
        rules = [
            rule
            for rule in rules
            if all(name in registry.names or "." in name for name in rule.chain)
        ]
    bound = _bind_rules(
        rules,
        converted,
        registry,
        wire,
        protocol,
        where=rules_source,
        proxy=proxy,
        reuse=reuse,
    )
    return Plan(behavior, instances, options, protocol, bound, seed, rules_source)


def plan_from_settings(
    settings: Settings, registry: Registry, proxy: ProxyInfo | None = None, seed: int = 0
) -> Plan:
    """The plan the resolved ``settings`` give; its rules are fresh live copies."""
    return build_plan(
        settings.behavior,
        settings.options,
        registry,
        behavior_source=settings.behavior_source,
        proxy=proxy,
        protocol=settings.protocol,
        rules=[rule.copy() for rule in settings.rules],
        rules_source=settings.rules_source,
        seed=seed,
    )


def check_settings(settings: Settings, registry: Registry, *, skip_unknown: bool = False) -> None:
    """Raise what building a plan from ``settings`` would raise, and nothing else."""
    build_plan(
        settings.behavior,
        settings.options,
        registry,
        behavior_source=settings.behavior_source,
        skip_unknown=skip_unknown,
        protocol=settings.protocol,
        rules=[rule.copy() for rule in settings.rules],
        rules_source=settings.rules_source,
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
    behavior = parse_behavior(spec, where)
    targets = registry.option_targets(behavior)
    merged: dict[str, dict[str, Sourced]] = {}
    # options of a handler the new behavior cannot name (a dotted path it
    # left) stay, unconverted, for a later change that names it again
    dormant: dict[str, dict[str, Sourced]] = {}
    for name, values in plan.options.items():
        (merged if name in targets else dormant)[name] = dict(values)
    for (name, option), value in options.items():
        dormant.pop(name, None)
        merged.setdefault(name, {})[option] = Sourced(value, where)
    new = rebuilt(plan, behavior, merged, registry, where=where, proxy=proxy)
    if dormant:
        new.options = {**dormant, **new.options}
    return new


def rebuilt(
    plan: Plan,
    behavior: Behavior,
    options: SourcedOptions,
    registry: Registry,
    *,
    where: str,
    proxy: ProxyInfo | None = None,
) -> Plan:
    """``plan`` with ``behavior`` and exactly ``options``: its protocol, its live
    rules (with their counts) and its seed kept; an unchanged handler keeps its
    instance.

    :raises ConfigError: for a bad option; ``plan`` is untouched.
    """
    return build_plan(
        behavior,
        options,
        registry,
        behavior_source=where,
        proxy=proxy,
        reuse=plan,
        protocol=plan.protocol,
        rules=plan.rules,
        rules_source=plan.rules_source,
        seed=plan.seed,
    )


def with_behavior_of(plan: Plan, other: Plan) -> Plan:
    """``plan`` with ``other``'s behavior, handlers and options (its rules kept):
    what ``set_behavior``'s restore puts back."""
    return Plan(
        other.behavior,
        other.instances,
        other.options,
        plan.protocol,
        plan.bound_rules,
        plan.seed,
        plan.rules_source,
    )


def with_rules(
    plan: Plan,
    rules: Sequence[Rule | str],
    registry: Registry,
    *,
    where: str,
    proxy: ProxyInfo | None = None,
) -> Plan:
    """A new plan with ``rules`` instead of ``plan``'s: live ones are kept as
    they are (with their counters), others bound as fresh copies.

    :raises ConfigError: for a bad rule; ``plan`` is untouched.
    """
    live = {id(rule) for rule in plan.rules}
    bound = [
        rule if isinstance(rule, Rule) and id(rule) in live else rule.copy()
        for rule in coerce_rules(rules, where)
    ]
    return build_plan(
        plan.behavior,
        plan.options,
        registry,
        behavior_source=where,
        proxy=proxy,
        reuse=plan,
        protocol=plan.protocol,
        rules=bound,
        rules_source=where,
        seed=plan.seed,
    )
