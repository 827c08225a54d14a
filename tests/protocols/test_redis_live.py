"""Faults per Redis command, through the real proxy, a real redis-server and redis-py.

Each client test runs with hiredis and with redis-py's pure-Python parsers,
in RESP2 and RESP3: the proxy must frame what each of them sends and reads.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.connection import _HiredisParser, _RESP2Parser, _RESP3Parser
from redis.exceptions import (
    BusyLoadingError,
    ExecAbortError,
    ReadOnlyError,
    ResponseError,
)
from redis.maint_notifications import MaintNotificationsConfig
from redis.retry import Retry

from pytest_vaurien import Proxy, Rule
from tests.backends import Server
from tests.client import wait_until

CLIENTS = {
    "hiredis-resp2": (_HiredisParser, 2),
    "python-resp2": (_RESP2Parser, 2),
    "hiredis-resp3": (_HiredisParser, 3),
    "python-resp3": (_RESP3Parser, 3),
}
_prefixes = itertools.count()


@pytest.fixture(params=sorted(CLIENTS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def prefix() -> str:
    """Keys of one test, apart from every other test's on the shared server."""
    return f"t{next(_prefixes)}:"


@pytest.fixture
def direct(redis_server: Server) -> Iterator[redis.Redis]:
    """A client straight to the server: what really happened there."""
    client = redis.Redis(host=redis_server.host, port=redis_server.port, socket_timeout=5)
    yield client
    client.close()


_open: list[redis.Redis] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """Close every client a test made, even when it failed half-way."""
    yield
    while _open:
        _open.pop().close()


def connect(proxy: Proxy, kind: str = "hiredis-resp2", **options: object) -> redis.Redis:
    """A redis-py client through ``proxy``, with no retry (a retry would hide the fault)."""
    parser, protocol = CLIENTS[kind]
    host, port = proxy.address
    pool = redis.ConnectionPool(
        host=host,
        port=port,
        protocol=protocol,
        parser_class=parser,
        retry=Retry(NoBackoff(), 0),
        # redis-py 8 sends CLIENT MAINT_NOTIFICATIONS after a RESP3 handshake:
        # a unit, as every CLIENT call after the handshake; off, to count simply
        maint_notifications_config=MaintNotificationsConfig(enabled=False),
        **{"socket_timeout": 5, **options},  # type: ignore[arg-type]
    )
    client = redis.Redis.from_pool(pool)  # the pool is closed with the client
    _open.append(client)
    return client


def test_a_pipeline_gets_its_replies_in_order_and_a_faulted_command_answered_in_place(
    redis_server: Server, kind: str, prefix: str
) -> None:
    rules = [Rule("error", match=f"GET {prefix}k2", name="get2")]
    with Proxy(redis_server.distant, protocol="redis", rules=rules) as proxy:
        client = connect(proxy, kind)
        pipe = client.pipeline(transaction=False)
        for i in range(5):
            pipe.set(f"{prefix}k{i}", f"v{i}")
        for i in range(5):
            pipe.get(f"{prefix}k{i}")
        results = pipe.execute(raise_on_error=False)
        client.close()
        assert results[:5] == [True] * 5
        assert results[5:7] == [b"v0", b"v1"]
        assert isinstance(results[7], ResponseError)
        assert str(results[7]) == "injected by vaurien"
        assert results[8:] == [b"v3", b"v4"]
        rule = proxy.rule("get2")
        assert (rule.matched, rule.fired) == (1, 1)
        records = [(e.request, e.by, e.reply) for e in proxy.exchanges]
    assert records[:5] == [("SET", "draw", "+OK")] * 5
    assert records[5:] == [
        ("GET", "draw", "$2"),
        ("GET", "draw", "$2"),
        ("GET", "get2", "-ERR"),
        ("GET", "draw", "$2"),
        ("GET", "draw", "$2"),
    ]


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("READONLY You can't write against a read only replica.", ReadOnlyError),
        ("LOADING Redis is loading the dataset in memory", BusyLoadingError),
        ("ERR injected by vaurien", ResponseError),
        ("NOTREAL whatever", ResponseError),
    ],
)
def test_the_error_reply_becomes_redis_pys_exception(
    redis_server: Server, direct: redis.Redis, kind: str, prefix: str, reply: str, error: type
) -> None:
    rules = [Rule("error", reply=reply, match="SET", name="set")]
    with Proxy(redis_server.distant, protocol="redis", rules=rules) as proxy:
        client = connect(proxy, kind)
        with pytest.raises(error) as caught:
            client.set(f"{prefix}a", "1")
        assert type(caught.value) is error
        assert client.get(f"{prefix}a") is None  # the connection goes on
        client.close()
        assert [(e.request, e.reply) for e in proxy.exchanges] == [
            ("SET", "-" + reply.split()[0]),
            ("GET", "_" if CLIENTS[kind][1] == 3 else "$-1"),  # RESP3's null
        ]
    assert direct.get(f"{prefix}a") is None  # the SET never reached the server


def test_after_lets_the_server_act_and_the_client_is_told_it_failed(
    redis_server: Server, direct: redis.Redis, kind: str, prefix: str
) -> None:
    rules = [Rule("error", after=True, reply="READONLY replica", match="SET")]
    with Proxy(redis_server.distant, protocol="redis", rules=rules) as proxy:
        client = connect(proxy, kind)
        with pytest.raises(ReadOnlyError):
            client.set(f"{prefix}paid", "yes")
        assert client.get(f"{prefix}paid") == b"yes"
        client.close()
    assert direct.get(f"{prefix}paid") == b"yes"


def test_a_key_glob_picks_the_commands(
    redis_server: Server, direct: redis.Redis, prefix: str
) -> None:
    rules = [Rule("error", match=f"SET|DEL {prefix}user:*", name="users")]
    with Proxy(redis_server.distant, protocol="redis", rules=rules) as proxy:
        client = connect(proxy)
        client.set(f"{prefix}order:1", "x")
        with pytest.raises(ResponseError):
            client.set(f"{prefix}user:1", "x")
        with pytest.raises(ResponseError):
            client.delete(f"{prefix}user:1", f"{prefix}order:1")
        assert client.get(f"{prefix}user:1") is None
        client.close()
        rule = proxy.rule("users")
        assert (rule.matched, rule.fired) == (2, 2)
    assert direct.get(f"{prefix}order:1") == b"x"


def test_the_handshake_is_no_unit_unless_a_rule_names_it(redis_server: Server, kind: str) -> None:
    """redis-py sends HELLO (RESP3), CLIENT SETINFO twice and SELECT on connect."""
    rules = [Rule("dummy", match="HELLO", name="hello"), Rule("dummy", name="all")]
    with Proxy(redis_server.distant, protocol="redis", rules=rules) as proxy:
        client = connect(proxy, kind, db=1)
        client.ping()
        client.client_setname("me")  # after the handshake: a unit
        client.close()
        hello, every = proxy.rule("hello"), proxy.rule("all")
        resp3 = CLIENTS[kind][1] == 3
        assert hello.matched == int(resp3)
        assert every.matched == 2
        requests = [e.request for e in proxy.exchanges]
    assert requests == ["HELLO"] * resp3 + ["PING", "CLIENT SETNAME"]


def test_a_command_rejected_inside_multi_aborts_the_transaction_on_the_server(
    redis_server: Server, direct: redis.Redis, kind: str, prefix: str
) -> None:
    rules = [Rule("error", match="INCR|INCRBY", name="incr")]  # redis-py's incr() sends INCRBY
    with Proxy(redis_server.distant, protocol="redis", rules=rules) as proxy:
        client = connect(proxy, kind)
        pipe = client.pipeline(transaction=True)
        pipe.set(f"{prefix}a", "1")
        pipe.incr(f"{prefix}n")
        pipe.set(f"{prefix}b", "2")
        with pytest.raises((ExecAbortError, ResponseError)):
            pipe.execute()
        # the server left MULTI: the connection works on
        assert client.set(f"{prefix}c", "3") is True
        assert client.get(f"{prefix}c") == b"3"
        client.close()
        records = [(e.request, e.reply) for e in proxy.exchanges]
    assert records[:5] == [
        ("MULTI", "+OK"),
        ("SET", "+QUEUED"),
        ("INCRBY", "-ERR"),
        ("SET", "+QUEUED"),
        ("EXEC", "-EXECABORT"),
    ]
    assert direct.mget(f"{prefix}a", f"{prefix}n", f"{prefix}b") == [None, None, None]


def test_an_unfaulted_transaction_runs(
    redis_server: Server, direct: redis.Redis, prefix: str
) -> None:
    rules = [Rule("error", match="GET")]
    with Proxy(redis_server.distant, protocol="redis", rules=rules) as proxy:
        client = connect(proxy, "python-resp3")
        pipe = client.pipeline(transaction=True)
        pipe.set(f"{prefix}a", "1")
        pipe.incr(f"{prefix}a")
        assert pipe.execute() == [True, 2]
        client.close()
    assert direct.get(f"{prefix}a") == b"2"


def test_pub_sub_flows_through_and_the_connection_says_why_it_is_plain(
    redis_server: Server, direct: redis.Redis, kind: str, prefix: str
) -> None:
    rules = [Rule("dummy", name="all")]
    with Proxy(redis_server.distant, protocol="redis", rules=rules) as proxy:
        client = connect(proxy, kind)
        pubsub = client.pubsub()
        pubsub.subscribe(f"{prefix}news")
        confirm = pubsub.get_message(timeout=5)
        assert confirm is not None
        assert confirm["type"] == "subscribe"
        wait_until(lambda: direct.publish(f"{prefix}news", "hello") == 1, message="subscribed")
        message = pubsub.get_message(timeout=5)
        assert message is not None
        assert (message["type"], message["data"]) == ("message", b"hello")
        pubsub.close()
        client.close()
        assert proxy.rule("all").matched == 1  # SUBSCRIBE is still a unit
        wait_until(lambda: all(r.plain for r in proxy.connections), message="plain recorded")
        plain = [r.plain for r in proxy.connections]
    assert len(plain) == 1
    assert plain[0] is not None
    assert "Redis pub/sub" in plain[0]


def test_a_big_value_streams_through_intact(redis_server: Server, prefix: str) -> None:
    value = bytes(range(256)) * 8192  # 2 MiB
    rules = [Rule("error", match=f"GET {prefix}other")]
    with Proxy(redis_server.distant, protocol="redis", rules=rules) as proxy:
        client = connect(proxy, "python-resp2")
        assert client.set(f"{prefix}big", value) is True
        assert client.get(f"{prefix}big") == value
        with pytest.raises(ResponseError):
            client.get(f"{prefix}other")
        client.close()
        assert [e.reply for e in proxy.exchanges] == ["+OK", f"${len(value)}", "-ERR"]


def test_a_hang_holds_the_replies_behind_it(redis_server: Server, prefix: str) -> None:
    rules = [Rule("hang", match=f"GET {prefix}slow")]
    with Proxy(redis_server.distant, protocol="redis", rules=rules) as proxy:
        client = connect(proxy, "hiredis-resp2", socket_timeout=0.5)
        with pytest.raises(redis.TimeoutError):
            client.get(f"{prefix}slow")
        client.close()
        assert [(e.request, e.outcome) for e in proxy.exchanges] == [("GET", "held")]


def test_a_resp3_push_between_replies_ends_no_exchange(
    redis_server: Server, direct: redis.Redis, prefix: str
) -> None:
    """Client-side caching: the invalidation push comes before the next reply."""
    key = f"{prefix}cached".encode()
    with Proxy(redis_server.distant, protocol="redis") as proxy:
        with socket.create_connection(proxy.address, timeout=5) as sock:
            sock.sendall(b"HELLO 3\r\nCLIENT TRACKING on\r\nGET " + key + b"\r\n")
            got = b""
            while not got.endswith(b"+OK\r\n_\r\n"):
                got += sock.recv(65536)
            direct.set(key, "new")
            sock.sendall(b"PING\r\n")
            got = b""
            while not got.endswith(b"+PONG\r\n"):
                got += sock.recv(65536)
        assert got.startswith(b">2\r\n$10\r\ninvalidate\r\n")
        records = [(e.request, e.reply) for e in proxy.exchanges]
    assert records == [("CLIENT TRACKING", "+OK"), ("GET", "_"), ("PING", "+PONG")]
