"""Waiting until a proxy has seen enough: ``proxy.wait(rule="x", fired=2)``.

One goal at a time - a rule fired at least N times, or at least N connections
accepted - checked by bounded polling (the counters move in the proxy's own
thread, which no lock is worth slowing down). The caller gives the sleep: the
in-process ``Proxy`` sleeps its thread, the control API a greenlet. Pure: no
gevent, no pytest.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pytest_vaurien.echo import echo
from pytest_vaurien.errors import ConfigError
from pytest_vaurien.rules import Rule

__all__ = ["Goal", "Waited", "wait_for"]

#: The first poll comes soon; later ones back off to this.
MAX_POLL = 0.02


class Waited(Protocol):
    """What a wait reads of a proxy."""

    @property
    def accepted(self) -> int: ...

    @property
    def rules(self) -> list[Rule]: ...


def _count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{what}={echo(value)} is not valid; expected a whole number >= 0")
    return value


def _timeout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"timeout={echo(value)} is not valid; expected seconds, a number >= 0")
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"timeout={echo(value)} is not valid; expected seconds, a number >= 0")
    return float(value)


@dataclass(frozen=True)
class Goal:
    """A rule fired at least ``fired`` times, or ``connections`` accepted."""

    rule: str | None = None
    fired: int | None = None
    connections: int | None = None

    @classmethod
    def of(cls, rule: object = None, fired: object = None, connections: object = None) -> Goal:
        """Check a goal as users give it.

        :raises ConfigError: naming the argument that is missing or wrong.
        """
        if connections is not None:
            if rule is not None or fired is not None:
                raise ConfigError("wait: give either rule= and fired=, or connections=, not both")
            return cls(connections=_count(connections, "connections"))
        if rule is None and fired is None:
            raise ConfigError("wait: nothing to wait for; give rule= and fired=, or connections=")
        if not isinstance(rule, str) or not rule:
            raise ConfigError(f"rule={echo(rule)} is not valid; expected a rule's name")
        return cls(rule=rule, fired=_count(1 if fired is None else fired, "fired"))

    def counts(self, proxy: Waited) -> dict[str, object]:
        """Where the proxy stands on this goal, as the API answers it.

        :raises KeyError: for a rule the proxy does not have.
        """
        if self.rule is None:
            return {"connections": proxy.accepted}
        for rule in proxy.rules:
            if rule.name == self.rule:
                return {"rule": rule.name, "matched": rule.matched, "fired": rule.fired}
        known = ", ".join(rule.name for rule in proxy.rules) or "none"
        raise KeyError(f"no rule named {self.rule!r}; known: {known}")

    def reached(self, counts: dict[str, object]) -> bool:
        if self.rule is None:
            return counts["connections"] >= self.connections  # type: ignore[operator]
        return counts["fired"] >= self.fired  # type: ignore[operator]

    def describe(self, counts: dict[str, object]) -> str:
        if self.rule is None:
            return f"{counts['connections']} connections accepted, waited for {self.connections}"
        return (
            f"rule {self.rule!r} fired {counts['fired']} times (matched {counts['matched']}), "
            f"waited for {self.fired}"
        )


def wait_for(
    proxy: Waited,
    goal: Goal,
    timeout: float,
    sleep: Callable[[float], object] = time.sleep,
) -> dict[str, object]:
    """Return the counts once ``goal`` is reached.

    :raises TimeoutError: after ``timeout`` seconds, naming the counts.
    :raises KeyError: for a rule the proxy does not have (checked each poll:
        a rule removed while waiting ends the wait).
    """
    deadline = time.monotonic() + _timeout(timeout)
    poll = 0.001
    while True:
        counts = goal.counts(proxy)
        if goal.reached(counts):
            return counts
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out after {timeout:g}s: {goal.describe(counts)}")
        sleep(min(poll, left))
        poll = min(poll * 2, MAX_POLL)
