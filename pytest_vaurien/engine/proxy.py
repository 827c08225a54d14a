"""``Proxy``: a chaos TCP proxy, a listener's watcher on the process's shared hub.

The test thread is never monkey-patched: every proxy of the process runs on
one native thread with a gevent hub of its own (:mod:`.hub`), started by the
first ``start()``. A proxy builds its listener there (a gevent socket
belongs to the loop of the thread that made it) and is started and stopped
by callbacks scheduled with ``loop.run_callback_threadsafe``, the one gevent
call meant for crossing threads. The listener's read watcher accepts in
its callback, and a transparent connection then lives in loop callbacks
from connect to close (``Slot``): no greenlet unless one must wait. Every
wait is bounded, so ``stop()`` returns in well under a second even while a
handler sleeps for minutes, and stopping one proxy leaves the others on the
hub undisturbed.
"""

from __future__ import annotations

import _socket
import logging
import os
import random
import resource
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import gevent
import gevent.socket
from gevent import Greenlet, GreenletExit

from pytest_vaurien.address import Address, format_address, parse_address
from pytest_vaurien.engine.connection import EXHAUSTED, ProxyDown, Slot
from pytest_vaurien.engine.fastpath import Watchers
from pytest_vaurien.engine.hub import HUB_THREAD_NAME, SharedHub, shared_hub
from pytest_vaurien.engine.native import NativeEvent, allocate_lock
from pytest_vaurien.engine.upstream import Upstream
from pytest_vaurien.errors import ConfigError, ProxyError
from pytest_vaurien.handlers.base import DEFAULT_READ_SIZE, BaseHandler
from pytest_vaurien.plan import (
    Plan,
    Unit,
    plan_from_settings,
    relayered,
    with_behavior_of,
    with_rules,
)
from pytest_vaurien.records import ConnectionRecord, Ending, ExchangeRecord, Stats
from pytest_vaurien.registry import Registry, make_plugin_manager, registry_from_plugins
from pytest_vaurien.rules import Rule
from pytest_vaurien.settings import Layer, Settings, parse_marker_options, resolve
from pytest_vaurien.waits import Goal, wait_for

__all__ = ["Proxy"]

#: Enough for 1000 connections opened at once without SYN retries; the
#: kernel caps it at net.core.somaxconn.
LISTEN_BACKLOG = 4096
START_TIMEOUT = 10.0
STOP_TIMEOUT = 2.0
#: How long connection greenlets get to unwind once killed.
KILL_GRACE = 0.3


log = logging.getLogger("vaurien")

#: Errors that mean the process ran out of something: worth a warning.
_EXHAUSTED = EXHAUSTED
#: How long accepting backs off after a failure.
ACCEPT_BACKOFF = 0.01
#: Connections one wakeup of the listener accepts before letting others run.
ACCEPTS_PER_WAKEUP = 64
_BLOCKING_HINT = (
    " (time.sleep or a blocking call instead of gevent's): that stalls every proxy of the process"
)


class _Burst:
    """Says at WARNING that the process ran out of descriptors, once per burst.

    Under exhaustion every accept and connect fails, thousands of times a
    second: one line when it starts (and how many failures the previous
    burst had), none while it goes on. A burst ends after ``QUIET``
    seconds without a failure.
    """

    QUIET = 5.0

    def __init__(self, name: str) -> None:
        self.name = name
        self.failures = 0
        self.last = -self.QUIET

    def failed(self, error: OSError, doing: str) -> None:
        now = time.monotonic()
        if now - self.last >= self.QUIET:
            limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            previous = f" ({self.failures} failures in the previous burst)" if self.failures else ""
            log.warning(
                "%s: %s failed: %s (open file limit %s); connections are refused or reset "
                "until some close%s",
                self.name,
                doing,
                error.strerror or error,
                limit,
                previous,
            )
            self.failures = 0
        self.failures += 1
        self.last = now


class Proxy:
    """A chaos TCP proxy in front of ``distant``; use as a context manager.

    :param distant: the backend, ``"HOST:PORT"``, ``"[::1]:PORT"`` or a tuple.
    :param behavior: which handlers connections get, e.g. ``"20:delay,10:error"``.
    :param options: handler options by name, ``{"delay": {"sleep": 2}}``;
        values may be strings as read from ini files.
    :param registry: where handler names are looked up; by default the
        built-ins and the ``vaurien`` entry-point plugins.
    :param seed: seeds the random source every random choice draws from.
    :param host: where to listen; 127.0.0.1 by default.
    :param port: where to listen; 0 (the default) picks a free port.
    :param on_record: called with each connection's record when it ends (in
        the shared hub's thread, often from a loop callback: keep it short
        and never wait, not even with gevent), e.g. to log it.
    :param protocol: ``"tcp"`` (faults per connection) or a protocol to frame,
        such as ``"http"`` (faults per request).
    :param rules: :class:`~pytest_vaurien.Rule` objects or their string forms.
    :param keep_records: keep every record in ``connections``; a long-running
        proxy that only logs them (the ``vaurien`` command) turns it off so
        that memory does not grow with each connection.
    :param max_records: keep only the latest this many connection records
        and as many exchange records (a proxy of the control API).

    Every proxy of the process runs on one shared hub thread: a handler must
    wait with gevent (``gevent.sleep``, gevent sockets), never block. A
    ``time.sleep`` in a handler stalls every proxy of the process until it
    returns, and makes ``stop()`` fail with a ``ProxyError`` saying so.
    """

    def __init__(
        self,
        distant: str | Address,
        behavior: str = "100:dummy",
        *,
        options: Mapping[str, Mapping[str, Any]] | None = None,
        registry: Registry | None = None,
        seed: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "vaurien-proxy",
        read_size: int = DEFAULT_READ_SIZE,
        connect_timeout: float = 5.0,
        on_record: Callable[[ConnectionRecord], None] | None = None,
        keep_records: bool = True,
        max_records: int | None = None,
        protocol: str = "tcp",
        rules: Sequence[Rule | str] = (),
    ) -> None:
        settings = resolve(
            [
                Layer(
                    source="Proxy()",
                    distant=distant,
                    behavior=behavior,
                    options={
                        (handler, option): value
                        for handler, values in (options or {}).items()
                        for option, value in values.items()
                    },
                    distant_source="distant",
                    behavior_source="behavior",
                    protocol=protocol,
                    protocol_source="protocol",
                    rules=list(rules),
                    rules_source="rules",
                )
            ]
        )
        self._setup(
            settings,
            registry=registry,
            seed=seed,
            host=host,
            port=port,
            name=name,
            read_size=read_size,
            connect_timeout=connect_timeout,
            on_record=on_record,
            keep_records=keep_records,
            max_records=max_records,
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        registry: Registry | None = None,
        seed: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "vaurien-proxy",
        read_size: int = DEFAULT_READ_SIZE,
        connect_timeout: float = 5.0,
        on_record: Callable[[ConnectionRecord], None] | None = None,
        keep_records: bool = True,
        max_records: int | None = None,
    ) -> Proxy:
        """A proxy for resolved ``settings`` (the plugin's and the command's way
        in): their options are converted once, errors name their source.

        :param seed: overrides ``settings.seed``.
        :raises ConfigError: when ``settings`` has no distant, or a bad option.
        """
        proxy = cls.__new__(cls)
        proxy._setup(
            settings,
            registry=registry,
            seed=seed if seed is not None else settings.seed,
            host=host,
            port=port,
            name=name,
            read_size=read_size,
            connect_timeout=connect_timeout,
            on_record=on_record,
            keep_records=keep_records,
            max_records=max_records,
        )
        return proxy

    def _setup(
        self,
        settings: Settings,
        *,
        registry: Registry | None,
        seed: int | None,
        host: str,
        port: int,
        name: str,
        read_size: int,
        connect_timeout: float,
        on_record: Callable[[ConnectionRecord], None] | None,
        keep_records: bool,
        max_records: int | None = None,
    ) -> None:
        if settings.distant is None:
            raise ConfigError(f"{name}: no distant; expected HOST:PORT")
        self.distant_address: Address = settings.distant
        self.upstream = Upstream(settings.distant, connect_timeout)
        #: When the proxy was made (``time.monotonic()``); units are timed from it.
        self.started = time.monotonic()
        self.host = host
        self.port = port
        self.name = name
        self.read_size = read_size
        #: Called in the shared hub's thread with each connection's record once it ended.
        self.on_record = on_record
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**32)
        #: The seeded random source behind every random choice of this proxy.
        self.random = random.Random(self.seed)
        if registry is None:
            registry = registry_from_plugins(make_plugin_manager())
        self._registry = registry
        #: The fault plan in force, replaced whole by a live change. A plain
        #: attribute, not a property: the relay reads it for every chunk.
        self.plan: Plan = self._own(plan_from_settings(settings, registry, self, seed=self.seed))
        self._records: deque[ConnectionRecord] = deque(maxlen=max_records)
        self._exchanges: deque[ExchangeRecord] = deque(maxlen=max_records)
        self._ordinals = 0
        #: Called in the shared hub's thread with each exchange's record as it starts.
        self.on_exchange: Callable[[ExchangeRecord], None] | None = None
        self._keep_records = keep_records
        self._accepted = 0
        #: The connections being relayed (in loop callbacks or a greenlet).
        self._slots: set[Slot] = set()
        self._burst = _Burst(self.name)
        self._lock = allocate_lock()
        #: The shared hub this proxy runs on, from ``start()``.
        self._hub: SharedHub | None = None
        self._stop_asked = False
        self._done: NativeEvent | None = None
        #: The listening socket (a plain non-blocking one) and its read
        #: watcher on the hub, whose callback accepts: no acceptor greenlet.
        self._listener: _socket.socket | None = None
        self._acceptor: Any = None
        self._backoff: Any = None
        self._enabled = True
        #: Spare io watchers for its connections, made in the hub by ``_begin``.
        self._watchers: Watchers | None = None

    # -- what tests read -------------------------------------------------

    @property
    def address(self) -> Address:
        """Where clients connect: ``(host, port)``."""
        return self.host, self.port

    @property
    def distant(self) -> str:
        """The backend, as ``"HOST:PORT"``."""
        return format_address(self.distant_address)

    @property
    def connect_timeout(self) -> float:
        """Seconds a connect to the distant may take."""
        return self.upstream.connect_timeout

    @property
    def behavior(self) -> str:
        """The behavior spec in force."""
        return self.plan.spec

    @property
    def accepted(self) -> int:
        """How many connections the proxy accepted so far."""
        return self._accepted

    @property
    def open_connections(self) -> int:
        """How many connections are being relayed right now."""
        return len(self._slots)

    @property
    def handlers(self) -> dict[str, BaseHandler]:
        """The handler instances in force, by the name the behavior uses."""
        return dict(self.plan.instances)

    @property
    def connections(self) -> list[ConnectionRecord]:
        """One record per accepted connection, oldest first (a copy)."""
        return list(self._records)

    @property
    def stats(self) -> Stats:
        """Totals over the connections so far: per handler, per ending, bytes."""
        return Stats.of(self.connections, self._exchanges)

    @property
    def exchanges(self) -> list[ExchangeRecord]:
        """Under a protocol: one record per exchange (request and reply), oldest first."""
        return list(self._exchanges)

    def next_ordinal(self) -> int:
        """The next exchange's ordinal on this proxy (1, 2, ... in arrival order)."""
        self._ordinals += 1
        return self._ordinals

    def next_ordinals(self, count: int) -> int:
        """Take ``count`` ordinals at once (units relayed untouched in a row);
        returns the first."""
        first = self._ordinals + 1
        self._ordinals += count
        return first

    @property
    def wants_exchanges(self) -> bool:
        """Whether anyone reads the exchange records: the proxy keeps them (the
        fixtures, the control API) or hands them on (``on_exchange``). When
        no one does, a unit relayed untouched gets no record at all."""
        return self._keep_records or self.on_exchange is not None

    def keep_exchange(self, record: ExchangeRecord) -> None:
        """Keep an exchange's record (unless records are off, as in the command)."""
        record.index = self._ordinals - 1
        if self._keep_records:
            self._exchanges.append(record)
        if self.on_exchange is not None:
            self.on_exchange(record)

    def clear_records(self) -> None:
        """Forget the records and zero the counts (``accepted``, exchange
        ordinals): a reset of the control API. Open connections go on."""
        self._records.clear()
        self._exchanges.clear()
        self._accepted = 0
        self._ordinals = 0

    @property
    def errors(self) -> list[ConnectionRecord]:
        """Connections that ended because a handler raised."""
        return [record for record in self._records if record.ending is Ending.ERROR]

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``stop()`` (or ``stop_if_idle()``)."""
        return self._done is not None and not self._done.is_set() and not self._stop_asked

    @property
    def stopped(self) -> bool:
        """True once a stop is done: the listener closed, every connection ended."""
        return self._done is not None and self._done.is_set()

    def __repr__(self) -> str:
        return (
            f"<Proxy {format_address(self.address)} -> {self.distant} "
            f"{self.behavior!r}{' running' if self.running else ''}>"
        )

    # -- live changes ----------------------------------------------------

    def set_behavior(self, spec: str, **options: Any) -> _Restore:
        """Change the behavior now; ``with`` it to restore the previous one after.

        New connections draw from ``spec`` at once; open ones draw again from
        their next chunk. ``options`` are ``NAME__OPTION=value`` pairs, laid
        over the options the proxy was made with.

        :raises ConfigError: for a bad spec or option; nothing changes then.
        """
        where = "set_behavior()"
        parsed = parse_marker_options(options, where)
        previous = self.plan
        self.plan = relayered(previous, spec, parsed, self._registry, where=where, proxy=self)
        return _Restore(self, previous)

    def configure(
        self, settings: Settings, *, registry: Registry | None = None, seed: int | None = None
    ) -> str:
        """Put ``settings``' behavior, options and rules in force, whole (a
        session proxy lent to a test): not laid over the current ones as
        ``set_behavior`` does. ``seed`` reseeds what new connections draw.
        Returns the behavior spec now in force.

        :raises ConfigError: for a bad option or rule, or another protocol
            than the proxy's; nothing changes then.
        """
        if settings.protocol != self.plan.protocol:
            raise ConfigError(
                f"{settings.protocol_source}: protocol {settings.protocol!r}, but {self.name} "
                f"frames {self.plan.protocol!r} for its whole life"
            )
        seed = self.seed if seed is None else seed
        plan = plan_from_settings(settings, registry or self._registry, self, seed=seed)
        self.seed, self.random = seed, random.Random(seed)
        self.plan = self._own(plan)
        return plan.spec

    def restore(self, plan: Plan, seed: int) -> None:
        """Put back a plan and seed saved from ``plan``/``seed`` (after ``configure``)."""
        self.seed, self.random = seed, random.Random(seed)
        self.plan = self._own(plan)

    @property
    def rules(self) -> list[Rule]:
        """The live rules, in order: ``matched`` and ``fired`` keep counting."""
        return self.plan.rules

    def rule(self, name: str) -> Rule:
        """The live rule called ``name``.

        :raises KeyError: listing the known names.
        """
        for rule in self.plan.rules:
            if rule.name == name:
                return rule
        known = ", ".join(rule.name for rule in self.plan.rules) or "none"
        raise KeyError(f"no rule named {name!r}; known: {known}")

    def add_rule(self, rule: Rule | str) -> Rule:
        """Append a rule now; it reaches open connections from their next unit.

        Returns the live rule; ``with proxy.add_rule(...) as rule:`` removes
        it again at the end of the block.

        :raises ConfigError: for a bad rule; nothing changes then.
        """
        plan = with_rules(
            self.plan, [*self.plan.rules, rule], self._registry, where="add_rule()", proxy=self
        )
        self.plan = self._own(plan)
        return plan.rules[-1]

    def set_rules(self, rules: list[Rule | str]) -> list[Rule]:
        """Replace every rule at once; returns the live rules.

        :raises ConfigError: for a bad rule; nothing changes then.
        """
        plan = with_rules(self.plan, list(rules), self._registry, where="set_rules()", proxy=self)
        self.plan = self._own(plan)
        return plan.rules

    def remove_rule(self, rule: Rule | str) -> None:
        """Remove a live rule, given as itself or by name.

        :raises KeyError: for a rule this proxy does not have.
        """
        target = self.rule(rule) if isinstance(rule, str) else rule
        remaining = [kept for kept in self.plan.rules if kept is not target]
        if len(remaining) == len(self.plan.rules):
            raise KeyError(f"{target.name!r} is not a rule of {self.name}")
        self.plan = self._own(
            with_rules(self.plan, remaining, self._registry, where="remove_rule()", proxy=self)
        )

    def _own(self, plan: Plan) -> Plan:
        """Mark ``plan``'s live rules as this proxy's (``with rule:`` removes them here)."""
        for rule in plan.rules:
            rule.owner = self
        return plan

    def set_upstream(self, distant: str | Address) -> None:
        """Send new connections to another backend (a failover); open ones keep theirs.

        :raises ConfigError: for an address that is not ``HOST:PORT``.
        """
        address = parse_address(distant, "upstream")
        upstream = Upstream(address, self.upstream.connect_timeout)
        upstream.resolve()
        self.upstream, self.distant_address = upstream, address

    def wait(
        self,
        rule: str | None = None,
        fired: int | None = None,
        *,
        connections: int | None = None,
        timeout: float = 5.0,
    ) -> dict[str, object]:
        """Return once the rule ``rule`` fired at least ``fired`` times (1 by
        default), or once at least ``connections`` were accepted; returns the
        counts, as the control API's ``wait`` does.

        :raises TimeoutError: after ``timeout`` seconds, naming the counts.
        :raises KeyError: for a rule this proxy does not have.
        :raises ConfigError: for a goal that is not one of the two.
        """
        return wait_for(self, Goal.of(rule, fired, connections), timeout)

    # -- down and up -----------------------------------------------------

    @property
    def enabled(self) -> bool:
        """False between ``disable()`` and ``enable()``."""
        return self._enabled

    def disable(self, timeout: float = STOP_TIMEOUT) -> None:
        """Take the proxy down: connects are refused, open connections closed.

        Like a stopped server: a client's connect fails with
        ConnectionRefusedError until ``enable()``.
        """
        self._in_hub(self._go_down, "go down", timeout)
        self._enabled = False

    def enable(self, timeout: float = STOP_TIMEOUT) -> None:
        """Bring the proxy back up, listening on the same port."""
        self._in_hub(self._go_up, "come back up", timeout)
        self._enabled = True

    @contextmanager
    def down(self) -> Iterator[Proxy]:
        """``with proxy.down():`` the proxy is down inside the block, up after it."""
        self.disable()
        try:
            yield self
        finally:
            self.enable()

    # -- lifecycle -------------------------------------------------------

    def start(self) -> Proxy:
        """Listen and start relaying; return once the port is bound.

        The port is bound here, in the caller's thread, and the shared hub
        (one thread for every proxy of the process, started by the first
        ``start()``) starts accepting on it as soon as it gets to it:
        connections made meanwhile wait in the listen backlog.

        :raises ProxyError: if it is already running or cannot listen.
        """
        if self._done is not None:
            raise ProxyError(f"{self.name} was already started; make a new Proxy")
        self.upstream.resolve()
        try:
            listener = self._listen()
        except OSError as error:
            raise ProxyError(
                f"{self.name}: cannot listen on {format_address((self.host, self.port))}: {error}"
            ) from error
        try:
            hub = shared_hub()
        except ProxyError:
            listener.close()
            raise
        self._hub = hub
        self._listener = listener
        self._done = NativeEvent()
        hub.proxies.add(self)
        if hub.in_thread():  # started from a greenlet of the hub itself
            self._begin()
        else:
            hub.call(self._begin)
        return self

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Close the listener and kill this proxy's connections; other proxies
        on the shared hub go on undisturbed.

        Idempotent, and bounded even while a handler sleeps for minutes
        (killed connections get ``KILL_GRACE`` seconds to unwind, then what
        they hold is closed from outside).

        :raises ProxyError: if it is not done within ``timeout`` seconds: a
            handler is blocking the shared hub (``time.sleep`` instead of
            ``gevent.sleep``), which stalls every proxy of the process.
        """
        done, hub = self._done, self._hub
        if done is None or done.is_set() or hub is None:
            return
        self._ask_to_stop(hub, done)
        if hub.in_thread():  # from a greenlet of the hub: waiting would block it
            return
        if not done.wait(timeout):
            raise ProxyError(
                f"{self.name} did not stop within {timeout:g}s; is a handler blocking "
                f"the shared hub thread {HUB_THREAD_NAME!r}?{_BLOCKING_HINT}"
            )

    def stop_if_idle(self) -> bool:
        """Stop without waiting for the hub, when no connection is open.

        Then nothing is left for stopping to close or record but the
        listener, which the hub closes as soon as it gets to it: the caller
        is spared the round trip to the hub's thread, most of what a test's
        teardown would cost. Returns False, having done nothing, while
        connections are open (``stop()`` waits until they are closed). A
        later ``stop()`` waits, bounded, for the listener to be closed.
        """
        done, hub = self._done, self._hub
        if done is None or hub is None or self._slots or hub.in_thread():
            return False
        if not done.is_set():
            self._ask_to_stop(hub, done)
        return True

    def _ask_to_stop(self, hub: SharedHub, done: NativeEvent) -> None:
        """Hand the hub this proxy's shutdown, once."""
        with self._lock:
            first, self._stop_asked = not self._stop_asked, True
        if not first:
            return
        try:
            if hub.in_thread():
                self._shut_down()
            else:
                hub.call(self._shut_down)
        except ProxyError:  # the hub is gone, and this proxy with it
            done.set()

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- inside the hub --------------------------------------------------

    def _begin(self) -> None:
        """Accept on the listener ``start()`` bound (a loop callback: nothing here waits)."""
        try:
            if not self._stop_asked:
                self._watch(self._listener)
        except BaseException as error:  # never leave an error in the hub
            print(f"{self.name}: starting: {error!r}", file=sys.stderr)

    def _shut_down(self) -> None:
        """Go down for good, then say so (a loop callback).

        With no connection served by a greenlet, that is all done here, at
        once (connections in loop callbacks are closed and recorded on the
        spot); else a greenlet kills them, bounded (``_go_down``).
        """
        try:
            self._close_listener()
            if self._end_callback_connections(Ending.PROXY_STOPPED):
                gevent.spawn(self._shut_down_connections)
                return
        except BaseException as error:  # never leave an error in the hub
            print(f"{self.name}: stopping: {error!r}", file=sys.stderr)
        self._stopped()

    def _shut_down_connections(self) -> None:
        try:
            self._go_down(GreenletExit)
        except BaseException as error:  # never leave an error in the hub
            print(f"{self.name}: stopping: {error!r}", file=sys.stderr)
        finally:
            self._stopped()

    def _stopped(self) -> None:
        watchers, self._watchers = self._watchers, None
        if watchers is not None:
            watchers.close()
        hub = self._hub
        if hub is not None:
            hub.proxies.discard(self)
        assert self._done is not None
        self._done.set()

    def _go_up(self) -> None:
        """Listen (again, on the same port) and accept."""
        if self._listener is None:
            self._listener = self._listen()
            self._watch(self._listener)

    def _go_down(self, exception: type[BaseException] = ProxyDown) -> None:
        """Stop listening (connects are refused) and end every connection of
        this proxy, and only those: the hub serves other proxies. Those in
        loop callbacks are closed at once; greenlets are killed, bounded."""
        self._close_listener()
        ending = Ending.PROXY_DOWN if exception is ProxyDown else Ending.PROXY_STOPPED
        slots = self._end_callback_connections(ending)
        greenlets: list[Greenlet] = [slot.greenlet for slot in slots]
        for greenlet in greenlets:
            greenlet.kill(exception, block=False)
        # joinall, unlike killall, never raises its timeout; whatever has not
        # unwound by then is closed from outside
        gevent.joinall(greenlets, timeout=KILL_GRACE)
        for slot, greenlet in zip(slots, greenlets, strict=True):
            if not greenlet.dead:
                slot.abandon(ending)
        if slots:
            # gevent defers closing a descriptor that a watcher still waits on
            # (a killed pump's, an abandoned slot's) to a loop callback: let
            # those run before saying we are down - the caller's next socket
            # may get the same descriptor number, and a late close would
            # close that one
            gevent.sleep(0)

    def _end_callback_connections(self, ending: Ending) -> list[Slot]:
        """Close, right here, the connections served in loop callbacks
        (nothing of theirs has to unwind); the slots served by a greenlet."""
        served: list[Slot] = []
        for slot in list(self._slots):
            if slot.greenlet is None:
                slot.abandon(ending)
            else:
                served.append(slot)
        return served

    def _close_listener(self) -> None:
        """Stop accepting and close the listening socket (in the hub)."""
        for watcher in (self._acceptor, self._backoff):
            if watcher is not None:
                watcher.stop()
                watcher.close()
        self._acceptor = self._backoff = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _in_hub(self, func: Callable[[], None], what: str, timeout: float) -> None:
        """Run ``func`` in a greenlet of the hub and wait (bounded) until it is done."""
        finished = NativeEvent()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                func()
            except BaseException as error:
                failure.append(error)
            finally:
                finished.set()

        hub = self._hub
        if hub is None or not self.running or self._stop_asked:
            raise ProxyError(f"{self.name} is not running; cannot {what}")
        if hub.in_thread():
            run()
        else:
            hub.call(gevent.spawn, run)
        if not finished.wait(timeout):
            raise ProxyError(
                f"{self.name} did not {what} within {timeout:g}s; is a handler blocking "
                f"the shared hub thread {HUB_THREAD_NAME!r}?"
            )
        if failure:
            raise ProxyError(f"{self.name} could not {what}: {failure[0]}") from failure[0]

    def _listen(self) -> _socket.socket:
        """A plain non-blocking listening socket, bound: from any thread
        (the caller's in ``start()``), as no loop owns it."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = _socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # accepted sockets inherit it (Linux): no setsockopt per connection
            listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            listener.bind((self.host, self.port))
            listener.listen(LISTEN_BACKLOG)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self.port = listener.getsockname()[1]
        return listener

    def _watch(self, listener: _socket.socket | None) -> None:
        """Accept in the read watcher's callback of ``listener`` (in the hub)."""
        if listener is None or self._acceptor is not None:
            return
        self._acceptor = gevent.get_hub().loop.io(listener.fileno(), 1)
        self._acceptor.start(self._on_acceptable, listener)

    def _on_acceptable(self, listener: _socket.socket) -> None:
        """Accept what waits (a bounded batch); each connection starts its
        connect right here (``Slot.start``: no greenlet unless one must wait)."""
        family = listener.family
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                fd, peer = listener._accept()  # type: ignore[attr-defined]  # the fd, no object
            except BlockingIOError:
                return
            except OSError as error:
                if listener is not self._listener:  # closed under us
                    return
                if error.errno in _EXHAUSTED:
                    self.exhausted(error, f"accept on {format_address(self.address)}")
                self._back_off()
                return
            try:  # a plain socket: the fast path needs no gevent one (Endpoint.green)
                client_sock = _socket.socket(family, socket.SOCK_STREAM, 0, fd)
                client_sock.setblocking(False)
            except OSError:  # pragma: no cover - the descriptor is valid
                os.close(fd)
                continue
            index = self._accepted
            record = ConnectionRecord(index, format_address(peer[:2]))
            unit = Unit(index, index + 1, time.monotonic() - self.started)
            self._accepted += 1
            if self._keep_records:
                self._records.append(record)
            slot = Slot(self, record, unit, client_sock, self._slot_ended)
            self._slots.add(slot)
            slot.start()

    def _back_off(self) -> None:
        """After a failed accept, wait ``ACCEPT_BACKOFF`` rather than spin."""
        acceptor = self._acceptor
        if acceptor is None or self._backoff is not None:
            return
        acceptor.stop()
        self._backoff = gevent.get_hub().loop.timer(ACCEPT_BACKOFF)
        self._backoff.start(self._resume, acceptor)

    def _resume(self, acceptor: Any) -> None:
        if self._backoff is not None:
            self._backoff.close()
            self._backoff = None
        if acceptor is self._acceptor and self._listener is not None:
            acceptor.start(self._on_acceptable, self._listener)

    @property
    def watchers(self) -> Watchers:
        """Spare io watchers for connections served in loop callbacks (in the hub)."""
        if self._watchers is None:
            self._watchers = Watchers(gevent.get_hub().loop)
        return self._watchers

    def exhausted(self, error: OSError, doing: str) -> None:
        """Note that ``doing`` failed for want of descriptors (or buffers)."""
        self._burst.failed(error, doing)

    def _slot_ended(self, slot: Slot) -> None:
        """A connection is done (called once per slot): forget it, hand its record on."""
        self._slots.discard(slot)
        record = slot.record
        if self.on_record is not None and not record.open:
            try:
                self.on_record(record)
            except Exception as error:  # a broken callback must not break the relay
                print(f"{self.name}: on_record failed: {error!r}", file=sys.stderr)


class _Restore:
    """Returned by ``set_behavior``: ``with`` it to put the old behavior back."""

    def __init__(self, proxy: Proxy, previous: Plan) -> None:
        self._proxy = proxy
        self._previous = previous

    def __enter__(self) -> Proxy:
        return self._proxy

    def __exit__(self, *exc_info: object) -> None:
        proxy = self._proxy
        proxy.plan = with_behavior_of(proxy.plan, self._previous)
