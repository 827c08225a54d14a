"""memcache through the real proxy: pymemcache against a real memcached.

Each command is a unit: a rule on ``get`` fails the gets only, and a
``noreply`` set (pymemcache's default) is a unit too, its empty reply made up
by the framer so that the exchanges stay paired.
"""

from __future__ import annotations

import pytest

from pytest_vaurien import Proxy
from pytest_vaurien.rules import Rule

pymemcache = pytest.importorskip("pymemcache")
from pymemcache.client.base import Client  # noqa: E402
from pymemcache.exceptions import MemcacheClientError, MemcacheServerError  # noqa: E402


def client(proxy: Proxy) -> Client:
    return Client(proxy.address, timeout=5, connect_timeout=5)


def test_an_error_rule_on_get_fails_the_gets_only(memcached_server) -> None:
    rules = [Rule("error", match="get live:*", name="gets")]
    with Proxy(memcached_server.distant, protocol="memcache", rules=rules) as proxy:
        mc = client(proxy)
        assert mc.set("live:1", b"v", noreply=False) is True
        with pytest.raises(MemcacheServerError, match="injected by vaurien"):
            mc.get("live:1")
        assert mc.get_many(["other"]) == {}  # another key: relayed
        assert mc.incr("nope", 1, noreply=False) is None
        mc.close()
        rule = proxy.rule("gets")
        assert (rule.matched, rule.fired) == (1, 1)
        records = [(r.request, r.reply) for r in proxy.exchanges]
    assert records == [
        ("set live:1", "STORED"),
        ("get live:1", "SERVER_ERROR"),
        ("get other", "END"),
        ("incr nope", "NOT_FOUND"),
    ]


def test_a_noreply_set_is_a_unit_and_the_next_reply_stays_paired(memcached_server) -> None:
    rules = [Rule("dummy", match="set", name="sets")]
    with Proxy(memcached_server.distant, protocol="memcache", rules=rules) as proxy:
        mc = client(proxy)
        mc.set("live:nr", b"quiet")  # noreply by default in pymemcache
        assert mc.get("live:nr") == b"quiet"
        mc.close()
        assert proxy.rule("sets").matched == 1
        records = [(r.request, r.reply) for r in proxy.exchanges]
    assert records == [("set live:nr", "noreply"), ("get live:nr", "VALUE")]


def test_error_after_the_write_happened(memcached_server) -> None:
    rules = [Rule("error", match="set", after=True, schedule="first:1")]
    with Proxy(memcached_server.distant, protocol="memcache", rules=rules) as proxy:
        mc = client(proxy)
        with pytest.raises(MemcacheServerError):
            mc.set("live:after", b"written", noreply=False)
        assert mc.get("live:after") == b"written"  # the backend did store it
        mc.close()


def test_a_client_error_reply(memcached_server) -> None:
    rules = [Rule("error", match="delete", reply="CLIENT_ERROR injected")]
    with Proxy(memcached_server.distant, protocol="memcache", rules=rules) as proxy:
        mc = client(proxy)
        with pytest.raises(MemcacheClientError, match="injected"):
            mc.delete("live:x", noreply=False)
        assert mc.version()
        mc.close()


def test_meta_commands_and_stats_are_framed(memcached_server) -> None:
    rules = [Rule("dummy", match="mn|stats", name="meta")]
    with Proxy(memcached_server.distant, protocol="memcache", rules=rules) as proxy:
        mc = client(proxy)
        assert mc.stats()
        mc.close()
        import socket

        with socket.create_connection(proxy.address, timeout=5) as raw:
            raw.sendall(b"ms live:m 2\r\nhi\r\nmg live:m v\r\nmn\r\n")
            got = b""
            while not got.endswith(b"MN\r\n"):
                got += raw.recv(4096)
        assert got == b"HD\r\nVA 2\r\nhi\r\nMN\r\n"
        assert proxy.rule("meta").matched == 2


def test_an_error_on_a_get_after_a_noreply_set(memcached_server) -> None:
    rules = [Rule("error", match="get")]
    with Proxy(memcached_server.distant, protocol="memcache", rules=rules) as proxy:
        mc = Client(proxy.address, timeout=1, connect_timeout=5)
        mc.set("live:nr2", b"1")  # noreply: no reply comes from memcached
        try:
            with pytest.raises(MemcacheServerError):
                mc.get("live:nr2")
        finally:
            mc.close()
