"""Chains of handlers: each handler's output is the next one's input.

A ``Chain`` runs the handlers a unit got, in order (``_Pipe`` into
``_Feed``), so delays and slices compose as toxiproxy's toxics do. Pure
plumbing around handler calls: the pumps that decide when to call live in
``connection.py``.
"""

from __future__ import annotations

from typing import Any

from pytest_vaurien.engine.endpoint import Endpoint
from pytest_vaurien.handlers.base import BaseHandler

__all__ = ["Chain", "is_transparent", "run_over"]


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


def is_transparent(handler_class: type[BaseHandler]) -> bool:
    """A handler that overrides neither ``__call__`` nor ``_get_data`` (``dummy``)."""
    return (
        handler_class.__call__ is BaseHandler.__call__
        and handler_class._get_data is BaseHandler._get_data
    )


class Chain:
    """The handlers one connection drew, ready to be called per direction."""

    def __init__(
        self, handlers: tuple[BaseHandler, ...], client: Endpoint, backend: Endpoint
    ) -> None:
        self.handlers = handlers
        #: Every handler relays bytes untouched: the relay may move them itself.
        self.transparent = all(is_transparent(type(handler)) for handler in handlers)
        self._ends = {True: (client, backend), False: (backend, client)}
        self._directions: dict[bool, list[_Stage]] = {}

    @staticmethod
    def _stages(
        handlers: tuple[BaseHandler, ...], source: Endpoint, dest: Endpoint, to_backend: bool
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


def run_over(
    handlers: tuple[BaseHandler, ...],
    data: bytes,
    source: Endpoint,
    dest: Endpoint,
    to_backend: bool,
) -> bool:
    """Run ``handlers`` over ``data`` (one exchange's bytes, one direction) into ``dest``.

    Under a protocol, a handler that knows nothing of exchanges acts on each
    exchange's bytes as on a stream. Falsy: a handler ended the connection.
    """
    feed = _Feed(source)
    feed.buffer += data
    stages = Chain._stages(handlers, source, dest, to_backend)
    stages[0].source = feed
    while feed.buffer:
        before = len(feed.buffer)
        if not stages[0].run() or any(stage.ended for stage in stages[1:]):
            return False
        if len(feed.buffer) == before:
            break  # the handler read nothing: it keeps the rest
    return True
