"""What happened to each connection and each exchange, kept for tests and reports."""

from __future__ import annotations

import enum
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pytest_vaurien.address import Address, format_address
from pytest_vaurien.behavior import TRANSPARENT
from pytest_vaurien.protocols import PROTOCOLS

__all__ = [
    "NO_HANDLER",
    "ConnectionRecord",
    "Ending",
    "ExchangeRecord",
    "Reported",
    "Stats",
    "format_exchanges",
    "format_records",
    "render_fault_report",
]


#: What the records and stats show for a connection that never got a handler.
NO_HANDLER = "-"


class Ending(str, enum.Enum):
    """How a connection ended."""

    CLIENT_CLOSED = "client closed"
    BACKEND_CLOSED = "backend closed"
    HANDLER_CLOSED = "handler closed"
    HANDLER_RESET = "handler reset"
    BACKEND_REFUSED = "backend refused"
    #: The proxy itself ran out of descriptors (or buffers) to connect with:
    #: not the backend's refusal.
    EXHAUSTED = "proxy out of descriptors"
    RESET = "reset"
    PROXY_STOPPED = "proxy stopped"
    PROXY_DOWN = "proxy down"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


@dataclass
class ConnectionRecord:
    """One accepted connection, filled in by the relay as it runs.

    ``handler`` is the chain the connection drew (``"delay"``,
    ``"latency+bandwidth"``); after a live behavior change it is the chain in
    force last, and ``handlers`` lists every chain in order.
    """

    index: int
    client: str
    handler: str = ""
    handlers: list[str] = field(default_factory=list)
    #: The options in force for each handler of the chain (defaults included).
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    bytes_to_backend: int = 0
    bytes_to_client: int = 0
    started: float = field(default_factory=time.time)
    duration: float | None = None
    ending: Ending | None = None
    error: str | None = None
    #: False when the chain spared the connection (``transient`` past its
    #: ``agitate``): relayed, not counted as a fault.
    injected: bool = True
    #: Under a protocol: why the connection fell back to plain relay, if it did
    #: (``"client side: HTTP Upgrade"``).
    plain: str | None = None

    @property
    def open(self) -> bool:
        """True while the connection is still being relayed."""
        return self.ending is None

    def end(self, ending: Ending, error: str | None = None) -> None:
        """Mark the connection ended; the first ending recorded wins."""
        if self.ending is None:
            self.ending = ending
            self.error = error
            self.duration = time.time() - self.started

    def describe(self) -> str:
        """A one-line summary, as the report and the command log print it."""
        how = "open" if self.ending is None else str(self.ending)
        if self.error:
            how = f"{how}: {self.error}"
        took = "" if self.duration is None else f" in {self.duration:.3f}s"
        return (
            f"#{self.index} {self.client} {self.handler or NO_HANDLER}: "
            f"{self.bytes_to_backend} B to backend, {self.bytes_to_client} B to client, "
            f"{how}{took}"
        )


@dataclass(slots=True)
class ExchangeRecord:
    """One exchange (a request and the reply answering it), under a protocol.

    ``by`` says what decided its fault: a rule's name, or ``"draw"`` for the
    behavior mix; ``injected`` is False when the fault spared it (``dummy``,
    or ``transient`` past its ``agitate``). ``reply`` summarises what the
    client got (``"200"``, ``"503"``); ``outcome`` how it went: ``relayed``,
    ``answered`` (the proxy's error), ``held`` (``hang``), ``aborted``,
    ``closed``; empty while it is under way.
    """

    connection: int
    ordinal: int
    request: str
    by: str = "draw"
    fault: str = TRANSPARENT
    injected: bool = False
    reply: str | None = None
    outcome: str = ""
    started: float = field(default_factory=time.time)
    duration: float | None = None
    #: Position among the proxy's exchanges, from 0.
    index: int = 0

    def describe(self) -> str:
        """A one-line summary: ``#3 POST /payments/7 -> 503 (rule pay: error)``."""
        took = "" if self.duration is None else f" in {self.duration:.3f}s"
        reply = self.reply or "-"
        return (
            f"#{self.ordinal} {self.request} -> {reply} ({self.by}: {self.fault}"
            f"{'' if self.injected or self.fault == TRANSPARENT else ', spared'})"
            f" {self.outcome or 'open'}{took}"
        )


@dataclass(frozen=True)
class Stats:
    """Totals over a proxy's connections, for assertions and summaries."""

    connections: int = 0
    #: Connections per handler chain drawn (``{"delay": 3, "dummy": 7}``).
    handlers: dict[str, int] = field(default_factory=dict)
    #: Connections per way they ended; open ones count as ``"open"``.
    endings: dict[str, int] = field(default_factory=dict)
    bytes_to_backend: int = 0
    bytes_to_client: int = 0
    #: Exchanges, under a protocol, and those a fault was injected into, per chain.
    exchanges: int = 0
    exchange_faults: dict[str, int] = field(default_factory=dict)
    #: Connections per chain that the chain relayed untouched (``transient``
    #: past its ``agitate``): drawn, but not faults.
    spared: dict[str, int] = field(default_factory=dict)

    @property
    def faults(self) -> dict[str, int]:
        """Faults injected, per chain: connections (leaving out the transparent
        ``dummy``, the connections that never got a handler - ``"-"``: refused
        by the backend, or stopped before it answered - and those relayed
        exchange by exchange under a protocol) plus exchanges."""
        counts = Counter(
            {
                name: count
                for name, count in self.handlers.items()
                if name not in (TRANSPARENT, NO_HANDLER) and name not in PROTOCOLS
            }
        )
        counts.subtract(self.spared)
        counts.update(self.exchange_faults)
        counts = +counts  # drop what the spared connections brought to zero
        return dict(sorted(counts.items()))

    @property
    def refused(self) -> int:
        """Connections the backend refused (they never got a handler)."""
        return self.endings.get(Ending.BACKEND_REFUSED.value, 0)

    @classmethod
    def of(cls, records: list[ConnectionRecord], exchanges: Sequence[ExchangeRecord] = ()) -> Stats:
        """Count ``records`` and ``exchanges``."""
        if not records and not exchanges:
            return cls()
        return cls(
            connections=len(records),
            handlers=dict(sorted(Counter(r.handler or NO_HANDLER for r in records).items())),
            endings=dict(sorted(Counter(str(r.ending or "open") for r in records).items())),
            bytes_to_backend=sum(r.bytes_to_backend for r in records),
            bytes_to_client=sum(r.bytes_to_client for r in records),
            exchanges=len(exchanges),
            exchange_faults=dict(sorted(Counter(e.fault for e in exchanges if e.injected).items())),
            spared=dict(
                sorted(Counter(r.handler for r in records if r.handler and not r.injected).items())
            ),
        )

    def __add__(self, other: Stats) -> Stats:
        if not other.connections and not other.exchanges:
            return self  # a proxy nobody used: the session adds one per test
        return Stats(
            self.connections + other.connections,
            _merged(self.handlers, other.handlers),
            _merged(self.endings, other.endings),
            self.bytes_to_backend + other.bytes_to_backend,
            self.bytes_to_client + other.bytes_to_client,
            self.exchanges + other.exchanges,
            _merged(self.exchange_faults, other.exchange_faults),
            _merged(self.spared, other.spared),
        )


def _merged(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    """Counts of ``a`` and ``b`` together, sorted by name."""
    if not b:
        return dict(a)
    out = dict(a)
    for name, count in b.items():
        out[name] = out.get(name, 0) + count
    return dict(sorted(out.items()))


def _columns(rows: Sequence[Sequence[str]]) -> str:
    """Rows as aligned columns; the last column is left ragged (it may be long)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        + "  "
        + row[-1]
        for row in rows
    )


def format_records(records: list[ConnectionRecord]) -> str:
    """The records as a compact table, one row per connection."""
    header = ("#", "client", "handler", "to backend", "to client", "duration", "ending")
    rows = [header]
    for r in records:
        how = "open" if r.ending is None else str(r.ending)
        if r.error:
            how = f"{how}: {r.error.strip().splitlines()[-1]}"
        took = "-" if r.duration is None else f"{r.duration:.3f}s"
        rows.append(
            (
                str(r.index),
                r.client,
                r.handler or NO_HANDLER,
                str(r.bytes_to_backend),
                str(r.bytes_to_client),
                took,
                how,
            )
        )
    return _columns(rows)


class Reported(Protocol):
    """What the fault report reads of a proxy."""

    @property
    def address(self) -> Address: ...

    @property
    def distant(self) -> str: ...

    @property
    def behavior(self) -> str: ...

    @property
    def connections(self) -> list[ConnectionRecord]: ...

    @property
    def exchanges(self) -> list[ExchangeRecord]: ...


def render_fault_report(seed: int, replay: str, proxies: Sequence[Reported]) -> str:
    """A failing test's ``vaurien`` section: the seed, the replay command, and
    each proxy's addresses, behavior and connections."""
    lines = [f"seed {seed}; replay with: {replay}"]
    for proxy in proxies:
        records = proxy.connections
        lines.append("")
        lines.append(
            f"proxy {format_address(proxy.address)} -> {proxy.distant}, behavior "
            f"{proxy.behavior!r}: {len(records)} connection{'s' if len(records) != 1 else ''}"
        )
        if records:
            lines.append(format_records(records))
        exchanges = proxy.exchanges
        if exchanges:
            lines.append(f"{len(exchanges)} exchange{'s' if len(exchanges) != 1 else ''}:")
            lines.append(format_exchanges(exchanges))
    return "\n".join(lines)


def format_exchanges(exchanges: Sequence[ExchangeRecord]) -> str:
    """The exchanges as a compact table, one row per request."""
    header = ("#", "conn", "request", "by", "fault", "reply", "duration", "outcome")
    rows = [header]
    for e in exchanges:
        fault = e.fault if e.injected or e.fault == TRANSPARENT else f"{e.fault} (spared)"
        took = "-" if e.duration is None else f"{e.duration:.3f}s"
        rows.append(
            (
                str(e.ordinal),
                str(e.connection),
                e.request,
                e.by,
                fault,
                e.reply or "-",
                took,
                e.outcome or "open",
            )
        )
    return _columns(rows)
