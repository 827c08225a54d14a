"""Behaviors: ``"20:delay,10:error"`` parsing and the per-connection draw.

A behavior is a list of entries, each a percentage and a chain of handler
names (``"30:latency+bandwidth"``). Whatever share the entries leave is
``dummy``. Parsing checks the grammar only; which names exist is the
registry's business, so this module imports neither pytest nor gevent.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from pytest_vaurien.echo import echo
from pytest_vaurien.errors import ConfigError

__all__ = ["Behavior", "Entry", "parse_behavior"]

TRANSPARENT = "dummy"


@dataclass(frozen=True)
class Entry:
    """One ``PERCENT:NAME[+NAME...]`` piece of a behavior."""

    percent: float
    chain: tuple[str, ...]

    def __str__(self) -> str:
        percent = f"{self.percent:g}"
        return f"{percent}:{'+'.join(self.chain)}"


@dataclass(frozen=True)
class Behavior:
    """A parsed behavior spec; ``str()`` gives it back in canonical form."""

    entries: tuple[Entry, ...]
    #: The text it was parsed from, as written.
    spec: str = field(default="", compare=False)

    @property
    def names(self) -> tuple[str, ...]:
        """Every handler name the behavior uses, ``dummy`` included, in order."""
        seen: dict[str, None] = {}
        for entry in self.entries:
            seen.update(dict.fromkeys(entry.chain))
        if self.remainder > 0:
            seen[TRANSPARENT] = None
        return tuple(seen)

    @property
    def remainder(self) -> float:
        """The percentage left to ``dummy``."""
        return max(0.0, 100.0 - sum(entry.percent for entry in self.entries))

    def choose(self, source: Callable[[], random.Random]) -> tuple[str, ...]:
        """Draw the chain for one connection from the random source ``source()`` gives.

        A behavior without a choice to make (one entry for 100 %, or none)
        draws nothing, so the common case costs no random source.
        """
        if not self.entries:
            return (TRANSPARENT,)
        if len(self.entries) == 1 and self.entries[0].percent >= 100.0:
            return self.entries[0].chain
        point = source().random() * 100.0
        for entry in self.entries:
            if point < entry.percent:
                return entry.chain
            point -= entry.percent
        return (TRANSPARENT,)

    def __str__(self) -> str:
        return ",".join(str(entry) for entry in self.entries) or f"100:{TRANSPARENT}"


def parse_behavior(spec: str, where: str = "behavior") -> Behavior:
    """Parse ``"20:delay,10:error"``; a bare name means 100 %.

    A behavior is immutable: one parsed before is given again (every test of
    a suite parses the same few).

    :param where: names the source in error messages (``--vaurien-behavior``).
    :raises ConfigError: pointing at the malformed piece, or at the total.
    """
    if isinstance(spec, str):
        known = _PARSED.get(spec)
        if known is not None:
            return known
    behavior = _parse(spec, where)
    if len(_PARSED) >= _PARSED_SIZE:
        _PARSED.clear()
    _PARSED[spec] = behavior
    return behavior


#: Behaviors parsed so far, by their text (a bounded cache).
_PARSED: dict[str, Behavior] = {}
_PARSED_SIZE = 512


def _parse(spec: str, where: str) -> Behavior:
    if not isinstance(spec, str):
        raise ConfigError(
            f"{where}: {echo(spec)} is not a behavior; expected e.g. '20:delay,10:error'"
        )
    if not spec.strip():
        raise ConfigError(f"{where}: the behavior is empty; expected e.g. '20:delay,10:error'")
    entries = []
    for piece in spec.split(","):
        entries.append(_parse_entry(piece.strip(), spec, where))
    total = sum(entry.percent for entry in entries)
    if total > 100.0 + 1e-9:
        raise ConfigError(f"{where}: {echo(spec)}: percentages add up to {total:g}; at most 100")
    return Behavior(tuple(entries), spec.strip())


def _parse_entry(piece: str, spec: str, where: str) -> Entry:
    if not piece:
        raise ConfigError(
            f"{where}: {echo(spec)} has an empty entry; expected PERCENT:NAME entries "
            "separated by commas"
        )
    percent_text, sep, names = piece.rpartition(":") if ":" in piece else ("", "", piece)
    if sep:
        try:
            percent = float(percent_text)
        except ValueError:
            raise ConfigError(
                f"{where}: {echo(spec)}: {echo(piece)} has percentage {echo(percent_text)}; "
                "expected a number from 0 to 100"
            ) from None
        if not math.isfinite(percent) or not 0.0 <= percent <= 100.0:
            raise ConfigError(
                f"{where}: {echo(spec)}: {echo(piece)} has percentage {echo(percent_text)}; "
                "expected a number from 0 to 100"
            )
    else:
        percent = 100.0
    chain = tuple(name.strip() for name in names.split("+"))
    for name in chain:
        if not name or not all(part.isidentifier() for part in name.split(".")):
            raise ConfigError(
                f"{where}: {echo(spec)}: {echo(piece)} has handler name {echo(name)}; "
                "expected a name or a dotted path such as 'delay' or "
                "'package.module.Handler'"
            )
    return Entry(percent, chain)
