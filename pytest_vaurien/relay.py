"""One accepted connection: connect, draw handlers, pump both ways, record.

Each direction has its own greenlet (a pump) that waits until its source side
is readable, then calls the handler chain in force. The connection's own
greenlet owns both sockets: pumps report how they ended and only it closes
sockets, so no greenlet ever waits on a descriptor another one closed.

A chain that does not touch the bytes (``dummy``) skips all that: the
connection's greenlet hands both directions to :mod:`pytest_vaurien.fastpath`
and pumps start only if a live behavior change reaches the connection.

Rules of the road (design.md):

* a handler returns truthy to keep going, falsy to end its direction;
* falsy after the source reached EOF is a half-close: the other side gets
  ``shutdown(SHUT_WR)`` and the opposite direction keeps flowing;
* falsy without EOF closes the whole connection.
"""

from __future__ import annotations

import contextvars
import errno
import os
import random
import socket
import struct
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
import gevent.event
import gevent.socket
from gevent import GreenletExit
from gevent.hub import Waiter

from pytest_vaurien.fastpath import Stream, raw_sockets
from pytest_vaurien.handlers.base import CONNECTION_RANDOM, BaseHandler
from pytest_vaurien.records import ConnectionRecord, Ending

if TYPE_CHECKING:
    from pytest_vaurien.proxy import Proxy, _BehaviorState

__all__ = ["Connection", "ProxyDown", "serve_connection"]


class ProxyDown(GreenletExit):  # type: ignore[misc]  # gevent ships no types
    """Kills a connection because the proxy was disabled (``Proxy.disable``)."""


_LINGER_RESET = struct.pack("ii", 1, 0)


class Endpoint:
    """One side's socket, as handlers see it: a gevent socket that counts.

    ``recv`` remembers EOF (so the relay can tell a half-close from a
    handler's decision to close) and ``send``/``sendall`` count the bytes
    that reached this side. Everything else is the gevent socket's.
    """

    __slots__ = ("connection", "eof", "is_client", "pending", "sock")

    def __init__(self, sock: gevent.socket.socket, connection: Connection, is_client: bool):
        self.sock = sock
        self.connection = connection
        self.is_client = is_client
        self.eof = False
        #: Bytes read but not yet handled (the fast path read them just as the
        #: behavior changed); the next ``recv`` returns them first.
        self.pending = b""

    def recv(self, size: int, *flags: int) -> bytes:
        if self.pending:
            data, self.pending = self.pending[:size], self.pending[size:]
            return data
        data = self.sock.recv(size, *flags)
        if not data:
            self.eof = True
        return data  # type: ignore[no-any-return]

    def sendall(self, data: bytes, *flags: int) -> None:
        self.sock.sendall(data, *flags)
        self._count(len(data))

    def send(self, data: bytes, *flags: int) -> int:
        sent: int = self.sock.send(data, *flags)
        self._count(sent)
        return sent

    def _count(self, size: int) -> None:
        record = self.connection.record
        if self.is_client:
            record.bytes_to_client += size
        else:
            record.bytes_to_backend += size

    def reset(self) -> None:
        """Close with an RST (``SO_LINGER`` 0): the peer sees ECONNRESET."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except OSError:
            pass
        self.sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


class _Feed:
    """The source a later handler of a chain reads: what the one before sent."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.buffer = bytearray()
        self.eof = False

    def recv(self, size: int, *flags: int) -> bytes:
        chunk = bytes(self.buffer[:size])
        del self.buffer[:size]
        return chunk

    def __getattr__(self, name: str) -> Any:
        return getattr(self.endpoint, name)


class _Pipe:
    """The destination of a handler that is not last in its chain.

    Sending into it runs the next handler at once with the data as its
    source, so delays and slices compose in order. Closing or shutting it
    down acts on the real socket of that side.
    """

    def __init__(self, endpoint: Endpoint, stage: _Stage) -> None:
        self.endpoint = endpoint
        self.stage = stage

    def sendall(self, data: bytes, *flags: int) -> None:
        feed = self.stage.source
        feed.buffer += data
        while feed.buffer and not self.stage.ended:
            before = len(feed.buffer)
            self.stage.run()
            if len(feed.buffer) == before:
                break  # the next handler did not read; it keeps the rest

    def send(self, data: bytes, *flags: int) -> int:
        self.sendall(data)
        return len(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.endpoint, name)


class _Stage:
    """One handler of a chain, in one direction."""

    def __init__(self, handler: BaseHandler, source: Any, dest: Any, to_backend: bool):
        self.handler = handler
        self.source = source
        self.dest = dest
        self.to_backend = to_backend
        self.ended = False

    def run(self) -> bool:
        if self.to_backend:
            keep = self.handler(self.source, self.dest, True)
        else:
            keep = self.handler(self.dest, self.source, False)
        if not keep:
            self.ended = True
        return bool(keep)


def _is_transparent(handler_class: type[BaseHandler]) -> bool:
    """A handler that overrides neither ``__call__`` nor ``_get_data`` (``dummy``)."""
    return (
        handler_class.__call__ is BaseHandler.__call__
        and handler_class._get_data is BaseHandler._get_data
    )


class Chain:
    """The handlers one connection drew, ready to be called per direction."""

    def __init__(self, handlers: list[BaseHandler], client: Endpoint, backend: Endpoint):
        self.handlers = handlers
        #: Every handler relays bytes untouched: the relay may move them itself.
        self.transparent = all(_is_transparent(type(handler)) for handler in handlers)
        self._ends = {True: (client, backend), False: (backend, client)}
        self._directions: dict[bool, list[_Stage]] = {}

    @staticmethod
    def _stages(
        handlers: list[BaseHandler], source: Endpoint, dest: Endpoint, to_backend: bool
    ) -> list[_Stage]:
        stages: list[_Stage] = []
        for handler in reversed(handlers):  # from the end: each stage feeds the next
            target: Any = _Pipe(dest, stages[0]) if stages else dest
            stages.insert(0, _Stage(handler, _Feed(source), target, to_backend))
        stages[0].source = source
        return stages

    def call(self, to_backend: bool) -> bool:
        """Run the chain for one readable chunk; falsy ends the direction."""
        stages = self._directions.get(to_backend)
        if stages is None:  # built on first use: the fast path never needs them
            source, dest = self._ends[to_backend]
            stages = self._directions[to_backend] = self._stages(
                self.handlers, source, dest, to_backend
            )
        keep = stages[0].run()
        ended = [stage for stage in stages[1:] if stage.ended]
        if not keep and stages[0].source.eof:
            # pass the EOF down the chain, so a later handler can act on it
            for stage in stages[1:]:
                if not stage.ended:
                    stage.source.eof = True
                    stage.run()
        return keep and not ended


class Connection:
    """One client connection and its backend, relayed by two pumps.

    Handlers reach it as ``client_sock.connection``: ``state`` keeps
    per-connection data, ``spawn`` runs a helper greenlet that dies with the
    connection, ``close`` and ``reset_client`` end it from any greenlet.
    """

    def __init__(
        self,
        proxy: Proxy,
        client_sock: gevent.socket.socket,
        backend_sock: gevent.socket.socket,
        record: ConnectionRecord,
    ) -> None:
        self.proxy = proxy
        self.record = record
        #: Free for handlers to keep per-connection state in, by handler name.
        self.state: dict[Any, Any] = {}
        self.client = Endpoint(client_sock, self, is_client=True)
        self.backend = Endpoint(backend_sock, self, is_client=False)
        self._behavior: _BehaviorState | None = None
        self._chain: Chain | None = None
        self._finished: dict[bool, str] = {}
        self._done = gevent.event.Event()
        self._helpers: list[gevent.Greenlet] = []
        self._randoms: dict[str, random.Random] = {}

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
            seed = f"{self.proxy.seed}:{self.record.index}:{stream}"
            source = self._randoms[stream] = random.Random(seed)
        return source

    def spawn(self, func: Callable[..., Any], *args: Any) -> gevent.Greenlet:
        """Run ``func`` in a greenlet killed when the connection ends.

        It inherits the caller's context, so ``BaseHandler.random`` draws
        from the same seeded source there.
        """
        helper = gevent.spawn(contextvars.copy_context().run, func, *args)
        self._helpers.append(helper)
        return helper

    def close(self, ending: Ending = Ending.HANDLER_CLOSED, error: str | None = None) -> None:
        """End the whole connection now (both sockets are closed)."""
        self.record.end(ending, error)
        self._done.set()

    def reset_client(self, reason: str) -> None:
        """Reset the client's connection (an RST: the client sees ECONNRESET)."""
        self.client.reset()
        self.close(Ending.HANDLER_RESET, reason)

    def chain(self) -> Chain:
        """The chain in force, drawn again if the proxy's behavior changed."""
        behavior = self.proxy._behavior_state
        if behavior is not self._behavior or self._chain is None:
            self._behavior = behavior
            names = behavior.behavior.choose(lambda: self.random("draw"))
            handlers = [behavior.handler(name) for name in names]
            for handler in handlers:
                handler.on_connection(self)
            self._chain = Chain(handlers, self.client, self.backend)
            self.record.handler = "+".join(names)
            self.record.handlers.append(self.record.handler)
            self.record.options = {
                name: handler.effective_options()
                for name, handler in zip(names, handlers, strict=True)
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
            while True:
                chain = self.chain()
                if chain.transparent:
                    if self._relay_untouched(to_backend):
                        continue  # the behavior changed: the next chunk is the new one's
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
            self._record_failure(error, to_backend)
        finally:
            if watcher is not None:
                watcher.close()
            self._finish(to_backend, outcome)

    def _untouched_streams(
        self, directions: tuple[bool, ...], on_end: Callable[[Stream, object], None]
    ) -> list[Stream] | None:
        """Streams for the fast path, or None if gevent's internals differ."""
        state = self._behavior
        proxy = self.proxy
        streams = []
        for to_backend in directions:
            source, dest = (
                (self.client, self.backend) if to_backend else (self.backend, self.client)
            )
            while source.pending:  # what a previous chain left unhandled goes first
                dest.sendall(source.recv(proxy.read_size))
            raw = raw_sockets(source.sock, dest.sock)
            if raw is None:  # pragma: no cover - other gevent internals
                return None
            streams.append(
                Stream(
                    source,
                    dest,
                    raw,
                    self.record,
                    proxy.read_size,
                    lambda: proxy._behavior_state is state,
                    on_end,
                )
            )
        return streams

    def _relay_untouched(self, to_backend: bool) -> bool:
        """One direction through the fast path; False at EOF, True when the
        behavior changed. Errors are raised."""
        waiter = Waiter()
        streams = self._untouched_streams((to_backend,), lambda _, result: waiter.switch(result))
        if streams is None:  # pragma: no cover - other gevent internals
            return self._relay_untouched_slowly(to_backend)
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

        True when the connection is done; False when the behavior changed
        and pumps must take over the directions still open.
        """
        waiter = Waiter()

        def on_end(stream: Stream, result: object) -> None:
            if result is False:  # EOF: pass the half-close on, go on with the other side
                self._finish(stream.to_backend, "eof")
                if self._done.is_set():
                    waiter.switch(True)
                return
            for other in streams or ():
                other.close()
            if isinstance(result, BaseException):
                self._record_failure(result, stream.to_backend)
                self._finish(stream.to_backend, "reset")
                waiter.switch(True)
            else:
                waiter.switch(False)

        streams = self._untouched_streams((True, False), on_end)
        if streams is None:  # pragma: no cover - other gevent internals
            return False
        for stream in streams:
            stream.start()
        try:
            return bool(waiter.get())
        finally:
            for stream in streams:
                stream.close()

    def _relay_untouched_slowly(self, to_backend: bool) -> bool:  # pragma: no cover
        """The fast path's semantics through the gevent socket API."""
        source, dest = (self.client, self.backend) if to_backend else (self.backend, self.client)
        state = self._behavior
        size = self.proxy.read_size
        while True:
            data = source.recv(size)
            if not data:
                return False
            if self.proxy._behavior_state is not state:
                source.pending = data + source.pending
                return True
            dest.sendall(data)

    def _record_failure(self, error: BaseException, to_backend: bool) -> None:
        if isinstance(error, OSError):
            side = "client" if to_backend else "backend"
            self.record.end(Ending.RESET, f"{side} side: {error.strerror or error}")
        else:
            lines = traceback.format_exception(type(error), error, error.__traceback__, limit=-4)
            self.record.end(Ending.ERROR, "".join(lines).strip())

    def _finish(self, to_backend: bool, outcome: str) -> None:
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

    def run(self) -> None:
        """Pump both ways until done; close both sockets on the way out."""
        pumps: list[gevent.Greenlet] = []
        try:
            # draw now, so that handlers see the connection from its start
            # (toxiproxy's timeout counts from there)
            CONNECTION_RANDOM.set((self, "draw"))
            if self.chain().transparent and self._relay_both_untouched():
                return  # done without a pump (the finally block closes)
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
        except Exception:
            self.record.end(Ending.ERROR, traceback.format_exc(limit=-4).strip())
        finally:
            gevent.killall(pumps + self._helpers, block=True, timeout=0.5)
            for endpoint in (self.client, self.backend):
                endpoint.sock.close()


def _connect(proxy: Proxy) -> gevent.socket.socket:
    """Connect to the distant, trying each address resolved at start in turn."""
    resolved = proxy.resolved_distant
    if not resolved:  # resolve now, through gevent's resolver
        return gevent.socket.create_connection(proxy.distant_address, timeout=proxy.connect_timeout)
    failure: OSError | None = None
    for family, sockaddr in resolved:
        try:
            return _connect_to(family, sockaddr, proxy.connect_timeout)
        except OSError as error:
            failure = error
    assert failure is not None
    raise failure


def _connect_to(family: int, sockaddr: Any, timeout: float) -> gevent.socket.socket:
    sock = gevent.socket.socket(family, socket.SOCK_STREAM)
    try:
        raw = getattr(sock, "_sock", None)
        result = raw.connect_ex(sockaddr) if raw is not None else errno.EINPROGRESS
        if result in (errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK):
            # not connected at once (a remote or busy backend): gevent waits,
            # bounded by the connect timeout
            sock.settimeout(timeout)
            sock.connect(sockaddr)
            sock.settimeout(None)
        elif result not in (0, errno.EISCONN):
            raise OSError(result, os.strerror(result))
    except BaseException:
        sock.close()
        raise
    return sock


def serve_connection(
    proxy: Proxy, client_sock: gevent.socket.socket, record: ConnectionRecord
) -> None:
    """Connect to the distant and relay; a refused connect resets the client."""
    try:
        backend_sock = _connect(proxy)
    except GreenletExit:
        record.end(Ending.PROXY_STOPPED)
        client_sock.close()
        raise
    except OSError as error:
        record.end(Ending.BACKEND_REFUSED, str(error.strerror or error))
        Endpoint(client_sock, None, True).reset()  # type: ignore[arg-type]
        return
    for sock in (client_sock, backend_sock):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
    Connection(proxy, client_sock, backend_sock, record).run()
