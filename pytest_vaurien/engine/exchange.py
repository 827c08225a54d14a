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
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import gevent
import gevent.event
from gevent import GreenletExit

from pytest_vaurien.engine.chain import run_over
from pytest_vaurien.engine.endpoint import Endpoint
from pytest_vaurien.handlers.base import CONNECTION_RANDOM, BaseHandler
from pytest_vaurien.handlers.context import ConnectionView, ExchangeFault
from pytest_vaurien.handlers.streams import wait_delivered
from pytest_vaurien.plan import Decision, Plan, Unit
from pytest_vaurien.protocols.base import (
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
_RELAY = ExchangeFault()


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

    def keep_exchange(self, record: ExchangeRecord) -> None:
        """Keep ``record`` with the proxy's exchanges."""
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
            record.outcome = outcome
            record.duration = time.monotonic() - self.started


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


class ExchangeRelay:
    """Both directions of one connection, cut into exchanges by ``wire``."""

    def __init__(self, host: ExchangeHost, pumps: Pumps, wire: WireProtocol) -> None:
        self.host = host
        self.pumps = pumps
        self.wire = wire
        self.requests = wire.request_framer()
        self.replies = wire.response_framer()
        #: Exchanges awaiting their reply, in request order.
        self.pending: deque[Exchange] = deque()
        #: The exchange whose request is coming in, and whose reply is going out.
        self.incoming: Exchange | None = None
        self.outgoing: Exchange | None = None
        self.per_connection: dict[int, int] = {}
        self._never = gevent.event.Event()
        self.to_backend = _Outbox(pumps.backend)
        self.to_client = _Outbox(pumps.client)

    # -- the pumps ---------------------------------------------------------

    def upstream(self) -> None:
        """Client to backend: frame requests, decide each, forward or answer."""
        self._pump(True, self.pumps.client, self.requests.feed, self._on_request)

    def downstream(self) -> None:
        """Backend to client: frame replies, pair each with its request."""
        self._pump(False, self.pumps.backend, self.replies.feed, self._on_reply)

    def _pump(
        self,
        to_backend: bool,
        source: Endpoint,
        feed: Callable[[bytes], list[Event]],
        act: Callable[[Event], bool],
    ) -> None:
        outbox = self.to_backend if to_backend else self.to_client
        CONNECTION_RANDOM.set((self.pumps, "up" if to_backend else "down"))
        size = self.host.read_size
        outcome = "error"
        hub = gevent.get_hub()
        watcher = hub.loop.io(source.fileno(), 1)
        try:
            while True:
                if not to_backend:
                    self._flush_answers()
                if not source.pending:
                    # wait until readable, then read: a read tried first would
                    # mostly fail (a request waits for its reply) and cost a call
                    hub.wait(watcher)
                data = source.recv(size)
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
        ordinal = host.next_ordinal()
        unit = Unit(self.pumps.record.index, ordinal, time.monotonic() - host.started, request=info)
        decision = plan.decide(unit, lambda: self.pumps.random("draw"), self.per_connection)
        record = ExchangeRecord(
            connection=self.pumps.record.index,
            ordinal=ordinal,
            request=info.summary,
            by=decision.by,
            fault=decision.chain,
        )
        exchange = Exchange(info, decision, record)
        exchange.fault = _fault_of(decision.handlers)
        record.injected = exchange.fault is None or exchange.fault != _RELAY
        host.keep_exchange(record)
        return exchange

    def _on_request(self, event: Event) -> bool:
        backend = self.pumps.backend
        out = self.to_backend
        if isinstance(event, Head):
            exchange = self.incoming = self._begin(event.info)
            fault = exchange.fault
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
                exchange.forwarded = False
                self._prepare_answer(exchange)
                self._answer_or_queue(exchange)
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
            self._expect(exchange)
            out.add(event.data)
            return True
        if isinstance(event, (Part, End)):
            current = self.incoming
            if isinstance(event, End):
                self.incoming = None
            if current is None or not current.forwarded:
                return True  # a request the backend never sees: its body is dropped
            if current.fault is None:
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

    def _expect(self, exchange: Exchange) -> None:
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
        self.to_client.add(exchange.synthetic)
        self.to_client.flush()
        exchange.done(exchange.synthetic_summary, "answered")

    def _flush_answers(self) -> None:
        """Send the proxy's own answers now at the head of the line; a held
        exchange there holds every reply behind it, for good."""
        while self.pending and self.outgoing is None:
            head = self.pending[0]
            if head.held:
                self.to_client.flush()
                self._never.wait()  # as a hung server: nothing more comes back
            if head.forwarded:
                return
            self.pending.popleft()
            self._answer(head)

    def _on_reply(self, event: Event) -> bool:
        client = self.pumps.client
        out = self.to_client
        if isinstance(event, Head):
            self._flush_answers()
            exchange = self.outgoing
            if exchange is None and self.pending:
                exchange = self.outgoing = self.pending[0]
            if exchange is None or event.interim:
                # unsolicited (a 408 before a close), or a 100 Continue the
                # client may be waiting for to send its body: relayed
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
