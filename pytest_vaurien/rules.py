"""Rules: a fault for the units a rule matches, on a schedule, with a percent.

``Rule("error", status=503, match="POST /payments/*", schedule="first:2")``
or, in ini lines and on command lines, its string form
``"error; status=503; match=POST /payments/*; schedule=first:2"``.

A ``Rule`` the user writes is a description; a proxy binds a copy of it
(its *live* rule, with ``matched`` and ``fired`` counting), so the same
marker reused by many tests never shares counters. What ``match`` means is
the protocol's business (:mod:`pytest_vaurien.protocols`). Pure: no gevent,
no pytest.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from pytest_vaurien.echo import echo
from pytest_vaurien.errors import ConfigError
from pytest_vaurien.schedule import Schedule, parse_schedule

__all__ = ["PER", "RULE_KEYS", "Rule", "coerce_rules", "parse_rule"]

#: The keys of a rule itself; every other key is an option of its fault.
RULE_KEYS = ("match", "schedule", "percent", "per", "name")
#: What ordinals count: the units this rule matched, or those of each connection.
PER = ("rule", "connection")


def _fault(fault: object, where: str) -> tuple[str, ...]:
    if not isinstance(fault, str) or not fault.strip():
        raise ConfigError(
            f"{where}: fault {fault!r} is not valid; expected a handler name or a chain "
            "such as 'error' or 'latency+bandwidth'"
        )
    chain = tuple(name.strip() for name in fault.split("+"))
    for name in chain:
        if not name or not all(part.isidentifier() for part in name.split(".")):
            raise ConfigError(
                f"{where}: fault {echo(fault)} has handler name {name!r}; expected a name "
                "or a dotted path such as 'error' or 'package.module.Handler'"
            )
    return chain


def _percent(value: object, where: str) -> float:
    try:
        percent = float(value.strip() if isinstance(value, str) else value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        percent = math.nan
    if isinstance(value, bool) or not 0.0 <= percent <= 100.0:
        raise ConfigError(
            f"{where}: percent={echo(value)} is not valid; expected a number from 0 to 100"
        )
    return percent


class Rule:
    """A fault for the units it matches, on a schedule.

    :param fault: a handler name or a ``+`` chain, as in behaviors.
    :param match: which units the rule considers: ``None`` (all), or the
        protocol's short string form or a dict (under ``tcp``: only ``None``).
    :param schedule: which matched units fire, e.g. ``"first:2"``.
    :param percent: the share of scheduled units that fire, drawn per unit.
    :param per: ordinals count the units of this ``"rule"``, or restart on
        each ``"connection"``.
    :param name: for records, reports and the API; ``"FAULT#POSITION"`` by default.
    :param options: the fault's options for this rule only (``status=503``;
        for a chain, ``NAME__OPTION=value``).
    :raises ConfigError: naming the bad piece.
    """

    def __init__(
        self,
        fault: str,
        *,
        match: object = None,
        schedule: str | None = None,
        percent: float | str = 100,
        per: str = "rule",
        name: str | None = None,
        **options: Any,
    ) -> None:
        where = f"Rule({fault!r})" if isinstance(fault, str) else "Rule()"
        self.chain = _fault(fault, where)
        self.fault = "+".join(self.chain)
        if match is not None and not isinstance(match, (str, Mapping)):
            raise ConfigError(
                f"{where}: match={echo(match)} is not valid; expected a string in the "
                "protocol's short form or a dict"
            )
        self.match = dict(match) if isinstance(match, Mapping) else match
        self.schedule: Schedule = parse_schedule(schedule, where)
        self.percent = _percent(percent, where)
        if per not in PER:
            raise ConfigError(f"{where}: per={per!r} is not valid; expected 'rule' or 'connection'")
        self.per = per
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ConfigError(f"{where}: name={name!r} is not valid; expected a non-empty string")
        self.given_name = name.strip() if name is not None else None
        #: The name in force: given, else ``FAULT#POSITION`` once bound to a proxy.
        self.name = self.given_name or self.fault
        self.options: dict[str, Any] = dict(options)
        self.handler_options = self._split_options(where)
        #: Units this rule matched, and of those, how many it fired on (live rules).
        self.matched = 0
        self.fired = 0
        #: The proxy a live rule belongs to (``with rule:`` removes it there).
        self.owner: RuleOwner | None = None

    def _split_options(self, where: str) -> dict[tuple[str, str], Any]:
        """``status=503`` -> ``{("error", "status"): 503}``; for chains ``NAME__OPTION``."""
        split: dict[tuple[str, str], Any] = {}
        for key, value in self.options.items():
            handler, sep, option = key.partition("__")
            if sep and handler and option:
                split[(handler, option)] = value
            elif len(self.chain) == 1 and key.isidentifier():
                split[(self.chain[0], key)] = value
            else:
                raise ConfigError(
                    f"{where}: option {key!r} is not valid; for a chain, name the handler: "
                    f"NAME__OPTION=value such as {self.chain[0]}__{key}=..."
                )
        return split

    def __enter__(self) -> Rule:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Leaving ``with proxy.add_rule(...)``: the rule is removed from its proxy."""
        if self.owner is not None and self in self.owner.rules:
            self.owner.remove_rule(self)

    def copy(self) -> Rule:
        """A fresh rule with the same configuration and counters at zero."""
        return Rule(
            self.fault,
            match=self.match,
            schedule=self.schedule.text or None,
            percent=self.percent,
            per=self.per,
            name=self.given_name,
            **self.options,
        )

    def describe(self) -> dict[str, Any]:
        """The rule as plain data (for records, reports and the API)."""
        return {
            "name": self.name,
            "fault": self.fault,
            "options": dict(self.options),
            "match": self.match,
            "schedule": self.schedule.text or None,
            "percent": self.percent,
            "per": self.per,
            "matched": self.matched,
            "fired": self.fired,
        }

    def __str__(self) -> str:
        """The string form, as ini lines and command lines write it."""
        parts = [self.fault]
        parts += [f"{key}={value}" for key, value in self.options.items()]
        if self.match is not None:
            parts.append(f"match={self.match}")
        if self.schedule.text:
            parts.append(f"schedule={self.schedule.text}")
        if self.percent != 100:
            parts.append(f"percent={self.percent:g}")
        if self.per != "rule":
            parts.append(f"per={self.per}")
        if self.given_name:
            parts.append(f"name={self.given_name}")
        return "; ".join(parts)

    def __repr__(self) -> str:
        return f"<Rule {self.name!r}: {self} (matched {self.matched}, fired {self.fired})>"


class RuleOwner(Protocol):
    """What a live rule knows of its proxy."""

    @property
    def rules(self) -> list[Rule]: ...

    def remove_rule(self, rule: Rule | str) -> None: ...


def parse_rule(text: object, where: str = "rule") -> Rule:
    """The string form: ``"error; status=503; match=POST /x; schedule=first:2"``.

    :raises ConfigError: naming ``where`` and the bad piece.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(
            f"{where}: {text!r} is not a rule; expected the fault, then '; key=value' pairs, "
            "e.g. 'error; status=503; match=POST /payments/*; schedule=first:2'"
        )
    fault, *pairs = [piece.strip() for piece in text.split(";")]
    keywords: dict[str, Any] = {}
    for pair in pairs:
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"{where}: {echo(pair)} is not a key=value pair; expected e.g. "
                "'schedule=first:2' or 'status=503'"
            )
        if key in keywords:
            raise ConfigError(f"{where}: {key!r} is given twice")
        keywords[key] = value.strip()
    try:
        return Rule(fault, **keywords)
    except ConfigError as error:
        raise ConfigError(f"{where}: {_strip_where(str(error))}") from None


def _strip_where(message: str) -> str:
    """``"Rule('error'): percent=..."`` -> ``"percent=..."``: the caller names the source."""
    head, sep, rest = message.partition(": ")
    return rest if sep and head.startswith("Rule(") else message


def coerce_rules(items: object, where: str) -> list[Rule]:
    """Rules from a list of ``Rule`` objects and strings (a marker's ``rules=``).

    :raises ConfigError: naming ``where`` and the position of the bad one.
    """
    if isinstance(items, (str, Rule)):
        items = [items]
    if not isinstance(items, Iterable):
        raise ConfigError(f"{where}: {items!r} is not a list of rules")
    rules = []
    for position, item in enumerate(items):
        if isinstance(item, Rule):
            rules.append(item)
        elif isinstance(item, str):
            rules.append(parse_rule(item, f"{where} {echo(item)}"))
        else:
            raise ConfigError(
                f"{where}[{position}]: {item!r} is not a rule; expected a pytest_vaurien.Rule "
                "or its string form"
            )
    return rules
