"""Schedules: which of the units a rule matched it fires on.

``"first:2"``, ``"after:3&every:2"``, ``"window:1.5..4&times:3"``: terms joined
with ``&``, all of which must hold. A schedule is evaluated over a unit's
ordinal (counted by the rule), its time (seconds since the proxy started)
and how many times the rule fired so far. Pure: no gevent, no pytest.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from pytest_vaurien.echo import echo
from pytest_vaurien.errors import ConfigError

__all__ = ["ALWAYS", "Schedule", "parse_schedule"]

#: Each term's form, for messages.
FORMS = {
    "first": "first:N (ordinals 1 to N)",
    "after": "after:N (ordinals above N)",
    "every": "every:K or every:K+O (ordinal minus O a positive multiple of K)",
    "at": "at:I,J,... (exactly these ordinals)",
    "times": "times:M (at most M fires in all)",
    "window": "window:T0..T1 or window:T0.. (seconds since the proxy started)",
}

#: ``(ordinal, time, fired) -> holds``
Test = Callable[[int, float, int], bool]


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule; ``str()`` gives it back as written."""

    text: str
    tests: tuple[Test, ...] = ()

    def holds(self, ordinal: int, time: float, fired: int) -> bool:
        """Whether the unit with this ordinal and time fires, the rule having
        fired ``fired`` times before."""
        return all(test(ordinal, time, fired) for test in self.tests)

    def __str__(self) -> str:
        return self.text


#: The schedule of a rule without one: every matched unit.
ALWAYS = Schedule("")


def _count(text: str, term: str, where: str, kind: str, least: int) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        value = None
    if value is None or value < least:
        raise ConfigError(
            f"{where}: schedule term {echo(term)} is not valid; expected {FORMS[kind]}, "
            f"{'N' if kind != 'every' else 'K'} a whole number >= {least}"
        )
    return value


def _seconds(text: str, term: str, where: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ConfigError(
            f"{where}: schedule term {echo(term)} is not valid; expected {FORMS['window']}, "
            "times in seconds >= 0"
        )
    return value


def _term(term: str, where: str) -> Test:
    kind, sep, arg = term.partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in FORMS:
        raise ConfigError(
            f"{where}: schedule term {echo(term)} is not valid; expected one of "
            + "; ".join(FORMS[k] for k in sorted(FORMS))
        )
    if kind == "first":
        n = _count(arg, term, where, kind, 0)
        return lambda ordinal, time, fired: ordinal <= n
    if kind == "after":
        n = _count(arg, term, where, kind, 0)
        return lambda ordinal, time, fired: ordinal > n
    if kind == "times":
        m = _count(arg, term, where, kind, 0)
        return lambda ordinal, time, fired: fired < m
    if kind == "every":
        step, plus, offset_text = arg.partition("+")
        k = _count(step, term, where, kind, 1)
        offset = _count(offset_text, term, where, kind, 0) if plus else 0
        return lambda ordinal, time, fired: ordinal > offset and (ordinal - offset) % k == 0
    if kind == "at":
        pieces = arg.split(",")
        wanted = frozenset(_count(piece, term, where, kind, 1) for piece in pieces)
        return lambda ordinal, time, fired: ordinal in wanted
    start_text, dots, end_text = arg.partition("..")
    if not dots:
        raise ConfigError(
            f"{where}: schedule term {echo(term)} is not valid; expected {FORMS['window']}"
        )
    start = _seconds(start_text, term, where)
    if not end_text.strip():
        return lambda ordinal, time, fired: time >= start
    end = _seconds(end_text, term, where)
    if end < start:
        raise ConfigError(
            f"{where}: schedule term {echo(term)} ends before it starts; expected T0 <= T1"
        )
    return lambda ordinal, time, fired: start <= time < end


def parse_schedule(text: object, where: str = "schedule") -> Schedule:
    """Parse ``"first:2&window:0..5"``; ``None`` or ``""`` is every unit.

    :raises ConfigError: naming ``where`` and the bad term.
    """
    if text is None:
        return ALWAYS
    if not isinstance(text, str):
        raise ConfigError(
            f"{where}: schedule {text!r} is not a string; expected terms such as 'first:2' "
            "joined with '&'"
        )
    if not text.strip():
        return ALWAYS
    terms = [term.strip() for term in text.split("&")]
    if any(not term for term in terms):
        raise ConfigError(
            f"{where}: schedule {echo(text)} has an empty term; expected terms such as "
            "'first:2' joined with '&'"
        )
    return Schedule(text.strip(), tuple(_term(term, where) for term in terms))
