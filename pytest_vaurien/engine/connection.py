"""One accepted connection: connect, ask the plan for a chain, pump both ways, record.

Each direction has its own greenlet (a pump) that waits until its source side
is readable, then calls the handler chain in force. The connection's own
greenlet owns both sockets: pumps report how they ended and only it closes
sockets, so no greenlet ever waits on a descriptor another one closed.

A chain that does not touch the bytes (``dummy``, no protocol) skips all
that, greenlet included: its :class:`Slot` connects in loop callbacks (a
write watcher and a timer), hands both directions to
:mod:`~pytest_vaurien.engine.fastpath` and closes in the callback that sees
the end. A greenlet (then pumps) is made only when something must wait: a
chain with handlers, a protocol, a live change of plan reaching the
connection, a distant name to resolve per connection.

The unit a fault is decided for is, under ``tcp``, the connection: its
:class:`~pytest_vaurien.plan.Unit` is made once, and the plan in force
decides its chain - again, with the same unit, whenever the proxy swaps
its plan. A framer that cuts the stream into exchanges plugs in where
``chain()`` asks the plan: one unit per exchange instead of one per
connection.

Rules of the road (design.md):

* a handler returns truthy to keep going, falsy to end its direction;
* falsy after the source reached EOF is a half-close: the other side gets
  ``shutdown(SHUT_WR)`` and the opposite direction keeps flowing;
* falsy without EOF closes the whole connection.
"""

from __future__ import annotations

import _socket
import contextvars
import errno
import os
import random
import socket
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, TypeAlias

import gevent
import gevent.event
import gevent.socket
from gevent import GreenletExit
from gevent.hub import Waiter

from pytest_vaurien.engine.chain import Chain
from pytest_vaurien.engine.endpoint import Endpoint, reset_socket
from pytest_vaurien.engine.exchange import ExchangeRelay
from pytest_vaurien.engine.fastpath import Stream, Watchers, raw_sockets
from pytest_vaurien.engine.upstream import CONNECTING, Upstream, start_connect
from pytest_vaurien.handlers.base import CONNECTION_RANDOM
from pytest_vaurien.handlers.context import ProxyInfo, Task
from pytest_vaurien.plan import Decision, Plan, Unit
from pytest_vaurien.records import ConnectionRecord, Ending, ExchangeRecord

__all__ = [
    "EXHAUSTED",
    "HELPER_GRACE",
    "INHERITS_NODELAY",
    "Connection",
    "Host",
    "ProxyDown",
    "Slot",
    "serve_connection",
]

#: Errors that mean the process ran out of descriptors or buffers, not that
#: the backend refused.
EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

#: How long a connection's pumps and helpers get to unwind once it ends.
HELPER_GRACE = 0.5

#: Linux gives an accepted socket the listener's ``TCP_NODELAY``: the proxy
#: sets it on the listener, and once, not per connection, for the client side.
INHERITS_NODELAY = sys.platform.startswith("linux")

_READ, _WRITE = 1, 2

#: A side's socket: the plain OS one on the fast path, a gevent one once a
#: handler or a pump needs it.
AnySocket: TypeAlias = _socket.socket | gevent.socket.socket


class Host(ProxyInfo, Protocol):
    """What a connection needs of its proxy: the plan in force, where the
    distant is, and when the proxy started (units are timed from then)."""

    @property
    def plan(self) -> Plan: ...

    @property
    def upstream(self) -> Upstream: ...

    @property
    def started(self) -> float: ...

    @property
    def watchers(self) -> Watchers:
        """Spare io watchers for connections served in loop callbacks."""
        ...

    def exhausted(self, error: OSError, doing: str) -> None:
        """Note that ``doing`` failed for want of descriptors or buffers."""
        ...

    def next_ordinal(self) -> int:
        """The next unit's ordinal, in arrival order at the proxy."""
        ...

    def next_ordinals(self, count: int) -> int:
        """Take ``count`` ordinals at once; returns the first."""
        ...

    def keep_exchange(self, record: ExchangeRecord) -> None:
        """Keep an exchange's record with the proxy's."""
        ...

    @property
    def wants_exchanges(self) -> bool:
        """Whether anyone reads the exchange records."""
        ...


class ProxyDown(GreenletExit):  # type: ignore[misc]  # gevent ships no types
    """Kills a connection because the proxy was disabled (``Proxy.disable``)."""


class Connection:
    """One client connection and its backend, relayed in loop callbacks (a
    transparent chain: ``relay_in_callbacks``) or by two pumps (``run``).

    Handlers reach it as ``client_sock.connection``, typed
    :class:`~pytest_vaurien.handlers.context.ConnectionView`: ``state_for``
    keeps per-connection data, ``spawn`` runs a helper greenlet that dies
    with the connection, ``close`` and ``reset_client`` end it from any
    greenlet.
    """

    def __init__(
        self,
        host: Host,
        client_sock: AnySocket,
        backend_sock: AnySocket,
        record: ConnectionRecord,
        unit: Unit,
    ) -> None:
        self.host = host
        self.record = record
        self.unit = unit
        self._states: dict[int, tuple[object, dict[Any, Any]]] = {}
        self.client = Endpoint(client_sock, self, record, is_client=True)
        self.backend = Endpoint(backend_sock, self, record, is_client=False)
        self._plan: Plan | None = None
        self._reset_client = False
        self._relay: ExchangeRelay | None = None
        self._decision: Decision | None = None
        self._chain: Chain | None = None
        self._finished: dict[bool, str] = {}
        self._done = gevent.event.Event()
        self._helpers: list[gevent.Greenlet] = []
        self._randoms: dict[str, random.Random] = {}
        #: Bytes the fast path had taken on for a direction but not yet sent
        #: when the plan changed (its destination was full): the old chain's,
        #: so they go out as they are, before the new chain's first chunk.
        self._leftover: dict[bool, bytes] = {}
        #: The fast path's streams while the connection lives in loop
        #: callbacks only (``relay_in_callbacks``); empty otherwise.
        self._streams: list[Stream] = []
        self._on_ended: Callable[[], None] | None = None
        self._on_hand_over: Callable[[], None] | None = None

    @property
    def index(self) -> int:
        """The connection's number on its proxy, from 0."""
        return self.record.index

    def random(self, stream: str) -> random.Random:
        """The seeded source of one stream of this connection, made on first use.

        ``"draw"`` picks handlers, ``"up"`` and ``"down"`` serve the handlers
        of each direction: each replays from the proxy's seed and this
        connection's index alone, whatever other connections do.
        """
        source = self._randoms.get(stream)
        if source is None:
            seed = f"{self.host.seed}:{self.record.index}:{stream}"
            source = self._randoms[stream] = random.Random(seed)
        return source

    def state_for(self, handler: object) -> dict[Any, Any]:
        """A dict private to ``handler`` on this connection, made on first use."""
        entry = self._states.get(id(handler))
        if entry is None:  # the handler is kept too, so its id cannot be reused
            entry = self._states[id(handler)] = (handler, {})
        return entry[1]

    def spawn(self, func: Callable[..., object], *args: object) -> Task:
        """Run ``func`` in a greenlet killed when the connection ends.

        It inherits the caller's context, so ``BaseHandler.random`` draws
        from the same seeded source there.
        """
        helper = gevent.spawn(contextvars.copy_context().run, func, *args)
        self._helpers.append(helper)
        return helper  # type: ignore[no-any-return]  # gevent ships no types

    def close(self, ending: Ending = Ending.HANDLER_CLOSED, error: str | None = None) -> None:
        """End the whole connection now (both sockets are closed)."""
        self.record.end(ending, error)
        self._done.set()

    def reset_client(self, reason: str) -> None:
        """Reset the client's connection (an RST: the client sees ECONNRESET).

        The reset happens as the connection closes, once its pumps are gone:
        gevent defers closing a descriptor that another pump still waits on
        until the loop next wakes, which on an idle proxy may be never.
        """
        self._reset_client = True
        self.close(Ending.HANDLER_RESET, reason)

    def chain(self) -> Chain:
        """The chain in force, decided again if the proxy's plan changed."""
        plan = self.host.plan
        if plan is not self._plan or self._chain is None:
            first = self._plan is None
            self._plan = plan
            if first:
                decision = plan.decide(self.unit, lambda: self.random("draw"), {})
            elif self._chain is not None and self._decision and self._decision.rule:
                # a rule decided this unit: it keeps its fault (and counts once)
                return self._chain
            else:  # a new behavior reaches the open connection
                decision = plan.draw(lambda: self.random("draw"))
            self._decision = decision
            for handler in decision.handlers:
                handler.on_connection(self)
            self.record.injected = not all(h.spares(self) for h in decision.handlers)
            self._chain = Chain(decision.handlers, self.client, self.backend)
            self.record.handler = decision.chain
            self.record.handlers.append(decision.chain)
            self.record.options = {
                name: handler.effective_options()
                for name, handler in zip(decision.names, decision.handlers, strict=True)
                if handler.options
            }
        return self._chain

    def pump(self, to_backend: bool) -> None:
        """Relay one direction until its chain ends it; report how."""
        source = self.client if to_backend else self.backend
        CONNECTION_RANDOM.set((self, "up" if to_backend else "down"))
        hub = gevent.get_hub()
        watcher = None
        outcome = "error"
        try:
            leftover = self._leftover.pop(to_backend, b"")
            if leftover:
                (self.backend if to_backend else self.client).sendall(leftover)
            while True:
                chain = self.chain()
                if chain.transparent:
                    if self._relay_untouched(to_backend):
                        continue  # the plan changed: the next chunk is the new one's
                    break
                if not source.pending:
                    if watcher is None:
                        watcher = hub.loop.io(source.fileno(), 1)
                    hub.wait(watcher)  # draw for the chunk only once it is there
                    chain = self.chain()
                if not chain.call(to_backend):
                    break
            outcome = "eof" if source.eof else "close"
        except GreenletExit:
            outcome = "killed"
            raise
        except Exception as error:
            outcome = "reset" if isinstance(error, OSError) else "error"
            self.record_failure(error, to_backend)
        finally:
            if watcher is not None:
                watcher.close()
            self.finish(to_backend, outcome)

    def _untouched_streams(
        self,
        directions: tuple[bool, ...],
        on_end: Callable[[Stream, object], None],
        readers: tuple[Any, Any] | None = None,
    ) -> list[Stream] | None:
        """Streams for the fast path, or None if gevent's internals differ.

        ``readers``: stopped io watchers on the client's and the backend's
        descriptors for the streams to read with (they stay the caller's).
        """
        plan = self._plan
        host = self.host
        streams = []
        for to_backend in directions:
            source, dest = (
                (self.client, self.backend) if to_backend else (self.backend, self.client)
            )
            while source.pending:  # what a previous chain left unhandled goes first
                dest.sendall(source.recv(host.read_size))
            raw = raw_sockets(source.sock, dest.sock)
            if raw is None:  # pragma: no cover - other gevent internals
                return None
            streams.append(
                Stream(
                    source,
                    dest,
                    raw,
                    self.record,
                    host.read_size,
                    host,
                    plan,
                    on_end,
                    None if readers is None else readers[0 if to_backend else 1],
                )
            )
        return streams

    def _relay_untouched(self, to_backend: bool) -> bool:
        """One direction through the fast path; False at EOF, True when the
        plan changed. Errors are raised."""
        waiter = Waiter()
        streams = self._untouched_streams((to_backend,), lambda _, result: waiter.switch(result))
        if streams is None:  # pragma: no cover - other gevent internals: the handler path
            self.chain().transparent = False
            return True
        streams[0].start()
        try:
            result = waiter.get()
        finally:
            streams[0].close()
        if isinstance(result, BaseException):
            raise result
        return bool(result)

    def _relay_both_untouched(self) -> bool:
        """Both directions through the fast path, with no pump greenlet.

        True when the connection is done; False when the plan changed
        and pumps must take over the directions still open.
        """
        waiter = Waiter()

        def on_end(stream: Stream, result: object) -> None:
            if result is False:  # EOF: pass the half-close on, go on with the other side
                self.finish(stream.to_backend, "eof")
                if self._done.is_set():
                    waiter.switch(True)
                return
            if result is True:  # the plan changed: what the other had taken on goes on
                self._keep_leftovers(streams or ())
            for other in streams or ():
                other.close()
            if isinstance(result, BaseException):
                self.record_failure(result, stream.to_backend)
                self.finish(stream.to_backend, "reset")
                waiter.switch(True)
            else:
                waiter.switch(False)

        streams = self._untouched_streams((True, False), on_end)
        if streams is None:  # pragma: no cover - other gevent internals: the handler path
            self.chain().transparent = False
            return False
        for stream in streams:
            stream.start()
        try:
            return bool(waiter.get())
        finally:
            for stream in streams:
                stream.close()

    def _keep_leftovers(self, streams: Iterable[Stream]) -> None:
        """What fast-path streams had read but not sent (a full destination)
        when the plan changed: their pumps send it first, as it is."""
        for stream in streams:
            leftover = stream.leftover()
            if leftover:
                self._leftover[stream.to_backend] = leftover

    def relay_in_callbacks(
        self,
        on_ended: Callable[[], None],
        on_hand_over: Callable[[], None],
        readers: tuple[Any, Any],
    ) -> bool:
        """Both directions through the fast path from a loop callback, with
        no greenlet at all (the chain in force is transparent).

        The connection then ends in the callback that sees its end: the
        sockets are closed and ``on_ended`` is called. When the plan
        changes, the streams stop and ``on_hand_over`` is called: it runs
        ``run(handed_over=True)`` in a greenlet, whose pumps take over the
        directions still open. ``readers``: stopped io watchers on the
        client's and the backend's descriptors, which stay the caller's.
        False (nothing started) if gevent's internals differ.
        """
        streams = self._untouched_streams((True, False), self._on_stream_end, readers)
        if streams is None:  # pragma: no cover - other gevent internals
            return False
        self._streams = streams
        self._on_ended, self._on_hand_over = on_ended, on_hand_over
        for stream in streams:
            stream.start()
        return True

    def _on_stream_end(self, stream: Stream, result: object) -> None:
        """How a stream of ``relay_in_callbacks`` ended (in a loop callback)."""
        try:
            self._stream_ended(stream, result)
        except Exception as error:  # never leave an error in the hub, nor the connection open
            self.record.end(Ending.ERROR, _format_error(error))
            if self._on_ended is not None:
                self._end_in_callbacks()

    def _stream_ended(self, stream: Stream, result: object) -> None:
        if result is False:  # EOF: pass the half-close on, go on with the other side
            self.finish(stream.to_backend, "eof")
            if self._done.is_set():
                self._end_in_callbacks()
            return
        if isinstance(result, BaseException):
            self.record_failure(result, stream.to_backend)
            self.finish(stream.to_backend, "reset")
            self._end_in_callbacks()
            return
        self._keep_leftovers(self._streams)  # the plan changed: what they had taken on goes on
        self.drop_streams()
        on_hand_over, self._on_hand_over = self._on_hand_over, None
        self._on_ended = None
        if on_hand_over is not None:
            on_hand_over()

    def _end_in_callbacks(self) -> None:
        """Close what the callbacks relayed, then say so."""
        self.drop_streams()
        try:
            self._close_sockets()
        finally:
            on_ended, self._on_ended = self._on_ended, None
            self._on_hand_over = None
            self._release()
            if on_ended is not None:
                on_ended()

    def _release(self) -> None:
        """Break the endpoints' way back to this connection, the one
        reference cycle of a connection served in callbacks, once it is
        over (no handler ever saw these endpoints): the connection and
        everything it holds are then freed by reference counting at once,
        leaving the cyclic garbage collector nothing to look for (it took
        about a fifth of the proxy's Python time in a churn of short
        connections)."""
        del self.client.connection
        del self.backend.connection

    def drop_streams(self) -> None:
        """Stop and free the callback streams (watchers, pipes); idempotent."""
        streams, self._streams = self._streams, []
        for stream in streams:
            stream.close()

    def record_failure(self, error: BaseException, to_backend: bool) -> None:
        if isinstance(error, OSError):
            if self.client.was_reset or self.backend.was_reset:
                side = "client" if self.client.was_reset else "backend"
            else:
                side = "client" if to_backend else "backend"
            self.record.end(Ending.RESET, f"{side} side: {error.strerror or error}")
        else:
            self.record.end(Ending.ERROR, _format_error(error))

    def finish(self, to_backend: bool, outcome: str) -> None:
        self._finished[to_backend] = outcome
        if outcome == "eof":
            if len(self._finished) < 2:  # the last one needs no shutdown: close follows
                dest = self.backend if to_backend else self.client
                try:
                    dest.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            else:
                self.record.end(
                    Ending.CLIENT_CLOSED if self._first_eof() else Ending.BACKEND_CLOSED
                )
                self._done.set()
        else:
            if outcome == "close":
                self.record.end(Ending.HANDLER_CLOSED)
            self._done.set()

    def _first_eof(self) -> bool:
        return next(iter(self._finished))

    def run(self, handed_over: bool = False) -> None:
        """Pump both ways until done; close both sockets on the way out.

        ``handed_over``: the connection was relayed in loop callbacks until
        the plan changed; pumps take over the directions still open.
        """
        pumps: list[gevent.Greenlet] = []
        try:
            # draw now, so that handlers see the connection from its start
            # (toxiproxy's timeout counts from there)
            CONNECTION_RANDOM.set((self, "draw"))
            wire = None if handed_over else self.host.plan.wire
            if wire is not None:  # faults per exchange: the framers cut the streams
                self._green()
                self.record.handler = wire.name
                relay = self._relay = ExchangeRelay(self.host, self, wire)
                pumps = relay.start()  # grows when a direction hands over to a pump
                self._done.wait()
                return
            if not handed_over and self.chain().transparent and self._relay_both_untouched():
                return  # done without a pump (the finally block closes)
            self._green()
            pumps = [
                gevent.spawn(self.pump, to_backend)
                for to_backend in (True, False)
                if to_backend not in self._finished
            ]
            self._done.wait()
        except ProxyDown:
            self.record.end(Ending.PROXY_DOWN)
            raise
        except GreenletExit:
            self.record.end(Ending.PROXY_STOPPED)
            raise
        except Exception as error:
            self.record.end(Ending.ERROR, _format_error(error))
        finally:
            if self._relay is not None:
                self._relay.stop()
            helpers = pumps + self._helpers
            for helper in helpers:
                helper.kill(block=False)
            # joinall, unlike killall, never raises its timeout. Sockets close
            # after: gevent defers closing a descriptor that a live watcher
            # still waits on, until the loop next wakes (maybe never, if idle)
            try:
                gevent.joinall(helpers, timeout=HELPER_GRACE)
            finally:  # a kill (the proxy stopping) may land right here
                self._close_sockets()

    def _green(self) -> None:
        """Both sides as gevent sockets, from here on: handlers and pumps wait on them."""
        self.client.green()
        self.backend.green()

    def _close_sockets(self) -> None:
        """Close both sides; a side whose peer reset gets the other one reset too.

        A backend that crashes mid-reply resets its connection: the client must
        see ECONNRESET, not a clean EOF that looks like a complete reply.
        """
        client, backend = self.client, self.backend
        if self._reset_client:
            client.reset()
        for endpoint, other in ((client, backend), (backend, client)):
            if endpoint is client and self._reset_client:
                continue
            if other.was_reset and not endpoint.was_reset:
                endpoint.reset()
            else:
                endpoint.sock.close()


def _format_error(error: BaseException) -> str:
    """The last frames of a handler's exception, for its connection record."""
    lines = traceback.format_exception(type(error), error, error.__traceback__, limit=-4)
    return "".join(lines).strip()


class Slot:
    """An accepted connection as its proxy tracks it, from accept to close:
    its record, what serves it (loop callbacks, or a greenlet) and every
    socket it opened.

    A connection whose chain moves bytes untouched (``dummy``, no protocol)
    lives in loop callbacks only: the connect is a write watcher and a
    timer, the relay two fast-path streams, the end a close in the callback
    that sees it. A greenlet is made only where something must wait: a
    chain with handlers, a protocol's framers, a live change that hands the
    directions to pumps, a name to resolve per connection.

    Stopping a proxy with thousands of open connections cannot wait for each
    greenlet to unwind; it closes what the slots hold instead, whatever the
    greenlets are doing, so that no descriptor outlives the proxy.
    """

    __slots__ = (
        "_addresses",
        "_connecting",
        "_ended",
        "_readers",
        "_timer",
        "client_sock",
        "connection",
        "greenlet",
        "host",
        "record",
        "sockets",
        "unit",
    )

    def __init__(
        self,
        host: Host,
        record: ConnectionRecord,
        unit: Unit,
        client_sock: AnySocket,
        ended: Callable[[Slot], None],
    ) -> None:
        self.host = host
        self.record = record
        self.unit = unit
        self.client_sock = client_sock
        #: What to close: the sockets, then the connection's endpoints (which
        #: close whichever socket, plain or gevent, each side has by then).
        self.sockets: list[AnySocket | Endpoint] = [client_sock]
        #: The greenlet serving the connection, once one does.
        self.greenlet: gevent.Greenlet | None = None
        self.connection: Connection | None = None
        #: Called once, in the hub, when the connection is done.
        self._ended: Callable[[Slot], None] | None = ended
        self._addresses: Iterator[tuple[int, Any]] = iter(())
        #: The connect under way: the backend's socket and its write watcher.
        self._connecting: tuple[_socket.socket, Any] | None = None
        self._timer: Any = None
        #: The io watchers the streams read with (the proxy's spares).
        self._readers: tuple[Any, Any] | None = None

    # -- from accept to the relay, in loop callbacks -------------------------

    def start(self) -> None:
        """Connect to the distant (in the accept callback: nothing here waits)."""
        try:
            self._start()
        except Exception as error:  # never leave an error in the hub
            self._fail(error)

    def _start(self) -> None:
        resolved = self.host.upstream.resolved
        if not resolved:  # a name to resolve per connection: that waits
            self.spawn(serve_connection, self.host, self, self.unit)
            return
        self._addresses = iter(resolved)
        self._connect_next(None)

    def _connect_next(self, failure: OSError | None) -> None:
        """Try the next address of the distant; refuse when none is left."""
        for family, sockaddr in self._addresses:
            try:
                sock, result = start_connect(family, sockaddr)
            except OSError as error:
                failure = error
                continue
            if result == 0:  # pragma: no cover - TCP connects are never this quick
                self._connected(sock, None)
                return
            if result in CONNECTING:
                watcher = self.host.watchers.io(sock.fileno(), _WRITE)
                self._connecting = (sock, watcher)
                self.sockets.append(sock)
                watcher.start(self._on_connect_done)
                timer = self._timer = watcher.loop.timer(self.host.upstream.connect_timeout)
                timer.start(self._on_connect_timeout)
                return
            sock.close()
            failure = OSError(result, os.strerror(result))
        self._refused(failure or OSError(errno.EHOSTUNREACH, "no address to connect to"))

    def _stop_connecting(self) -> tuple[_socket.socket, Any] | None:
        """Stop waiting for the connect; returns its socket and (stopped) watcher."""
        if self._timer is not None:
            self._timer.stop()
            self._timer.close()
            self._timer = None
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            connecting[1].stop()
            self.sockets.remove(connecting[0])
        return connecting

    def _on_connect_done(self) -> None:
        """The backend's socket is writable: the handshake is over, one way or another."""
        try:
            self._connect_done()
        except Exception as error:  # never leave an error in the hub
            self._fail(error)

    def _connect_done(self) -> None:
        connecting = self._stop_connecting()
        if connecting is None:  # pragma: no cover - abandoned meanwhile
            return
        sock, watcher = connecting
        try:
            result = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        except OSError as error:  # pragma: no cover - the socket is ours
            result = error.errno or errno.EIO
        if result:
            self.host.watchers.give_back(watcher)
            sock.close()
            self._connect_next(OSError(result, os.strerror(result)))
            return
        self._connected(sock, watcher)

    def _on_connect_timeout(self) -> None:
        try:
            connecting = self._stop_connecting()
            if connecting is not None:
                self.host.watchers.give_back(connecting[1])
                connecting[0].close()
            self._connect_next(TimeoutError("timed out"))
        except Exception as error:  # never leave an error in the hub
            self._fail(error)

    def _fail(self, error: Exception) -> None:
        """A callback met an error: the connection ends as one, its record
        says where, and nothing of it stays open."""
        self.abandon(Ending.ERROR, _format_error(error))

    def _refused(self, error: OSError) -> None:
        """No connect went through: the client gets an RST, the record says why."""
        host, record = self.host, self.record
        if error.errno in EXHAUSTED:
            host.exhausted(error, f"connect to {host.distant}")
            record.end(Ending.EXHAUSTED, str(error.strerror or error))
        else:
            record.end(Ending.BACKEND_REFUSED, str(error.strerror or error))
        reset_socket(self.client_sock)
        self._end()

    def _connected(self, backend_sock: _socket.socket, watcher: Any) -> None:
        """Relay in callbacks if the chain in force is transparent, else hand
        the connection to a greenlet. ``watcher``: the connect's, stopped."""
        host = self.host
        _set_nodelay(self.client_sock, backend_sock)
        connection = self.connection = Connection(
            host, self.client_sock, backend_sock, self.record, self.unit
        )
        self.sockets = [connection.client, connection.backend]
        if host.plan.wire is None:
            # decide now, as run() would: handlers see the connection from its start
            token = CONNECTION_RANDOM.set((connection, "draw"))
            try:
                transparent = connection.chain().transparent
            except Exception as error:  # a handler's on_connection failed
                if watcher is not None:
                    host.watchers.give_back(watcher)
                connection.record.end(Ending.ERROR, _format_error(error))
                connection._close_sockets()
                self._end()
                return
            finally:
                CONNECTION_RANDOM.reset(token)
            if transparent:
                if watcher is None:  # pragma: no cover - TCP connects are never this quick
                    watcher = host.watchers.io(backend_sock.fileno(), _READ)
                else:  # the connect's watcher reads for the backend from now on
                    watcher.events = _READ
                readers = (host.watchers.io(self.client_sock.fileno(), _READ), watcher)
                if connection.relay_in_callbacks(self._end, self._hand_over, readers):
                    self._readers = readers
                    return
                host.watchers.give_back(readers[0])  # pragma: no cover - other gevent internals
        if watcher is not None:
            host.watchers.give_back(watcher)
        self.spawn(connection.run)

    def _hand_over(self) -> None:
        """The plan changed under a connection relayed in callbacks: pumps go on."""
        assert self.connection is not None
        self._give_back_readers()
        self.spawn(self.connection.run, True)

    def _give_back_readers(self) -> None:
        readers, self._readers = self._readers, None
        if readers is not None:
            for watcher in readers:
                self.host.watchers.give_back(watcher)

    def _end(self) -> None:
        self._give_back_readers()
        ended, self._ended = self._ended, None
        if ended is not None:
            ended(self)

    # -- in a greenlet, or closed from outside ---------------------------------

    def spawn(self, func: Callable[..., object], *args: object) -> None:
        """Serve the connection in a greenlet from here on; its end (or its
        kill, even before it ran) ends the slot."""
        greenlet = self.greenlet = gevent.spawn(self._serve, func, args)
        greenlet.link(self._linked)

    def _serve(self, func: Callable[..., object], args: tuple[object, ...]) -> None:
        try:
            func(*args)
        finally:
            self._end()

    def _linked(self, _greenlet: gevent.Greenlet) -> None:
        self._end()

    def abandon(self, ending: Ending, error: str | None = None) -> None:
        """End the record and close every socket now, without the greenlet."""
        self.record.end(ending, error)
        connecting = self._stop_connecting()
        if connecting is not None:
            self.host.watchers.give_back(connecting[1])
            connecting[0].close()
        if self.connection is not None:
            self.connection.drop_streams()
        self._give_back_readers()
        for each in self.sockets:
            each.close()
        self._end()


def _set_nodelay(client_sock: AnySocket, backend_sock: AnySocket) -> None:
    """``TCP_NODELAY`` on the backend's socket (and the client's, off Linux)."""
    for sock in (backend_sock,) if INHERITS_NODELAY else (client_sock, backend_sock):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def serve_connection(host: Host, slot: Slot, unit: Unit) -> None:
    """Connect to the distant and relay; a refused connect resets the client."""
    record = slot.record
    client_sock = slot.client_sock
    try:
        backend_sock = host.upstream.connect()
    except GreenletExit:
        record.end(Ending.PROXY_STOPPED)
        client_sock.close()
        raise
    except OSError as error:
        if error.errno in EXHAUSTED:
            host.exhausted(error, f"connect to {host.distant}")
            record.end(Ending.EXHAUSTED, str(error.strerror or error))
        else:
            record.end(Ending.BACKEND_REFUSED, str(error.strerror or error))
        reset_socket(client_sock)
        return
    slot.sockets.append(backend_sock)
    _set_nodelay(client_sock, backend_sock)
    connection = slot.connection = Connection(host, client_sock, backend_sock, record, unit)
    slot.sockets = [connection.client, connection.backend]
    connection.run()
