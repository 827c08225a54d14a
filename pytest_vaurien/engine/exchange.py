"""Faults per exchange: the framer between the sockets and the fault plan.

Under a protocol, a connection is relayed by two pumps that feed what they
read to the protocol's sans-IO framers and act on the events: each request
head is a unit the plan decides a fault for; the reply that answers it,
paired in order even when the client pipelines, gets the rest of that fault.
The original bytes are forwarded untouched.

Replies go back in request order, so the exchanges waiting for a reply are a
queue: a request answered by the proxy itself (``error``) waits there until
the replies before it went out, and one that is never answered (``hang``)
holds every reply behind it, as a server that hangs would.

While every exchange of a direction is relayed untouched, that direction
runs in the loop's own callbacks (as :mod:`fastpath` does for ``tcp``): read,
frame, decide, write, with no greenlet switch. At the first event that needs
to wait - a fault that delays, holds or answers, a destination that is full
- the direction hands what is left to a pump greenlet for good.

When every unit of the plan in force is relayed untouched (``100:dummy``,
no rule) and no one reads the exchange records (the ``vaurien`` command),
an exchange costs no record and no decision: it is counted (its ordinal) and
paired with its reply through a :class:`_PlainRun`, one entry in the queue
for any number of such exchanges in a row; and a framer that can (Redis,
PostgreSQL's queries and extended protocol) cuts a whole pipeline into one
:class:`Batch` in one pass (PostgreSQL's may hold requests that are no unit,
a Sync: its ``units`` says how many ordinals it takes). The plan is read
once per chunk read, which is when a per-unit loop would have read it too.
A chunk that frames to one batch (the usual one) skips the loop over events;
the others are handled in one loop that takes the plain path's (a batch, a
plain head, an end) by their exact type first. The random source handlers
draw from is set only when a unit is decided there, the one time handler
code runs in a callback.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import gevent
import gevent.event
from gevent import GreenletExit

from pytest_vaurien.engine.chain import run_over
from pytest_vaurien.engine.endpoint import Endpoint, os_socket
from pytest_vaurien.handlers.base import CONNECTION_RANDOM, BaseHandler
from pytest_vaurien.handlers.context import RELAY, ConnectionView, ExchangeFault
from pytest_vaurien.handlers.dummy import Dummy
from pytest_vaurien.handlers.streams import wait_delivered
from pytest_vaurien.plan import Decision, Plan, Unit
from pytest_vaurien.protocols.base import (
    Batch,
    End,
    Event,
    Head,
    MessageInfo,
    Part,
    Switched,
    WireProtocol,
)
from pytest_vaurien.records import ConnectionRecord, ExchangeRecord

__all__ = ["ExchangeHost", "ExchangeRelay", "Pumps"]

#: The fault of a unit that relays it untouched.
_RELAY = RELAY


class ExchangeHost(Protocol):
    """What the exchange layer needs of its proxy."""

    @property
    def plan(self) -> Plan: ...

    @property
    def started(self) -> float: ...

    @property
    def read_size(self) -> int: ...

    def next_ordinal(self) -> int:
        """The next unit's ordinal, in arrival order at the proxy."""
        ...

    def next_ordinals(self, count: int) -> int:
        """Take ``count`` ordinals at once; returns the first."""
        ...

    def keep_exchange(self, record: ExchangeRecord) -> None:
        """Keep ``record`` with the proxy's exchanges."""
        ...

    @property
    def wants_exchanges(self) -> bool:
        """Whether anyone reads the exchange records (else none is made)."""
        ...


class Pumps(ConnectionView, Protocol):
    """What the exchange layer needs of its connection: the sockets, the
    record, and how a direction ends."""

    @property
    def client(self) -> Endpoint: ...

    @property
    def backend(self) -> Endpoint: ...

    @property
    def record(self) -> ConnectionRecord: ...

    def finish(self, to_backend: bool, outcome: str) -> None: ...

    def record_failure(self, error: BaseException, to_backend: bool) -> None: ...


class Exchange:
    """One request and its reply, as they go through."""

    __slots__ = (
        "decision",
        "fault",
        "forwarded",
        "info",
        "record",
        "started",
        "synthetic",
        "synthetic_summary",
    )

    def __init__(self, info: MessageInfo, decision: Decision, record: ExchangeRecord) -> None:
        self.info = info
        self.decision = decision
        self.record = record
        self.started = time.monotonic()
        #: ``None``: run the handlers over the exchange's bytes.
        self.fault: ExchangeFault | None = _RELAY
        self.forwarded = True
        #: The protocol's error, when the proxy answers.
        self.synthetic = b""
        self.synthetic_summary = ""

    @property
    def held(self) -> bool:
        return self.fault is not None and self.fault.hold

    def done(self, reply: str, outcome: str) -> None:
        record = self.record
        if record.duration is None:
            record.reply = reply
            record.outcome = record.outcome or outcome
            record.duration = time.monotonic() - self.started


class _PlainRun:
    """Exchanges in a row relayed untouched, with no record: one queue entry.

    Stands where an :class:`Exchange` would in the queue of exchanges owed
    a reply (``count`` of them) and as the exchange coming in or going out.
    """

    __slots__ = ("count",)

    fault = _RELAY
    forwarded = True
    held = False

    def __init__(self, count: int = 0) -> None:
        self.count = count

    def __repr__(self) -> str:
        return f"<{self.count} plain exchanges>"


#: The request coming in is one of a plain run (its body, if any, is forwarded).
_PLAIN_INCOMING = _PlainRun()
#: What a request must not carry to be relayed as part of a plain run.
_NOT_PLAIN = ("handshake", "substitute", "noreply")
#: The fast path handed over after handling the event it returned this for.
_AFTER = object()


class _Outbox:
    """Bytes bound for one side, sent in one call once a chunk's events are
    handled: a reply's head and body leave together, as they came, instead
    of as two segments the client wakes up for twice."""

    __slots__ = ("endpoint", "parts")

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.parts: list[bytes] = []

    def add(self, data: bytes) -> None:
        if data:
            self.parts.append(data)

    def flush(self) -> None:
        parts = self.parts
        if parts:
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            parts.clear()
            self.endpoint.sendall(data)

    def flush_now(self) -> bool:
        """Send without waiting (in a loop callback); False if some is left."""
        parts = self.parts
        if not parts:
            return True
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()
        sent = self.endpoint.send_now(data)
        if sent < len(data):
            parts.append(data[sent:])
            return False
        return True

    def take(self) -> bytes:
        """What is left to send, handed to a pump."""
        data = b"".join(self.parts)
        self.parts.clear()
        return data


class _Begun:
    """A request head whose fault was decided in a callback, handed to a pump."""

    __slots__ = ("event", "exchange")

    def __init__(self, exchange: Exchange, event: Head) -> None:
        self.exchange = exchange
        self.event = event


class _Handover(Exception):
    """A fast direction met something that waits: a pump takes over from here."""


class ExchangeRelay:
    """Both directions of one connection, cut into exchanges by ``wire``."""

    def __init__(self, host: ExchangeHost, pumps: Pumps, wire: WireProtocol) -> None:
        self.host = host
        self.pumps = pumps
        self.wire = wire
        self.requests, self.replies = wire.framers()
        #: Exchanges awaiting their reply, in request order.
        self.pending: deque[Exchange | _PlainRun] = deque()
        #: The exchange whose request is coming in, and whose reply is going out.
        self.incoming: Exchange | _PlainRun | None = None
        self.outgoing: Exchange | _PlainRun | None = None
        #: The plan :attr:`_plan_relays` was worked out for, and whether that plan
        #: relays every unit untouched; :attr:`_quick`: it does and no one
        #: reads the records, for the chunk being handled.
        self._plan_seen: Plan | None = None
        self._plan_relays = False
        self._quick = False
        self._batching = hasattr(self.requests, "batch")
        self._reply_batching = hasattr(self.replies, "batch_limit")
        self.per_connection: dict[int, int] = {}
        self._never = gevent.event.Event()
        self.to_backend = _Outbox(pumps.backend)
        self.to_client = _Outbox(pumps.client)
        #: What handlers drawing at random see, per direction (made once).
        self._random_keys = {True: (pumps, "up"), False: (pumps, "down")}
        #: The request coming in was replaced: its own body is not forwarded.
        self._drop_body = False
        #: Pump greenlets (the connection kills them when it ends).
        self.greenlets: list[gevent.Greenlet] = []
        self._watchers: dict[bool, object] = {}

    # -- fast: in the loop's callbacks -----------------------------------------

    def start(self) -> list[gevent.Greenlet]:
        """Relay both directions; returns the (growing) list of pump greenlets."""
        loop = gevent.get_hub().loop
        for to_backend in (True, False):
            source = self.pumps.client if to_backend else self.pumps.backend
            raw = os_socket(source.sock)
            if raw is None or source.pending:  # pragma: no cover - other gevent internals
                self._spawn_pump(to_backend, [], b"")
                continue
            watcher = loop.io(raw.fileno(), 1)
            self._watchers[to_backend] = watcher
            watcher.start(self._readable, to_backend, raw.recv)
        return self.greenlets

    def stop(self) -> None:
        """Stop the callbacks (the connection ends)."""
        for watcher in self._watchers.values():
            watcher.stop()  # type: ignore[attr-defined]
            watcher.close()  # type: ignore[attr-defined]
        self._watchers.clear()

    def _readable(self, to_backend: bool, recv: Callable[[int], bytes]) -> None:
        outbox = self.to_backend if to_backend else self.to_client
        events: list[Event] = []
        eof = False
        try:
            try:
                data = recv(self.host.read_size)
            except BlockingIOError:
                return
            except ConnectionResetError:
                (self.pumps.client if to_backend else self.pumps.backend).was_reset = True
                raise
            if not data:
                eof = True
                (self.pumps.client if to_backend else self.pumps.backend).eof = True
            # a chunk of the plain path is most often one batch: no loop for it
            if to_backend:
                self._prepare_requests()
                events = self.requests.feed(data)
                if len(events) == 1 and isinstance(events[0], Batch):  # or PostgreSQL's
                    self._relay_batch(events[0])
                    handover = None
                else:
                    handover = self._fast_requests(events)
            else:
                self._prepare_replies()
                events = self.replies.feed(data)
                if len(events) == 1 and type(events[0]) is Batch:
                    handover = None if self._batch_replied(events[0]) else (0, _AFTER)
                else:
                    handover = self._fast_replies(events)
            if handover is None:
                if outbox.flush_now():
                    if eof:
                        self._end_fast(to_backend)
                        self.pumps.finish(to_backend, "eof")
                    return
                handover = (len(events), None)
            index, begun = handover
            rest: list[Event | _Begun] = []
            if isinstance(begun, _Begun):
                rest.append(begun)
                index += 1
            elif begun is _AFTER:  # that event was handled: the pump goes on after it
                index += 1
            rest.extend(events[index:])
            unsent = outbox.take()
            self._end_fast(to_backend)
            self._spawn_pump(to_backend, rest, unsent, eof)
        except Exception as error:  # never leave an error in the hub
            self._end_fast(to_backend)
            self.pumps.record_failure(error, to_backend)
            self.pumps.finish(to_backend, "reset" if isinstance(error, OSError) else "error")

    def _prepare(self, to_backend: bool) -> None:
        """Before a chunk is framed: may its units take the plain path?"""
        if to_backend:
            self._prepare_requests()
        else:
            self._prepare_replies()

    def _prepare_requests(self) -> None:
        """Before a chunk of requests is framed: may its units take the plain path?

        The plan is read once for the chunk: what a per-unit loop would
        read for each of its units, as nothing else runs in between.
        """
        plan = self.host.plan
        if plan is not self._plan_seen:
            self._plan_seen = plan
            self._plan_relays = _relays_all(plan)
        quick = self._quick = self._plan_relays and not self.host.wants_exchanges
        if self._batching:
            self.requests.batch = quick  # type: ignore[attr-defined]

    def _prepare_replies(self) -> None:
        """Before a chunk of replies is framed: how many may leave in a batch
        (the plain run first in line, if its replies are not begun)."""
        if self._reply_batching:
            head = self.pending[0] if self.pending and self.outgoing is None else None
            self.replies.batch_limit = (  # type: ignore[attr-defined]
                head.count if type(head) is _PlainRun else 0
            )

    def _relay_plain(
        self, count: int, data: bytes, info: MessageInfo | None, units: int = 1
    ) -> None:
        """``count`` requests relayed untouched, with no record: counted
        (``units`` of them: a batch may hold requests that are no unit, such
        as PostgreSQL's Sync), queued for their replies as one run, forwarded."""
        self.host.next_ordinals(units)
        pending = self.pending
        if pending and isinstance(pending[-1], _PlainRun):
            pending[-1].count += count
        else:
            pending.append(_PlainRun(count))
        if info is None:
            self.replies.expect_plain(count)  # type: ignore[attr-defined]
        else:
            self.replies.expect(info)
        self.to_backend.add(data)

    def _relay_batch(self, batch: Batch) -> None:
        """A batch of requests, decided with its chunk: relayed."""
        units = batch.units
        self._relay_plain(batch.count, batch.data, None, batch.count if units is None else units)

    def _batch_answered(self, batch: Batch) -> None:
        """``batch``'s replies answer as many requests of the plain run first in line."""
        run = self.pending[0]
        assert isinstance(run, _PlainRun)
        assert run.count >= batch.count
        run.count -= batch.count
        if not run.count:
            self.pending.popleft()

    def _batch_replied(self, batch: Batch) -> bool:
        """``batch``'s replies go out; False when the next request in line is
        answered by the proxy itself (a pump sends that answer)."""
        self._batch_answered(batch)
        self.to_client.add(batch.data)
        pending = self.pending
        return not pending or pending[0].forwarded

    def _plain_reply_done(self, run: _PlainRun) -> None:
        """A reply to a request of ``run`` went out whole."""
        run.count -= 1
        if not run.count and self.pending and self.pending[0] is run:
            self.pending.popleft()
        self.outgoing = None

    def _end_fast(self, to_backend: bool) -> None:
        watcher = self._watchers.pop(to_backend, None)
        if watcher is not None:
            watcher.stop()  # type: ignore[attr-defined]
            watcher.close()  # type: ignore[attr-defined]

    def _fast_requests(self, events: list[Event]) -> tuple[int, object] | None:
        """Relay here a chunk's requests that need no waiting; at the first
        that does, its index and what :meth:`_fast_request` said of it.

        The events of the plain path (a batch, a plain head, an end) are
        handled inline, by their exact type; the others as one by one.
        """
        add = self.to_backend.add
        for index, event in enumerate(events):
            kind = type(event)
            if isinstance(event, Batch):  # decided with the chunk: relayed
                self._relay_batch(event)
            elif (
                kind is Head and self._quick and event.info.fields.keys().isdisjoint(_NOT_PLAIN)  # type: ignore[union-attr]
            ):
                self.incoming = _PLAIN_INCOMING
                self._relay_plain(1, event.data, event.info)  # type: ignore[union-attr]
            elif kind is End:
                current = self.incoming
                self.incoming = None
                if current is not None and current.forwarded:
                    add(event.data)
            else:
                item = self._fast_request(event)
                if item is not True:
                    return index, item
        return None

    def _fast_request(self, event: Event) -> bool | _Begun | None:
        """Relay ``event`` here if it needs no waiting: True; else what the pump gets."""
        if isinstance(event, Head):
            fields = event.info.fields
            if self._quick and fields.keys().isdisjoint(_NOT_PLAIN):
                self.incoming = _PLAIN_INCOMING
                self._relay_plain(1, event.data, event.info)
                return True
            # handlers drawing at random while the unit is decided (delay's
            # jitter) see this connection's source
            CONNECTION_RANDOM.set(self._random_keys[True])
            exchange = self.incoming = self._begin(event.info)
            if exchange.fault is not _RELAY or "substitute" in event.info.fields:
                return _Begun(exchange, event)
            self._expect(exchange)
            self.to_backend.add(event.data)
            return True
        if isinstance(event, (Part, End)):
            current = self.incoming
            if isinstance(event, End):
                self.incoming = None
            if current is not None and current.forwarded:
                self.to_backend.add(event.data)
            return True
        if isinstance(event, Batch):  # decided with the chunk: relayed
            self._relay_batch(event)
            return True
        if isinstance(event, Switched):
            self._plain(f"client side: {event.reason}")
        self.to_backend.add(event.data)
        return True

    def _fast_replies(self, events: list[Event]) -> tuple[int, object] | None:
        """Relay here a chunk's replies that need no waiting; at the first
        that does, its index and what :meth:`_fast_reply` said of it.

        Replies to a plain run (a batch, or a head, parts and an end) are
        handled inline, by their exact type; the others as one by one.
        """
        add = self.to_client.add
        pending = self.pending
        for index, event in enumerate(events):
            outgoing = self.outgoing
            if type(event) is Batch:  # replies to plain requests (the framer's limit)
                if not self._batch_replied(event):
                    return index, _AFTER  # the proxy's own answer is next: the pump sends it
            elif type(event) is Part:
                add(event.data)
            elif type(event) is End and type(outgoing) is _PlainRun:
                add(event.data)
                self._plain_reply_done(outgoing)
                if pending and not pending[0].forwarded:
                    return index, _AFTER
            elif (
                type(event) is Head
                and outgoing is None
                and pending
                and type(pending[0]) is _PlainRun
            ):
                if not event.interim:
                    self.outgoing = pending[0]
                add(event.data)
            else:
                item = self._fast_reply(event)
                if item is not True:
                    return index, item
        return None

    def _fast_reply(self, event: Event) -> bool | object | None:
        if isinstance(event, Head):
            if self.outgoing is None and self.pending:
                head = self.pending[0]
                if isinstance(head, _PlainRun):
                    if not event.interim:
                        self.outgoing = head
                    self.to_client.add(event.data)
                    return True
                if not head.forwarded or head.fault is not _RELAY:
                    return None  # an answer or a hold to see to first
                self.outgoing = head
            exchange = self.outgoing
            if isinstance(exchange, _PlainRun):
                self.to_client.add(event.data)
                return True
            if exchange is not None and not event.interim:
                if exchange.fault is not _RELAY:
                    return None
                exchange.record.reply = event.info.summary
            self.to_client.add(event.data)
            return True
        if isinstance(event, (Part, End)):
            self.to_client.add(event.data)
            exchange = self.outgoing
            if not isinstance(event, End) or exchange is None:
                return True
            if isinstance(exchange, _PlainRun):
                self._plain_reply_done(exchange)
            elif exchange.record.reply is not None:
                exchange.done(exchange.record.reply, "relayed")
                if self.pending and self.pending[0] is exchange:
                    self.pending.popleft()
                self.outgoing = None
            else:
                return True  # the end of an interim reply: the final one follows
            if self.pending and not self.pending[0].forwarded:
                return _AFTER  # the proxy's own answer is next: the pump sends it
            return True
        if isinstance(event, Batch):  # replies to plain requests (the framer's limit)
            self._batch_answered(event)
            self.to_client.add(event.data)
            if self.pending and not self.pending[0].forwarded:
                return _AFTER  # the proxy's own answer is next: the pump sends it
            return True
        if isinstance(event, Switched):
            self._plain(f"backend side: {event.reason}")
        self.to_client.add(event.data)
        return True

    def _spawn_pump(
        self, to_backend: bool, backlog: list[Event | _Begun], unsent: bytes, eof: bool = False
    ) -> None:
        pump = self.upstream if to_backend else self.downstream
        self.greenlets.append(gevent.spawn(pump, backlog, unsent, eof))

    # -- the pumps ---------------------------------------------------------

    def upstream(
        self, backlog: list[Event | _Begun] | None = None, unsent: bytes = b"", eof: bool = False
    ) -> None:
        """Client to backend: frame requests, decide each, forward or answer."""
        self._pump(
            True, self.pumps.client, self.requests.feed, self._on_request, backlog, unsent, eof
        )

    def downstream(
        self, backlog: list[Event | _Begun] | None = None, unsent: bytes = b"", eof: bool = False
    ) -> None:
        """Backend to client: frame replies, pair each with its request."""
        self._pump(
            False, self.pumps.backend, self.replies.feed, self._on_reply, backlog, unsent, eof
        )

    def _pump(
        self,
        to_backend: bool,
        source: Endpoint,
        feed: Callable[[bytes], list[Event]],
        act: Callable[[Any], bool],
        backlog: list[Event | _Begun] | None = None,
        unsent: bytes = b"",
        eof: bool = False,
    ) -> None:
        outbox = self.to_backend if to_backend else self.to_client
        CONNECTION_RANDOM.set(self._random_keys[to_backend])
        size = self.host.read_size
        outcome = "error"
        hub = gevent.get_hub()
        watcher = hub.loop.io(source.fileno(), 1)
        try:
            if unsent:  # what the fast path could not send at once
                outbox.endpoint.sendall(unsent)
            for item in backlog or ():
                if not act(item):
                    outbox.flush()
                    outcome = "close"
                    return
            outbox.flush()
            if eof:
                outcome = "eof"
                return
            while True:
                if not to_backend:
                    self._flush_answers()
                if not source.pending:
                    # wait until readable, then read: a read tried first would
                    # mostly fail (a request waits for its reply) and cost a call
                    hub.wait(watcher)
                data = source.recv(size)
                self._prepare(to_backend)
                for event in feed(data):
                    if not act(event):
                        outbox.flush()  # what came before the fault still goes
                        outcome = "close"
                        return
                outbox.flush()
                if not data:
                    outcome = "eof"
                    return
        except GreenletExit:
            outcome = "killed"
            raise
        except Exception as error:
            outcome = "reset" if isinstance(error, OSError) else "error"
            self.pumps.record_failure(error, to_backend)
        finally:
            watcher.close()
            self.pumps.finish(to_backend, outcome)

    # -- requests ----------------------------------------------------------

    def _begin(self, info: MessageInfo) -> Exchange:
        host = self.host
        plan = host.plan
        fields = info.fields
        if fields.get("handshake") and not _named_by_a_rule(plan, info):
            # the handshake (Redis HELLO, AUTH) is relayed outside the rules:
            # no unit, no count, no record among the exchanges
            exchange = Exchange(info, _NO_DECISION, ExchangeRecord(-1, 0, info.summary))
            return exchange
        ordinal = host.next_ordinal()
        if plan.bound_rules:
            unit = Unit(self.pumps.record.index, ordinal, time.monotonic() - host.started, info)
            decision = plan.decide(unit, self._draw_source, self.per_connection)
        else:  # no rule to count the unit: the behavior alone decides
            decision = plan.draw(self._draw_source)
        record = ExchangeRecord(
            connection=self.pumps.record.index,
            ordinal=ordinal,
            request=info.summary,
            by=decision.by,
            fault=decision.chain,
        )
        exchange = Exchange(info, decision, record)
        exchange.fault = _fault_of(decision.handlers)
        fault = exchange.fault
        record.injected = fault is None or (fault is not _RELAY and fault != _RELAY)
        host.keep_exchange(record)
        return exchange

    def _draw_source(self) -> random.Random:
        return self.pumps.random("draw")

    def _on_request(self, event: Event | _Begun) -> bool:
        backend = self.pumps.backend
        out = self.to_backend
        if isinstance(event, _Begun):  # decided in a callback already
            self.incoming = event.exchange
            return self._request_head(event.exchange, event.event)
        if isinstance(event, Batch):  # decided with its chunk: relayed
            self._relay_batch(event)
            return True
        if isinstance(event, Head):
            fields = event.info.fields
            if self._quick and fields.keys().isdisjoint(_NOT_PLAIN):
                self.incoming = _PLAIN_INCOMING
                self._relay_plain(1, event.data, event.info)
                return True
            return self._request_head(self._begin(event.info), event)
        if isinstance(event, (Part, End)):
            current = self.incoming
            drop = self._drop_body
            if isinstance(event, End):
                self.incoming = None
                self._drop_body = False
            if current is None or not current.forwarded or drop:
                return True  # a request the backend never sees: its body is dropped
            if current.fault is None and isinstance(current, Exchange):
                out.flush()
                keep = not event.data or run_over(
                    current.decision.handlers, event.data, self.pumps.client, backend, True
                )
                if isinstance(event, End):
                    _drain(current.decision.handlers, self.pumps)
                return keep
            out.add(event.data)
            return True
        if isinstance(event, Switched):
            self._plain(f"client side: {event.reason}")
        out.add(event.data)
        return True

    def _request_head(self, exchange: Exchange, event: Head) -> bool:
        backend = self.pumps.backend
        out = self.to_backend
        self.incoming = exchange
        fault = exchange.fault
        forced = exchange.info.fields.get("error_after")
        # the protocol may say when an error must come after the backend acted
        # (an SMTP body: the server is in its data phase) or before (DATA)
        if fault is not None and fault.answer is not None and forced not in (None, fault.after):
            exchange.fault = fault = dataclasses.replace(fault, after=forced)
        substitute = exchange.info.fields.get("substitute")
        if substitute is not None and fault is not None and fault.answer is None:
            # the protocol keeps both sides in step (Redis: an EXEC after a
            # command the proxy rejected becomes DISCARD, answered EXECABORT)
            sent, reply = substitute
            if reply is not None:  # the backend's reply is replaced by this one
                exchange.synthetic, exchange.synthetic_summary = reply, _summary(reply)
                exchange.fault = ExchangeFault(answer={}, after=True)
            self._expect(exchange)
            out.add(sent)
            self._drop_body = True  # the request's own body is not forwarded
            return True
        if fault is None:  # the handlers act on the bytes themselves
            self._expect(exchange)
            out.flush()
            return run_over(
                exchange.decision.handlers, event.data, self.pumps.client, backend, True
            )
        if fault.close_at_request:
            exchange.forwarded = False
            exchange.done("", "closed")
            return False
        if fault.answer is not None and not fault.after:
            by_backend = getattr(self.wire, "error_request", None)
            request = by_backend(fault.answer, exchange.info) if by_backend else None
            if isinstance(request, tuple):
                # the server is sent something else that puts it in the state
                # the error implies (MySQL: a deadlock rolls back, so ROLLBACK),
                # and the client gets the error: both sides agree
                sent, reply = request
                self._prepare_answer(exchange)
                if reply:
                    exchange.synthetic = reply
                exchange.fault = dataclasses.replace(fault, after=True)
                self._expect(exchange)
                out.add(sent)
                self._drop_body = True
                self._told_answered(exchange)
                return True
            if request is not None:
                # inside a transaction the server itself raises the error, so
                # both sides agree the transaction failed (PostgreSQL)
                self._expect(exchange)
                exchange.record.outcome = "answered by the backend"
                exchange.fault = _RELAY
                out.add(request)
                self._drop_body = True
                self._told_answered(exchange)
                return True
            exchange.forwarded = False
            self._prepare_answer(exchange)
            self._answer_or_queue(exchange)
            self._told_answered(exchange)
            return True
        if fault.hold:
            exchange.forwarded = False
            exchange.record.outcome = "held"
            self.pending.append(exchange)
            return True
        if fault.delay_request:
            out.flush()
            gevent.sleep(fault.delay_request)
        if fault.answer is not None:
            self._prepare_answer(exchange)
            # after=True: the server acts, but the client will see an error; a
            # protocol whose later requests depend on it must know (a batch)
            self._told_answered(exchange)
        self._expect(exchange)
        out.add(event.data)
        return True

    def _told_answered(self, exchange: Exchange) -> None:
        """Tell the request framer the proxy answered this request itself, for
        protocols whose later requests depend on it (Redis MULTI)."""
        answered = getattr(self.requests, "answered", None)
        if answered is not None:
            answered(exchange.info)

    def _expect(self, exchange: Exchange) -> None:
        fault = exchange.fault
        if exchange.info.fields.get("noreply") and (fault is None or fault.answer is None):
            # a request the server never answers (memcache noreply): nothing
            # to wait for, and nothing after it may wait behind it
            exchange.done("noreply", "relayed")
            return
        self.pending.append(exchange)
        self.replies.expect(exchange.info)

    def _prepare_answer(self, exchange: Exchange) -> None:
        fault = exchange.fault
        assert fault is not None
        assert fault.answer is not None
        exchange.synthetic, exchange.synthetic_summary = self.wire.error_reply(
            fault.answer, exchange.info
        )

    def _answer_or_queue(self, exchange: Exchange) -> None:
        """Answer now if no reply is owed before this one; else wait in line."""
        if self.pending or self.outgoing is not None:
            self.pending.append(exchange)
        else:
            self._answer(exchange)

    def _answer(self, exchange: Exchange) -> None:
        # recorded before it is sent: a client that got the answer may read
        # the record at once
        exchange.done(exchange.synthetic_summary, "answered")
        self.to_client.add(exchange.synthetic)
        self.to_client.flush()
        closes = getattr(self.wire, "closes_after_error", None)
        fault = exchange.fault
        if closes is not None and fault is not None and closes(fault.answer or {}):
            # an error that ends the session (PostgreSQL FATAL): as the server
            # would, the proxy closes the connection after saying it
            self.pumps.close()

    def _flush_answers(self) -> None:
        """Send the proxy's own answers now at the head of the line; a held
        exchange there holds every reply behind it, for good."""
        while self.pending and self.outgoing is None:
            head = self.pending[0]
            if head.held:
                self.to_client.flush()
                self._never.wait()  # as a hung server: nothing more comes back
            if head.forwarded or not isinstance(head, Exchange):
                return
            self.pending.popleft()
            self._answer(head)

    def _on_reply(self, event: Event) -> bool:
        client = self.pumps.client
        out = self.to_client
        if isinstance(event, Batch):  # replies to plain requests (the framer's limit)
            self._flush_answers()
            self._batch_answered(event)
            out.add(event.data)
            self._flush_answers()
            return True
        if isinstance(event, Head):
            self._flush_answers()
            exchange = self.outgoing
            if exchange is None and self.pending:
                exchange = self.outgoing = self.pending[0]
            if exchange is None or event.interim:
                # unsolicited (a 408 before a close), or a 100 Continue the
                # client may be waiting for to send its body: relayed
                if isinstance(exchange, _PlainRun):
                    self.outgoing = None  # its final reply is still to come
                out.add(event.data)
                return True
            if isinstance(exchange, _PlainRun):
                out.add(event.data)
                return True
            exchange.record.reply = event.info.summary
            fault = exchange.fault
            if fault is None:
                out.flush()
                return run_over(
                    exchange.decision.handlers, event.data, self.pumps.backend, client, False
                )
            if fault.close_before_reply:
                exchange.done("", "aborted")
                return False
            if fault.delay_reply:
                out.flush()
                gevent.sleep(fault.delay_reply)
            if fault.answer is None:  # else the backend acted; its reply is replaced at its end
                out.add(event.data)
            return True
        if isinstance(event, (Part, End)):
            exchange = self.outgoing
            if exchange is None:
                out.add(event.data)
                return True
            if isinstance(exchange, _PlainRun):
                out.add(event.data)
                if isinstance(event, End):
                    self._plain_reply_done(exchange)
                    self._flush_answers()
                return True
            keep = True
            if exchange.fault is None:
                if event.data:
                    out.flush()
                    keep = run_over(
                        exchange.decision.handlers, event.data, self.pumps.backend, client, False
                    )
            elif exchange.fault.answer is None:
                out.add(event.data)
            if isinstance(event, End) and exchange.record.reply is not None:
                self._finish_reply(exchange)
            return keep
        if isinstance(event, Switched):
            self._plain(f"backend side: {event.reason}")
        out.add(event.data)
        return True

    def _finish_reply(self, exchange: Exchange) -> None:
        if exchange.fault is None:
            _drain(exchange.decision.handlers, self.pumps)
        if exchange.fault is not None and exchange.fault.answer is not None:
            self._answer(exchange)  # after=True: the backend acted, the client gets the error
        else:
            exchange.done(exchange.record.reply or "", "relayed")
        if self.pending and self.pending[0] is exchange:
            self.pending.popleft()
        self.outgoing = None
        self._flush_answers()

    def _plain(self, reason: str) -> None:
        record = self.pumps.record
        if record.plain is None:
            record.plain = reason


#: What a handshake message gets: relayed, outside the rules.
_NO_DECISION = Decision(("dummy",), (), "handshake")


def _relays_all(plan: Plan) -> bool:
    """Whether ``plan`` relays every unit untouched: no rule, and a behavior
    with nothing to draw whose handlers all take ``dummy``'s exchange fault."""
    fixed = plan.fixed
    return (
        not plan.bound_rules
        and fixed is not None
        and all(type(h).exchange_fault is Dummy.exchange_fault for h in fixed.handlers)
    )


def _records_wanted(host: ExchangeHost) -> bool:
    """Whether anyone reads the exchange records: the proxy keeps them (the
    fixtures, the control API) or hands them on (``on_exchange``).

    """
    return host.wants_exchanges


def _named_by_a_rule(plan: Plan, info: MessageInfo) -> bool:
    """A handshake message (Redis ``AUTH``) is a unit only when a rule matches it."""
    return any(b.matcher is not None and b.matcher(info) for b in plan.bound_rules)


def _summary(reply: bytes) -> str:
    """A short summary of a reply the protocol made up (``-EXECABORT``)."""
    return reply.split(b"\r\n", 1)[0].split(b" ", 1)[0].decode("latin-1")[:40]


def _fault_of(handlers: tuple[BaseHandler, ...]) -> ExchangeFault | None:
    """One fault for a chain: each handler's part, laid over the previous.

    ``None`` when a handler of the chain knows nothing of exchanges: then
    every handler runs over the exchange's bytes, as toxics on a stream.
    """
    parts = []
    for handler in handlers:
        part = handler.exchange_fault()
        if part is None:
            return None
        parts.append(part)
    if len(parts) == 1:
        return parts[0]
    merged = _RELAY
    for part in parts:
        merged = ExchangeFault(
            answer=part.answer if part.answer is not None else merged.answer,
            after=part.after or merged.after,
            hold=part.hold or merged.hold,
            close_at_request=part.close_at_request or merged.close_at_request,
            close_before_reply=part.close_before_reply or merged.close_before_reply,
            delay_request=merged.delay_request + part.delay_request,
            delay_reply=merged.delay_reply + part.delay_reply,
        )
    return merged


def _drain(handlers: tuple[BaseHandler, ...], connection: ConnectionView) -> None:
    """Wait until what the handlers hold back (latency's queue) went out, so
    the next exchange's bytes cannot overtake this one's."""
    for handler in handlers:
        wait_delivered(handler, connection)
