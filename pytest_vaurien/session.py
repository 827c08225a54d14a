"""Session proxies: one proxy for the whole session, lent to each test in turn.

A test that uses ``vaurien_session_proxy`` gets, from its setup to its
teardown, the plan its own configuration gives (its markers, else the command
line and ini) and a seed of its own; between tests the proxy relays
transparently. Connections stay open across tests; what a test sees in
``connections``, ``exchanges``, ``stats`` and its report is its own window:
the connections accepted during it, and those open before it that carried
traffic during it. No pytest here: the plugin wires it.
"""

from __future__ import annotations

from typing import Any

from pytest_vaurien.address import Address
from pytest_vaurien.engine.proxy import Proxy
from pytest_vaurien.records import ConnectionRecord, Ending, ExchangeRecord, Stats
from pytest_vaurien.registry import Registry
from pytest_vaurien.rules import Rule
from pytest_vaurien.settings import Settings

__all__ = ["SessionProxy", "Window"]


def _traffic(record: ConnectionRecord) -> tuple[int, int, int]:
    """What grows when a connection carries traffic: bytes each way, chains drawn."""
    return record.bytes_to_backend, record.bytes_to_client, len(record.handlers)


class Window:
    """What one test saw of a session proxy: the connections accepted from its
    setup to its teardown, those open before (a pool's) that carried traffic
    meanwhile - bytes, or a chunk that drew a chain - and the exchanges that
    started meanwhile. A pooled connection that only closed (the previous
    test's client going away) is not the test's."""

    def __init__(self, proxy: Proxy, behavior: str) -> None:
        self._proxy = proxy
        self.behavior = behavior
        self._first = proxy.accepted
        self._before = {
            record.index: _traffic(record) for record in proxy.connections if record.open
        }
        exchanges = proxy.exchanges
        self._first_exchange = exchanges[-1].index + 1 if exchanges else 0
        self._frozen: tuple[list[ConnectionRecord], list[ExchangeRecord]] | None = None

    @property
    def address(self) -> Address:
        return self._proxy.address

    @property
    def distant(self) -> str:
        return self._proxy.distant

    def _used(self, record: ConnectionRecord) -> bool:
        if record.index >= self._first:
            return True
        before = self._before.get(record.index)
        return before is not None and before != _traffic(record)

    @property
    def connections(self) -> list[ConnectionRecord]:
        if self._frozen is not None:
            return list(self._frozen[0])
        return [record for record in self._proxy.connections if self._used(record)]

    @property
    def exchanges(self) -> list[ExchangeRecord]:
        if self._frozen is not None:
            return list(self._frozen[1])
        return [e for e in self._proxy.exchanges if e.index >= self._first_exchange]

    @property
    def stats(self) -> Stats:
        return Stats.of(self.connections, self.exchanges)

    @property
    def errors(self) -> list[ConnectionRecord]:
        return [record for record in self.connections if record.ending is Ending.ERROR]

    def freeze(self) -> None:
        """The test is over: what it saw stays as it is for its reports."""
        self._frozen = (self.connections, self.exchanges)


class SessionProxy:
    """A proxy started once per session (per xdist worker) that each test
    configures for itself: its markers, else the command line and ini file,
    from its setup to its teardown; transparent relay between tests.

    It reads as a :class:`~pytest_vaurien.Proxy` (``address``,
    ``set_behavior()``, ``rules``, ``down()``...); ``connections``,
    ``exchanges`` and ``stats`` are the running test's only, and ``proxy``
    is the session's ``Proxy`` with all of them.
    """

    def __init__(self, proxy: Proxy, name: str) -> None:
        #: The running ``Proxy``, the same for the whole session.
        self.proxy = proxy
        #: The name ``target=`` uses.
        self.name = name
        self._idle = proxy.plan
        self._seed = proxy.seed
        self._window: Window | None = None

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.proxy, attribute)

    def __repr__(self) -> str:
        return f"<SessionProxy {self.name!r} {self.proxy!r}>"

    @property
    def host(self) -> str:
        return self.proxy.host

    @property
    def port(self) -> int:
        return self.proxy.port

    @property
    def address(self) -> Address:
        return self.proxy.address

    @property
    def distant(self) -> str:
        return self.proxy.distant

    @property
    def protocol(self) -> str:
        """Set for the session by ``--vaurien-protocol`` or ``vaurien_protocol``."""
        return self.proxy.plan.protocol

    @property
    def behavior(self) -> str:
        return self.proxy.behavior

    @property
    def rules(self) -> list[Rule]:
        return self.proxy.rules

    def rule(self, name: str) -> Rule:
        return self.proxy.rule(name)

    def set_behavior(self, spec: str, **options: Any) -> Any:
        """As ``Proxy.set_behavior``; the test's teardown puts relay back anyway."""
        return self.proxy.set_behavior(spec, **options)

    def add_rule(self, rule: Rule | str) -> Rule:
        return self.proxy.add_rule(rule)

    def set_rules(self, rules: list[Rule | str]) -> list[Rule]:
        return self.proxy.set_rules(rules)

    @property
    def connections(self) -> list[ConnectionRecord]:
        """The running test's connections (see :class:`Window`), else all."""
        return self._window.connections if self._window else self.proxy.connections

    @property
    def exchanges(self) -> list[ExchangeRecord]:
        return self._window.exchanges if self._window else self.proxy.exchanges

    @property
    def stats(self) -> Stats:
        return self._window.stats if self._window else self.proxy.stats

    def begin(self, settings: Settings, registry: Registry, seed: int) -> Window:
        """Put the test's plan in force; new connections draw from ``seed``.

        Open connections take it from their next chunk (or unit), as after
        ``set_behavior``: the engine swaps whole plans, compared by identity.

        :raises VaurienError: for a bad option or rule; nothing changes then.
        """
        proxy = self.proxy
        # not set_behavior: it lays options over the old ones and keeps the
        # session's seed, where a test must get exactly its own configuration,
        # as a fresh proxy would
        spec = proxy.configure(settings, registry=registry, seed=seed)
        self._window = Window(proxy, spec)
        return self._window

    def end(self) -> None:
        """Back to transparent relay, up, with the session's seed."""
        proxy = self.proxy
        proxy.restore(self._idle, self._seed)
        if self._window is not None:
            self._window.freeze()
            self._window = None
        if not proxy.enabled:
            proxy.enable()
