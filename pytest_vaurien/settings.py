"""Configuration sources -> one frozen, typed settings value.

Sources, from low to high precedence: handler defaults, ini (or a config
file), command line, marker. Each source is a :class:`Layer`; every value
keeps the name of the layer it came from, so an error can say where the bad
value was written. No pytest, no gevent: the plugin and the command both
build layers and call :func:`resolve`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_vaurien.address import Address, parse_address
from pytest_vaurien.behavior import Behavior, parse_behavior
from pytest_vaurien.errors import ConfigError
from pytest_vaurien.protocols import TCP, check_protocol
from pytest_vaurien.rules import Rule, coerce_rules

__all__ = [
    "Layer",
    "Settings",
    "Sourced",
    "parse_handler_assignment",
    "parse_handler_lines",
    "parse_marker_options",
    "resolve",
]


@dataclass(frozen=True)
class Sourced:
    """A raw value and the name of the source it came from."""

    value: Any
    source: str


@dataclass(frozen=True)
class Layer:
    """What one configuration source says; ``None`` means "not set here"."""

    source: str
    distant: str | tuple[str, int] | None = None
    behavior: str | None = None
    #: ``(handler name, option) -> raw value``
    options: Mapping[tuple[str, str], Any] = field(default_factory=dict)
    seed: int | None = None
    #: Names the source of ``distant``/``behavior`` more precisely, if it differs.
    distant_source: str | None = None
    behavior_source: str | None = None
    protocol: str | None = None
    protocol_source: str | None = None
    #: Rule objects or their string forms; a layer that gives any replaces
    #: the rules of every lower layer as a whole.
    rules: Sequence[Rule | str] | None = None
    rules_source: str | None = None

    @classmethod
    def from_keywords(
        cls,
        where: str,
        distant: str | tuple[str, int] | None,
        behavior: str | None,
        keywords: Mapping[str, Any],
        *,
        protocol: str | None = None,
        rules: Sequence[Rule | str] | None = None,
    ) -> Layer:
        """A layer from ``distant=``, ``behavior=``, ``protocol=``, ``rules=`` and
        ``NAME__OPTION=`` keywords, as the marker and the factory take them."""
        return cls(
            source=where,
            distant=distant,
            behavior=behavior,
            options=parse_marker_options(keywords, where),
            distant_source=f"{where}: distant",
            behavior_source=f"{where}: behavior",
            protocol=protocol,
            protocol_source=f"{where}: protocol",
            rules=rules,
            rules_source=f"{where}: rules",
        )


@dataclass(frozen=True)
class Settings:
    """The configuration in force for one proxy, resolved once."""

    distant: Address | None = None
    distant_source: str = "nowhere"
    behavior: Behavior = field(default_factory=lambda: parse_behavior("100:dummy"))
    behavior_source: str = "default"
    options: Mapping[str, Mapping[str, Sourced]] = field(default_factory=dict)
    seed: int | None = None
    protocol: str = TCP
    protocol_source: str = "default"
    #: Rules as the user wrote them (a proxy binds live copies).
    rules: tuple[Rule, ...] = ()
    rules_source: str = "rules"


def resolve(layers: Iterable[Layer]) -> Settings:
    """Merge ``layers``, given from low to high precedence, into one value.

    :raises ConfigError: for an address or a behavior that does not parse.
    """
    distant: Address | None = None
    distant_source = "nowhere"
    behavior = parse_behavior("100:dummy")
    behavior_source = "default"
    options: dict[str, dict[str, Sourced]] = {}
    seed: int | None = None
    protocol, protocol_source = TCP, "default"
    rules: tuple[Rule, ...] = ()
    rules_source = "rules"
    for layer in layers:
        if layer.distant is not None:
            distant_source = layer.distant_source or layer.source
            distant = parse_address(layer.distant, distant_source)
        if layer.behavior is not None:
            behavior_source = layer.behavior_source or layer.source
            behavior = parse_behavior(layer.behavior, behavior_source)
        for (name, option), value in layer.options.items():
            options.setdefault(name, {})[option] = Sourced(value, layer.source)
        if layer.seed is not None:
            seed = layer.seed
        if layer.protocol is not None:
            protocol_source = layer.protocol_source or layer.source
            protocol = check_protocol(layer.protocol, protocol_source)
        if layer.rules:
            rules_source = layer.rules_source or layer.source
            rules = tuple(coerce_rules(layer.rules, rules_source))
    return Settings(
        distant,
        distant_source,
        behavior,
        behavior_source,
        options,
        seed,
        protocol,
        protocol_source,
        rules,
        rules_source,
    )


def parse_handler_assignment(text: str, where: str) -> tuple[tuple[str, str], str]:
    """``"delay.sleep=2"`` (or ``"handlers.delay.sleep = 2"``) -> ``(("delay", "sleep"), "2")``.

    :raises ConfigError: naming ``where`` and the text when it is malformed.
    """
    key, sep, value = text.partition("=")
    key = key.strip()
    if key.startswith("handlers."):
        key = key[len("handlers.") :]
    name, dot, option = key.rpartition(".")
    if not sep or not dot or not name or not option.isidentifier():
        raise ConfigError(
            f"{where}: {text.strip()!r} is not an option setting; expected "
            "NAME.OPTION=VALUE, e.g. delay.sleep=2"
        )
    return (name, option), value.strip()


def parse_handler_lines(lines: Iterable[str], where: str) -> dict[tuple[str, str], str]:
    """Parse ``NAME.OPTION = VALUE`` lines, skipping blank ones and ``#`` comments."""
    parsed: dict[tuple[str, str], str] = {}
    for line in lines:
        if line.strip() and not line.strip().startswith("#"):
            key, value = parse_handler_assignment(line, where)
            parsed[key] = value
    return parsed


def parse_marker_options(kwargs: Mapping[str, Any], where: str) -> dict[tuple[str, str], Any]:
    """``{"delay__sleep": 2}`` -> ``{("delay", "sleep"): 2}``.

    :raises ConfigError: for a keyword that is not ``NAME__OPTION``.
    """
    parsed: dict[tuple[str, str], Any] = {}
    for key, value in kwargs.items():
        name, sep, option = key.partition("__")
        if not sep or not name or not option:
            raise ConfigError(
                f"{where}: unexpected keyword argument {key!r}; expected "
                "behavior=, distant= or NAME__OPTION=VALUE such as delay__sleep=2"
            )
        parsed[(name, option)] = value
    return parsed
