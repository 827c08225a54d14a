"""Redis pipelines framed in one pass (``Batch``), and the plain path through the proxy.

The batch patterns must frame exactly what the parser frames, over every
split of the stream; and through a proxy that keeps no records at
``100:dummy``, a change of plan between two chunks, or a fault among plain
exchanges, must reach the right commands and pair every reply in order.
"""

from __future__ import annotations

import itertools
import socket
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_vaurien import Proxy, Rule
from pytest_vaurien.protocols.base import Batch, End, Event, Head, MessageInfo, Part
from pytest_vaurien.protocols.redis import RedisRequestFramer, RedisResponseFramer
from pytest_vaurien.protocols.redis_batch import SPECIAL
from pytest_vaurien.protocols.redis_batch import commands as command_span


def command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


commands = st.one_of(
    st.builds(lambda k, v: command(b"SET", k, v), st.binary(max_size=8), st.binary(max_size=300)),
    st.builds(lambda k: command(b"GET", k), st.binary(max_size=20)),
    st.builds(lambda k: command(b"get", k), st.sampled_from([b"a\r\n*1\r\n$4", b"*", b"$3\r\n"])),
    st.sampled_from(
        [
            command(b"MULTI"),
            command(b"exec"),
            command(b"AUTH", b"pw"),
            command(b"SELECT", b"1"),
            command(b"CLIENT", b"SETNAME", b"x"),
            command(b"PING"),
            command(b"MSET", b"a", b"1", b"b", b"2", b"c", b"3"),  # 7 arguments: parsed
            command(b"SET", b"big", b"v" * 700),  # over MAX_BULK: parsed
            b"PING\r\n",  # inline
            b"*0\r\n",
            b"*01\r\n$4\r\nPING\r\n",
        ]
    ),
)
cuts = st.lists(st.integers(0, 4000), max_size=8)


def pieces(data: bytes, at: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in at} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


def units(framer: RedisRequestFramer | RedisResponseFramer, chunks: list[bytes]) -> list[int]:
    """Where each message ends in the stream, a Batch's messages all at its end."""
    ends: list[int] = []
    offset = 0
    events: list[Event] = []
    for chunk in chunks:
        events += framer.feed(chunk)
    for event in events:
        offset += len(event.data)
        if isinstance(event, Batch):
            ends += [offset] * event.count
        elif isinstance(event, End):
            ends.append(offset)
    return ends


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pipeline=st.lists(commands, max_size=40), at=cuts)
def test_batched_commands_are_the_commands_the_parser_frames(
    pipeline: list[bytes], at: list[int]
) -> None:
    data = b"".join(pipeline)
    slow = RedisRequestFramer()
    emitted = b"".join(e.data for e in slow.feed(data))
    expected = units(RedisRequestFramer(), [data])
    fast = RedisRequestFramer()
    fast.batch = True
    events = []
    for chunk in pieces(data, at):
        events += fast.feed(chunk)
    # the same bytes leave (a trailing "*0" waits for the next command, as it did)
    assert b"".join(e.data for e in events) == emitted
    got: list[int] = []
    offset = 0
    for event in events:
        offset += len(event.data)
        if isinstance(event, Batch):
            got += [offset] * event.count
            # a batch holds no command that needs its own event
            assert not any(
                name in event.data.upper()
                for name in (b"MULTI\r\n", b"EXEC\r\n", b"AUTH\r\n", b"SELECT\r\n", b"CLIENT\r\n")
            )
        elif isinstance(event, End):
            got.append(offset)
    # as many commands, each batch ending where its last command ends
    assert len(got) == len(expected)
    assert set(got) <= set(expected)
    heads = [e.info.fields["command"] for e in events if isinstance(e, Head)]
    assert all(
        h in ("MULTI", "EXEC", "AUTH", "SELECT", "CLIENT", "PING", "MSET", "SET", "GET")
        for h in heads
    )


@pytest.mark.parametrize("name", [*SPECIAL, *(n.lower() for n in SPECIAL)])
def test_no_special_command_is_batched_whatever_its_case(name: str) -> None:
    findall = command_span().findall
    special = name.encode()
    assert findall(command(special)) == []
    assert findall(command(special, b"arg")) == []
    # an ordinary command of the same length, or with that name as an argument
    ordinary = b"X" + special[1:]
    assert findall(command(ordinary)) == [command(ordinary)]
    assert findall(command(b"SET", special, special)) == [command(b"SET", special, special)]


replies = st.one_of(
    st.sampled_from(
        [
            b"+OK\r\n",
            b"-ERR no\r\n",
            b":12\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"_\r\n",
            b"*0\r\n",
            b"*2\r\n$1\r\na\r\n:1\r\n",
            b"*1\r\n*1\r\n:1\r\n",
            b"%1\r\n+a\r\n+b\r\n",
            b"$300\r\n" + b"x" * 300 + b"\r\n",
            b"+O\rK\r\n",
            b"|1\r\n+a\r\n+b\r\n+OK\r\n",
        ]
    ),
    st.builds(lambda v: b"$%d\r\n%s\r\n" % (len(v), v), st.binary(max_size=80)),
)


def _fed(stream: list[bytes]) -> list[Event]:
    framer = RedisResponseFramer()
    for _ in stream:
        framer.expect(MessageInfo("GET", {"command": "GET"}))
    return framer.feed(b"".join(stream))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stream=st.lists(replies, max_size=40),
    at=cuts,
    plain=st.integers(0, 40),
    limit=st.integers(0, 45),
)
def test_batched_replies_are_the_replies_the_parser_frames(
    stream: list[bytes], at: list[int], plain: int, limit: int
) -> None:
    data = b"".join(stream)
    emitted = b"".join(e.data for e in _fed(stream))
    others = [MessageInfo("GET", {"command": "GET"})] * (len(stream) - min(plain, len(stream)))
    slow = RedisResponseFramer()
    for info in [MessageInfo("GET", {"command": "GET"})] * len(stream):
        slow.expect(info)
    expected = units(slow, [data])
    fast = RedisResponseFramer()
    fast.expect_plain(min(plain, len(stream))) if plain and stream else None
    for info in others:
        fast.expect(info)
    fast.batch_limit = limit
    events: list[Event] = []
    for chunk in pieces(data, at):
        events += fast.feed(chunk)
    assert b"".join(e.data for e in events) == emitted
    got: list[int] = []
    offset = 0
    batched = 0
    for event in events:
        offset += len(event.data)
        if isinstance(event, Batch):
            got += [offset] * event.count
            batched += event.count
        elif isinstance(event, End):
            got.append(offset)
    assert batched <= min(limit, plain)
    assert len(got) == len(expected)
    assert set(got) <= set(expected)


# -- through the proxy: no records, 100:dummy --------------------------------------


class HeldBackend:
    """A Redis-like backend answering ``+OK`` to every multibulk command, but
    only once released: replies to several chunks then arrive together."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.release = threading.Event()
        self.received = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def distant(self) -> str:
        return f"127.0.0.1:{self.listener.getsockname()[1]}"

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            framer = RedisRequestFramer()
            count = 0
            conn.settimeout(0.05)
            while True:
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    data = None
                if data == b"":
                    return
                if data:
                    self.received += data
                    count += sum(isinstance(e, End) for e in framer.feed(data))
                if self.release.is_set() and count:
                    conn.sendall(b"".join(b":%d\r\n" % i for i in range(count)))
                    count = 0


def read_replies(sock: socket.socket, count: int) -> list[bytes]:
    framer = RedisResponseFramer()
    for _ in range(count):
        framer.expect(MessageInfo("X", {}))
    got: list[bytes] = []
    current = b""
    while len(got) < count:
        data = sock.recv(65536)
        assert data, f"closed after {len(got)} replies"
        for event in framer.feed(data):
            if isinstance(event, (Head, Part)):
                current += event.data
            elif isinstance(event, End):
                got.append(current + event.data)
                current = b""
    return got


@pytest.fixture
def held() -> Iterator[HeldBackend]:
    backend = HeldBackend()
    yield backend
    backend.listener.close()


def test_a_fault_between_two_plain_runs_is_answered_in_its_place(held: HeldBackend) -> None:
    pipeline = b"".join(command(b"INCR", b"k%d" % i) for i in range(100))
    with (
        Proxy(held.distant, protocol="redis", keep_records=False) as proxy,
        socket.create_connection(proxy.address, timeout=5) as sock,
    ):
        sock.sendall(pipeline)  # batched: one plain run of 100
        wait = threading.Event()
        while len(held.received) < len(pipeline):
            wait.wait(0.01)
        # a change of plan between two chunks: command 37 of the next one
        proxy.set_rules([Rule("error", match="INCR", schedule="at:37", name="e")])
        sock.sendall(pipeline)
        while len(held.received) < 2 * len(pipeline) - len(command(b"INCR", b"k36")):
            wait.wait(0.01)
        proxy.set_rules([])  # and back: the third chunk is plain again
        sock.sendall(pipeline)
        while len(held.received) < 3 * len(pipeline) - len(command(b"INCR", b"k36")):
            wait.wait(0.01)
        held.release.set()
        got = read_replies(sock, 300)
    assert got[:136] == [b":%d\r\n" % i for i in range(136)]
    assert got[136] == b"-ERR injected by vaurien\r\n"
    assert all(reply.startswith(b":") for reply in got[137:])
    assert len(got) == 300
    # the backend never saw the faulted command
    assert held.received.count(b"INCR") == 299


def test_units_are_counted_on_the_plain_path(held: HeldBackend) -> None:
    pipeline = b"".join(command(b"INCR", b"k%d" % i) for i in range(50))
    with Proxy(held.distant, protocol="redis", keep_records=False) as proxy:
        held.release.set()
        with socket.create_connection(proxy.address, timeout=5) as sock:
            sock.sendall(pipeline + command(b"AUTH", b"pw") + pipeline)
            assert len(read_replies(sock, 101)) == 101
            rule = proxy.add_rule(Rule("error", schedule="first:1", name="next"))
            sock.sendall(command(b"INCR", b"x"))
            assert read_replies(sock, 1) == [b"-ERR injected by vaurien\r\n"]
        assert (rule.matched, rule.fired) == (1, 1)
        # 100 units (AUTH is the handshake), then the faulted one: 101
        assert proxy.next_ordinal() == 102
