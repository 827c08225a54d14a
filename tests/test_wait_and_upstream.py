"""``Proxy.wait`` and ``Proxy.set_upstream``: what the control API builds on."""

from __future__ import annotations

import socket
import threading

import pytest

from pytest_vaurien import ConfigError, Proxy, Rule
from tests.servers import EchoServer, roundtrip


def test_wait_for_connections_returns_once_they_arrived() -> None:
    with EchoServer() as server, Proxy(server.address) as proxy:
        clients = threading.Thread(target=lambda: [roundtrip(proxy.address) for _ in range(3)])
        clients.start()
        assert proxy.wait(connections=3, timeout=10) == {"connections": 3}
        clients.join()


def test_wait_for_a_rule_to_fire() -> None:
    with (
        EchoServer() as server,
        Proxy(server.address, rules=[Rule("abort", schedule="first:2", name="cut")]) as proxy,
    ):
        for _ in range(2):
            with socket.create_connection(proxy.address) as sock:
                sock.sendall(b"x")
                sock.settimeout(10)
                assert sock.recv(10) == b""
        counts = proxy.wait("cut", 2, timeout=10)
        assert counts == {"rule": "cut", "matched": 2, "fired": 2}


def test_wait_times_out_naming_the_counts() -> None:
    with EchoServer() as server, Proxy(server.address, rules=["hang; name=h"]) as proxy:
        with pytest.raises(
            TimeoutError, match=r"rule 'h' fired 0 times \(matched 0\), waited for 1"
        ):
            proxy.wait("h", timeout=0.05)
        with pytest.raises(TimeoutError, match="0 connections accepted, waited for 5"):
            proxy.wait(connections=5, timeout=0.05)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "nothing to wait for"),
        ({"rule": "h", "connections": 1}, "not both"),
        ({"rule": "h", "fired": -1}, r"fired=-1 is not valid"),
        ({"connections": "3"}, r"connections='3' is not valid"),
        ({"rule": "h", "timeout": float("nan")}, r"timeout=nan is not valid"),
    ],
)
def test_a_bad_goal_is_named(kwargs: dict[str, object], message: str) -> None:
    proxy = Proxy("127.0.0.1:9", rules=["hang; name=h"])
    with pytest.raises(ConfigError, match=message):
        proxy.wait(**kwargs)  # type: ignore[arg-type]


def test_wait_for_an_unknown_rule_names_the_known_ones() -> None:
    proxy = Proxy("127.0.0.1:9", rules=["hang; name=h"])
    with pytest.raises(KeyError, match="no rule named 'x'; known: h"):
        proxy.wait("x", timeout=1)


def test_set_upstream_sends_new_connections_to_the_new_backend() -> None:
    with EchoServer() as first, EchoServer() as second, Proxy(first.address) as proxy:
        held = socket.create_connection(proxy.address)
        held.sendall(b"a")
        assert held.recv(10) == b"a"
        proxy.set_upstream(f"127.0.0.1:{second.address[1]}")
        assert proxy.distant == f"127.0.0.1:{second.address[1]}"
        assert roundtrip(proxy.address) == b"ping"
        assert second.accepted == 1
        held.sendall(b"b")  # the open connection keeps its backend
        assert held.recv(10) == b"b"
        assert first.accepted == 1
        held.close()


def test_set_upstream_refuses_a_bad_address_and_keeps_the_old() -> None:
    proxy = Proxy("127.0.0.1:9")
    with pytest.raises(ConfigError, match="upstream: 'nowhere' has no port"):
        proxy.set_upstream("nowhere")
    assert proxy.distant == "127.0.0.1:9"
