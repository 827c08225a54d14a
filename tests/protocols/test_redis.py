"""Redis (RESP2, RESP3) framing, matching and error replies, without a socket.

Hand-written commands and replies first, event by event; then properties
over real redis-py traffic: however the bytes are split into feeds, the
framed messages are the same, and the events' bytes are exactly the bytes fed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_vaurien.errors import ConfigError
from pytest_vaurien.protocols import wire_protocol
from pytest_vaurien.protocols.base import End, Event, Head, MessageInfo, Opaque, Part, Switched
from pytest_vaurien.protocols.redis import (
    BIG,
    MAX_LINE,
    PROTOCOL,
    REDIS,
    SUBSTITUTE,
    RedisRequestFramer,
    RedisResponseFramer,
    check_error_options,
    error_reply,
    parse_match,
)
from tests.protocols.redis_traffic import CONNECTIONS


def feed(framer: RedisRequestFramer | RedisResponseFramer, *chunks: bytes) -> list[Event]:
    events: list[Event] = []
    for chunk in chunks:
        events += framer.feed(chunk)
    return events


def joined(events: Iterable[Event]) -> bytes:
    return b"".join(event.data for event in events)


def command(*args: bytes | str) -> bytes:
    words = [a.encode() if isinstance(a, str) else a for a in args]
    return b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)


def heads(events: Iterable[Event]) -> list[Head]:
    return [event for event in events if isinstance(event, Head)]


def messages(events: Iterable[Event], cut_short_with_switch: bool = False) -> list[tuple[Any, ...]]:
    """Events as whole messages, whatever the feeds: (summary, interim, bytes),
    and ("switched", reason, every byte after) - with ``cut_short_with_switch``,
    every byte of a message still open when the framer switched too."""
    out: list[tuple[Any, ...]] = []
    current: list[Any] | None = None
    for event in events:
        if isinstance(event, Head):
            current = [event.info.summary, event.interim, event.data]
        elif isinstance(event, (Part, End)):
            assert current is not None, event
            current[2] += event.data
            if isinstance(event, End):
                out.append(tuple(current))
                current = None
        elif isinstance(event, Switched):
            started = current[2] if cut_short_with_switch and current is not None else b""
            out.append(("switched", event.reason, started + event.data))
            current = None
        else:
            assert out, "Opaque before a switch"
            assert out[-1][0] == "switched", "Opaque before a switch"
            out[-1] = (*out[-1][:2], out[-1][2] + event.data)
    return out


def conversation(sent: bytes, answered: bytes, step: int | None = None) -> tuple[list, list]:
    """Frame a recorded connection as the engine does: every request expected in order."""
    requests, replies = PROTOCOL.request_framer(), PROTOCOL.response_framer()
    cut = [sent] if step is None else [sent[i : i + step] for i in range(0, len(sent), step)]
    up = feed(requests, *cut, b"")
    for head in heads(up):
        replies.expect(head.info)
    cut = (
        [answered]
        if step is None
        else [answered[i : i + step] for i in range(0, len(answered), step)]
    )
    down = feed(replies, *cut, b"")
    assert joined(up) == sent
    assert joined(down) == answered
    return up, down


# -- requests -------------------------------------------------------------------


def test_a_command_fed_whole_is_a_head_then_an_empty_end() -> None:
    data = command("SET", "user:1", "alice")
    events = feed(PROTOCOL.request_framer(), data)
    assert events == [Head(data, events[0].info), End(b"")]  # type: ignore[union-attr]
    info = events[0].info  # type: ignore[union-attr]
    assert info.summary == "SET"
    assert info.fields["command"] == "SET"
    assert info.fields["key"] == "user:1"
    assert info.fields["args"] == (b"user:1", b"alice")
    assert "handshake" not in info.fields


def test_pipelined_and_inline_commands_in_one_feed() -> None:
    data = command("set", "a", "1") + b"PING\r\nget  b\n" + command("INCR", "c")
    events = feed(PROTOCOL.request_framer(), data)
    assert [h.info.summary for h in heads(events)] == ["SET", "PING", "GET", "INCR"]
    assert [h.info.fields["key"] for h in heads(events)] == ["a", None, "b", "c"]
    assert joined(events) == data


def test_empty_lines_and_empty_arrays_go_with_the_next_command() -> None:
    data = b"\r\n\n*0\r\n*-1\r\n" + command("GET", "k")
    events = feed(PROTOCOL.request_framer(), data)
    assert len(heads(events)) == 1
    assert events[0].data == data


@pytest.mark.parametrize(
    ("args", "summary", "key"),
    [
        (("GET", "k"), "GET", "k"),
        (("ping",), "PING", None),
        (("EVAL", "return 1", "2", "k1", "k2"), "EVAL", "k1"),
        (("EVALSHA", "abc", "0"), "EVALSHA", None),
        (("XREAD", "COUNT", "2", "streams", "s1", "0"), "XREAD", "s1"),
        (("XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">"), "XREADGROUP", "s"),
        (("OBJECT", "encoding", "k"), "OBJECT ENCODING", "k"),
        (("CLIENT", "setname", "me"), "CLIENT SETNAME", None),
        (("ZUNION", "2", "a", "b"), "ZUNION", "a"),
        (("BLMPOP", "0", "1", "l", "LEFT"), "BLMPOP", "l"),
        (("MIGRATE", "h", "6379", "k", "0", "10"), "MIGRATE", "k"),
        (("BITOP", "AND", "dest", "a"), "BITOP", "dest"),
        (("JSON.SET", "doc", "$", "{}"), "JSON.SET", "doc"),
        (("PUBLISH", "news", "hi"), "PUBLISH", None),
        ((b"SET", b"\xff\x00", b"v"), "SET", "\xff\x00"),
    ],
)
def test_summary_and_first_key(args: tuple[str, ...], summary: str, key: str | None) -> None:
    (head,) = heads(feed(PROTOCOL.request_framer(), command(*args)))
    assert (head.info.summary, head.info.fields["key"]) == (summary, key)


def test_the_handshake_is_marked_and_select_only_before_other_commands() -> None:
    data = (
        command("HELLO", "3")
        + command("AUTH", "u", "p")
        + command("CLIENT", "SETINFO", "LIB-NAME", "redis-py")
        + command("SELECT", "1")
        + command("CLIENT", "SETNAME", "x")
        + command("SELECT", "2")
        + command("AUTH", "p")
    )
    marked = [
        h.info.fields.get("handshake", False) for h in heads(feed(RedisRequestFramer(), data))
    ]
    assert marked == [True, True, True, True, False, False, True]


def test_a_command_the_proxy_rejects_inside_multi_turns_exec_into_discard() -> None:
    framer = RedisRequestFramer()
    _multi, rejected, _kept, exec_ = heads(
        feed(
            framer,
            command("MULTI") + command("SET", "a", "1") + command("INCR", "b") + command("EXEC"),
        )
    )
    assert "substitute" not in exec_.info.fields
    framer.answered(rejected.info)  # the engine answers after the whole feed was framed
    assert exec_.info.fields["substitute"] == SUBSTITUTE
    assert SUBSTITUTE[0] == command("DISCARD")
    assert SUBSTITUTE[1].startswith(b"-EXECABORT ")
    # the next transaction starts clean; one answered later still aborts its EXEC
    _multi, queued = heads(feed(framer, command("MULTI") + command("SET", "a", "2")))
    framer.answered(queued.info)
    (exec_,) = heads(feed(framer, command("EXEC")))
    assert exec_.info.fields["substitute"] == SUBSTITUTE
    (alone,) = heads(feed(framer, command("EXEC")))  # not in a transaction
    assert "substitute" not in alone.info.fields


def test_discard_ends_the_transaction_and_a_rejected_multi_opens_none() -> None:
    framer = RedisRequestFramer()
    _, queued, _ = heads(
        feed(framer, command("MULTI") + command("SET", "a", "1") + command("DISCARD"))
    )
    framer.answered(queued.info)
    (exec_,) = heads(feed(framer, command("EXEC")))
    assert "substitute" not in exec_.info.fields
    multi, queued, exec_ = heads(
        feed(framer, command("MULTI") + command("GET", "a") + command("EXEC"))
    )
    framer.answered(multi.info)  # the server never entered MULTI
    framer.answered(queued.info)
    assert "substitute" not in exec_.info.fields
    framer.answered(exec_.info)  # answering anything else changes nothing
    framer.answered(MessageInfo("PING", {"command": "PING"}))


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("SUBSCRIBE", "a", "b"), "Redis pub/sub"),
        (("psubscribe", "n*"), "Redis pub/sub"),
        (("SSUBSCRIBE", "s"), "Redis pub/sub"),
        (("MONITOR",), "Redis MONITOR"),
        (("PSYNC", "?", "-1"), "Redis replication"),
        (("CLIENT", "REPLY", "off"), "Redis CLIENT REPLY OFF"),
    ],
)
def test_a_switching_command_is_a_unit_then_the_stream_is_opaque(
    args: tuple[str, ...], reason: str
) -> None:
    framer = RedisRequestFramer()
    data = command(*args)
    events = feed(framer, data + b"PING\r\n", b"*1\r\n")
    assert events[:3] == [Head(data, events[0].info), End(b""), Switched(reason)]  # type: ignore[union-attr]
    assert events[3:] == [Opaque(b"PING\r\n"), Opaque(b"*1\r\n")]


def test_client_reply_on_switches_nothing() -> None:
    events = feed(RedisRequestFramer(), command("CLIENT", "REPLY", "ON") + b"PING\r\n")
    assert len(heads(events)) == 2


def test_a_big_command_leaves_its_head_before_its_end() -> None:
    value = b"v" * (BIG * 3)
    data = command("SET", "big", value) + command("GET", "big")
    framer = RedisRequestFramer()
    events = feed(framer, *[data[i : i + 4096] for i in range(0, len(data), 4096)])
    assert joined(events) == data
    first = events[0]
    assert isinstance(first, Head)
    assert first.info.fields["key"] == "big"
    assert len(first.data) < len(value)
    assert any(isinstance(e, Part) for e in events)
    assert [m[0] for m in messages(events)] == ["SET", "GET"]
    assert len(framer._pending) < 4096


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"*x\r\n", "bad multibulk length"),
        (b"*2\r\n:1\r\n", "expected '$' in a command"),
        (b"*1\r\n$-3\r\n", "bad bulk length"),
        (b"*1\r\n$" + b"9" * 30, "bad bulk length"),
        (b"*" + b"1" * 30, "bad multibulk length"),
        (b"GET " + b"k" * MAX_LINE, "inline command too long"),
        (b"\r\n" * (MAX_LINE // 2 + 1) + b"PING\r\n", "too many empty lines"),
        (b"*1\r\n$70000\r\n" + b"n" * 69000, "command name over 64 KiB"),
    ],
)
def test_what_cannot_be_framed_switches_with_no_byte_lost(data: bytes, reason: str) -> None:
    prefix = command("GET", "k")
    events = feed(RedisRequestFramer(), prefix + data, b"more")
    assert isinstance(events[0], Head)
    assert events[1] == End(b"")
    assert events[2] == Switched(reason, data)
    assert events[3:] == [Opaque(b"more")]


def test_a_client_closing_mid_command_leaves_no_byte_behind() -> None:
    events = feed(RedisRequestFramer(), command("GET", "k") + b"*2\r\n$3\r\nGE", b"")
    assert events[-1] == Switched("client closed mid-command", b"*2\r\n$3\r\nGE")
    assert feed(RedisRequestFramer(), b"PING\r\n", b"", b"") == [
        *heads(feed(RedisRequestFramer(), b"PING\r\n")),
        End(b""),
    ]


# -- replies --------------------------------------------------------------------

REPLIES = [
    (b"+OK\r\n", "+OK"),
    (b"-READONLY You can't write against a read only replica.\r\n", "-READONLY"),
    (b":42\r\n", ":42"),
    (b"$5\r\nhello\r\n", "$5"),
    (b"$0\r\n\r\n", "$0"),
    (b"$-1\r\n", "$-1"),
    (b"*-1\r\n", "*-1"),
    (b"*0\r\n", "*0"),
    (b"*3\r\n:1\r\n*2\r\n$1\r\na\r\n$-1\r\n*0\r\n", "*3"),
    (b"_\r\n", "_"),
    (b",3.14\r\n", ",3.14"),
    (b"#t\r\n", "#t"),
    (
        b"(3492890328409238509324850943850943825024385\r\n",
        "(3492890328409238509324850943850943825024385",
    ),
    (b"!21\r\nSYNTAX invalid syntax\r\n", "!21"),
    (b"=15\r\ntxt:Some string\r\n", "=15"),
    (b"%2\r\n+first\r\n:1\r\n+second\r\n%1\r\n+x\r\n~0\r\n", "%2"),
    (b"~2\r\n+a\r\n+b\r\n", "~2"),
    (b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*1\r\n:2\r\n", "*1"),
    (b"*1\r\n|1\r\n+ttl\r\n:3600\r\n$1\r\nv\r\n", "*1"),
    (b"|0\r\n:1\r\n", ":1"),
]


@pytest.mark.parametrize(("data", "summary"), REPLIES)
def test_every_resp_type_is_one_reply(data: bytes, summary: str) -> None:
    framer = RedisResponseFramer()
    framer.expect(MessageInfo("GET"))
    events = feed(framer, data)
    assert events == [Head(data, events[0].info), End(b"")]  # type: ignore[union-attr]
    assert events[0].info.summary == summary[:40]  # type: ignore[union-attr]
    split = RedisResponseFramer()
    assert messages(feed(split, *[data[i : i + 1] for i in range(len(data))])) == [
        (summary[:40], False, data)
    ]


def test_a_push_answers_no_command_unless_a_subscription_is_expected() -> None:
    framer = RedisResponseFramer()
    framer.expect(MessageInfo("GET", {"command": "GET"}))
    push = b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n"
    events = feed(framer, push + b"$1\r\nv\r\n")
    assert [(h.info.summary, h.interim) for h in heads(events)] == [(">2", True), ("$1", False)]
    (subscribe,) = heads(feed(RedisRequestFramer(), command("SUBSCRIBE", "news")))
    framer.expect(subscribe.info)
    confirm = b">3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"
    events = feed(framer, confirm + b">3\r\n$7\r\nmessage\r\n")
    assert events[:3] == [Head(confirm, events[0].info), End(b""), Switched("Redis pub/sub")]  # type: ignore[union-attr]
    assert events[3] == Opaque(b">3\r\n$7\r\nmessage\r\n")


def test_the_reply_to_a_subscribe_or_monitor_switches_after_it() -> None:
    requests = RedisRequestFramer()
    get, monitor = heads(feed(requests, command("GET", "a") + command("MONITOR")))
    replies = RedisResponseFramer()
    replies.expect(get.info)
    replies.expect(monitor.info)
    events = feed(replies, b'$-1\r\n+OK\r\n+1700000000.1 [0 127.0.0.1:5] "GET"\r\n')
    assert [m[0] for m in messages(events)] == ["$-1", "+OK", "switched"]
    assert messages(events)[-1][1:] == ("Redis MONITOR", b'+1700000000.1 [0 127.0.0.1:5] "GET"\r\n')


def test_client_reply_off_switches_the_replies_where_its_reply_would_be() -> None:
    requests = RedisRequestFramer()
    get, off = heads(feed(requests, command("GET", "a") + command("CLIENT", "REPLY", "OFF")))
    replies = RedisResponseFramer()
    replies.expect(get.info)
    replies.expect(off.info)
    events = feed(replies, b"$1\r\na\r\n", b":1\r\n")
    assert messages(events) == [
        ("$1", False, b"$1\r\na\r\n"),
        ("switched", "Redis CLIENT REPLY OFF", b":1\r\n"),
    ]


def test_a_big_reply_leaves_its_head_at_once_and_holds_nothing() -> None:
    value = b"x" * 300_000
    data = b"$%d\r\n%s\r\n" % (len(value), value)
    framer = RedisResponseFramer()
    events = feed(framer, *[data[i : i + 8192] for i in range(0, len(data), 8192)])
    assert events[0] == Head(data[:8192], events[0].info)  # type: ignore[union-attr]
    assert isinstance(events[-1], End)
    assert joined(events) == data
    assert not framer._pending


def test_deep_nesting_needs_no_recursion() -> None:
    depth = 200_000
    data = b"*1\r\n" * depth + b":1\r\n"
    assert messages(feed(RedisResponseFramer(), data)) == [("*1", False, data)]
    nested = b"*1\r\n*1\r\n$4\r\nPING\r\n"  # commands are flat: Redis refuses this
    assert messages(feed(RedisRequestFramer(), nested)) == [
        ("switched", "expected '$' in a command", nested)
    ]


def test_framing_is_linear_in_the_bytes_fed() -> None:
    """A million-element reply and a 200k-argument command fed in small chunks:
    reparsing from the start on each feed would take minutes."""
    reply = b"*1000000\r\n" + b":1\r\n" * 1_000_000
    big = command("MSET", *[f"k{i}" for i in range(200_000)])
    started = time.perf_counter()
    assert (
        len(
            messages(
                feed(
                    RedisResponseFramer(),
                    *[reply[i : i + 1000] for i in range(0, len(reply), 1000)],
                )
            )
        )
        == 1
    )
    assert (
        len(
            messages(
                feed(RedisRequestFramer(), *[big[i : i + 1000] for i in range(0, len(big), 1000)])
            )
        )
        == 1
    )
    assert time.perf_counter() - started < 20


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"?what\r\n", "not a RESP reply"),
        (b"$x\r\n", "not a RESP reply"),
        (b"*-2\r\n", "not a RESP reply"),
        (b"$?\r\n", "not a RESP reply"),
        (b"+" + b"a" * MAX_LINE, "reply line too long"),
    ],
)
def test_a_backend_speaking_otherwise_switches_with_no_byte_lost(data: bytes, reason: str) -> None:
    framer = RedisResponseFramer()
    events = feed(framer, b"+OK\r\n" + data, b"rest")
    assert events[2:] == [Switched(reason, data), Opaque(b"rest")]


def test_a_backend_closing_mid_reply_leaves_no_byte_behind() -> None:
    framer = RedisResponseFramer()
    events = feed(framer, b"*2\r\n:1\r\n", b"")
    assert joined(events) == b"*2\r\n:1\r\n"
    assert events[-1] == Switched("backend closed mid-reply", b"")
    assert feed(RedisResponseFramer(), b"+OK\r\n", b"")[-1] == End(b"")


# -- recorded traffic -------------------------------------------------------------


@pytest.mark.parametrize(("sent", "answered", "who"), CONNECTIONS, ids=[c[2] for c in CONNECTIONS])
def test_recorded_connections_pair_every_command_with_its_reply(
    sent: bytes, answered: bytes, who: str
) -> None:
    up, down = conversation(sent, answered)
    requests = [m for m in messages(up) if m[0] != "switched"]
    replies = [m for m in messages(down) if m[0] != "switched" and not m[1]]
    assert len(requests) == len(replies)
    assert (b"SUBSCRIBE" in sent) == any(isinstance(e, Switched) for e in up + down)
    summaries = {m[0] for m in requests}
    assert "CLIENT SETINFO" in summaries
    for step in (1, 3, 1000):
        assert messages(conversation(sent, answered, step)[0]) == messages(up)
        assert messages(conversation(sent, answered, step)[1]) == messages(down)


def test_recorded_resp3_traffic_has_its_types_and_pushes() -> None:
    kinds = set()
    pushes = 0
    for sent, answered, _ in CONNECTIONS:
        _, down = conversation(sent, answered)
        kinds |= {h.info.fields["type"] for h in heads(down)}
        pushes += sum(h.interim for h in heads(down))
    assert set("+-:$*_,#(=%~>|") <= kinds | {"|"}
    assert pushes >= 2


cut_points = st.lists(st.floats(0, 1), max_size=12)


def _split(data: bytes, cuts: list[float]) -> list[bytes]:
    points = sorted({int(c * len(data)) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    return [piece for piece in pieces if piece]  # b"" would be an EOF


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(index=st.integers(0, len(CONNECTIONS) - 1), cuts=cut_points, data=st.data())
def test_recorded_traffic_split_anyhow_frames_the_same(
    index: int, cuts: list[float], data: Any
) -> None:
    sent, answered, _ = CONNECTIONS[index]
    if len(sent) > 10_000:  # the big one: a window of it, from a command's start
        start = data.draw(st.sampled_from([0, sent.index(b"*3\r\n$3\r\nSET\r\n$3\r\nbig")]))
        sent = sent[start : start + 80_000]
    whole = feed(RedisRequestFramer(), sent)
    split = feed(RedisRequestFramer(), *_split(sent, cuts))
    assert joined(split) == sent
    assert messages(split) == messages(whole)
    infos = [h.info for h in heads(whole)]
    down_whole, down_split = RedisResponseFramer(), RedisResponseFramer()
    for info in infos:
        down_whole.expect(info)
        down_split.expect(info)
    cuts2 = data.draw(cut_points)
    a = feed(down_whole, answered)
    b = feed(down_split, *_split(answered, cuts2))
    assert joined(b) == answered
    assert messages(b) == messages(a)


@settings(max_examples=400, deadline=None)
@given(
    noise=st.binary(max_size=300),
    cuts=cut_points,
    prefix=st.sampled_from([b"", b"*", b"$", b"*2\r\n", b"|1\r\n", b">1\r\n"]),
)
def test_random_bytes_never_raise_and_lose_nothing(
    noise: bytes, cuts: list[float], prefix: bytes
) -> None:
    data = prefix + noise
    for framer in (RedisRequestFramer(), RedisResponseFramer()):
        events = feed(framer, *_split(data, cuts), b"")
        assert joined(events) == data
        assert sum(isinstance(e, Switched) for e in events) <= 1


resp_atoms = st.sampled_from(
    [b"*", b"$", b"%", b"|", b">", b"~", b"+", b"-", b":", b"_", b"#", b",", b"(", b"!", b"=",
     b"1", b"2", b"0", b"-1", b"\r\n", b"\n", b"\r", b"OK", b"SET", b"k", b" "]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(atoms=st.lists(resp_atoms, max_size=60), cuts=cut_points)
def test_near_resp_never_raises_and_frames_the_same_split_or_whole(
    atoms: list[bytes], cuts: list[float]
) -> None:
    data = b"".join(atoms)
    for make in (RedisRequestFramer, RedisResponseFramer):
        whole = feed(make(), data, b"")
        split = feed(make(), *_split(data, cuts), b"")
        assert joined(whole) == joined(split) == data
        assert settled(split) == settled(whole)


def settled(events: list[Event]) -> list[tuple[Any, ...]]:
    """:func:`messages`, a reply cut short by a switch counted with the switch.

    A reply that goes on in the next read leaves as it comes (its Head, then
    Parts: replies are not held whole), so of malformed bytes read in two
    pieces the first may have gone out as a reply's start before the second
    shows they are not RESP; read whole, they switch at once. Either way the
    same bytes pass, the same replies are whole and the same switch happens.
    """
    return messages(events, cut_short_with_switch=True)


# -- matching, errors, the module -------------------------------------------------


def info(*args: str) -> MessageInfo:
    (head,) = heads(feed(RedisRequestFramer(), command(*args)))
    return head.info


@pytest.mark.parametrize(
    ("match", "args", "expected"),
    [
        (None, ("GET", "a"), True),
        ("SET", ("set", "a", "1"), True),
        ("set", ("SET", "a", "1"), True),
        ("SET", ("GET", "a"), False),
        ("SET|incr", ("INCR", "n"), True),
        ("SET user:*", ("SET", "user:7", "x"), True),
        ("SET user:*", ("SET", "order:7", "x"), False),
        ("GET User:*", ("GET", "user:7"), False),
        ("PING *", ("PING",), False),
        ("CLIENT", ("CLIENT", "SETNAME", "me"), True),
        ({"command": "CLIENT SETNAME"}, ("CLIENT", "SETNAME", "me"), True),
        ({"command": "CLIENT SETNAME"}, ("CLIENT", "LIST"), False),
        ({"command": ["get", "MGET"], "key": "a?"}, ("MGET", "ab", "c"), True),
        ({"key": "a*"}, ("DEL", "b"), False),
        ({}, ("DEL", "b"), True),
        ("EVAL k*", ("EVAL", "return 1", "1", "k1"), True),
        ("JSON.SET", ("json.set", "doc", "$", "1"), True),
    ],
)
def test_matching(match: object, args: tuple[str, ...], expected: bool) -> None:
    assert parse_match(match, "rule")(info(*args)) is expected
    assert PROTOCOL.parse_match(match, "rule")(info(*args)) is expected


@pytest.mark.parametrize(
    ("match", "piece"),
    [
        ("", "empty"),
        ("SET a b", "3 words"),
        ("SET|", "not a Redis command name"),
        ("|GET", "not a Redis command name"),
        ("9SET", "not a Redis command name"),
        (42, "is a int"),
        ({"cmd": "SET"}, "unknown key(s) 'cmd'"),
        ({"command": 3}, "is not a command"),
        ({"command": []}, "is not a command"),
        ({"key": ""}, "is not a key glob"),
        ({"key": 5}, "is not a key glob"),
    ],
)
def test_a_bad_match_names_where_and_what(match: object, piece: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_match(match, "rules[0]")
    assert str(caught.value).startswith("rules[0]: ")
    assert piece in str(caught.value)


@pytest.mark.parametrize(
    ("options", "reply", "summary"),
    [
        ({}, b"-ERR injected by vaurien\r\n", "-ERR"),
        ({"reply": ""}, b"-ERR injected by vaurien\r\n", "-ERR"),
        (
            {"reply": "READONLY You can't write against a read only replica.", "status": 503},
            b"-READONLY You can't write against a read only replica.\r\n",
            "-READONLY",
        ),
        ({"reply": "-MOVED 3999 127.0.0.1:6381"}, b"-MOVED 3999 127.0.0.1:6381\r\n", "-MOVED"),
        ({"reply": "LOADING"}, b"-LOADING\r\n", "-LOADING"),
    ],
)
def test_error_replies(options: dict[str, Any], reply: bytes, summary: str) -> None:
    check_error_options(options, "rule")
    assert error_reply(options, info("SET", "a", "1")) == (reply, summary)
    assert PROTOCOL.error_reply(options, info("GET", "a")) == (reply, summary)


@pytest.mark.parametrize("reply", ["ERR a\r\nb", "x\n", "-", 3])
def test_a_bad_reply_option_names_where(reply: object) -> None:
    with pytest.raises(ConfigError, match=r"^rules\[1\]: reply="):
        PROTOCOL.check_error_options({"reply": reply}, "rules[1]")


def test_framers_are_fresh_and_the_protocol_is_registered() -> None:
    assert wire_protocol("redis") is PROTOCOL is REDIS
    assert PROTOCOL.name == "redis"
    assert PROTOCOL.request_framer() is not PROTOCOL.request_framer()
    assert PROTOCOL.response_framer() is not PROTOCOL.response_framer()


def test_the_module_loads_neither_gevent_nor_pytest() -> None:
    code = (
        "import sys, pytest_vaurien.protocols.redis as r; "
        "print(sorted(m for m in ('gevent', 'pytest', 'hypothesis') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
