"""The exchange layer's fast path, in the loop's own callbacks: a handler that
draws at random while its unit is decided there draws from the connection's
own source for requests, so the same seed gives the same draws."""

from __future__ import annotations

import socket
from typing import ClassVar

from pytest_vaurien import BaseHandler, Proxy
from pytest_vaurien.handlers.base import CONNECTION_RANDOM
from pytest_vaurien.handlers.context import RELAY, ExchangeFault
from pytest_vaurien.registry import make_plugin_manager, registry_from_plugins
from tests.backends import Server


class Drawn(BaseHandler):
    """Relays every exchange, noting the random stream it would draw from and a draw."""

    name = "drawn"
    seen: ClassVar[list[tuple[str | None, float]]] = []

    def exchange_fault(self) -> ExchangeFault:
        current = CONNECTION_RANDOM.get()
        Drawn.seen.append((None if current is None else current[1], self.random.random()))
        return RELAY


def _draws(server: Server, seed: int) -> list[tuple[str | None, float]]:
    registry = registry_from_plugins(make_plugin_manager(load_entrypoints=False))
    registry.add(Drawn, "test")
    Drawn.seen = []
    with (
        Proxy(server.distant, "drawn", protocol="redis", registry=registry, seed=seed) as proxy,
        socket.create_connection(proxy.address, timeout=5) as sock,
    ):
        for _ in range(5):
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            assert sock.recv(100) == b"+PONG\r\n"
    return Drawn.seen


def test_a_unit_decided_in_a_callback_draws_from_the_connections_request_source(
    redis_server: Server,
) -> None:
    first = _draws(redis_server, seed=7)
    assert [stream for stream, _ in first] == ["up"] * 5
    assert _draws(redis_server, seed=7) == first
    assert _draws(redis_server, seed=8) != first
