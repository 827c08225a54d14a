"""memcached text-protocol framing, matching and error replies, without a socket.

Recorded traffic is framed command by command, then by properties: however
the same bytes are split into feeds, the framed messages are the same, and
the events' bytes are always exactly the bytes fed; random bytes never raise.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_vaurien.errors import ConfigError
from pytest_vaurien.protocols import wire_protocol
from pytest_vaurien.protocols.base import End, Event, Head, MessageInfo, Opaque, Part, Switched
from pytest_vaurien.protocols.memcache import (
    MAX_LINE,
    MEMCACHE,
    PROTOCOL,
    check_error_options,
    error_reply,
    parse_match,
)
from tests.protocols.memcache_traffic import RECORDED


def feed(framer: Any, *chunks: bytes) -> list[Event]:
    events: list[Event] = []
    for chunk in chunks:
        events += framer.feed(chunk)
    return events


def joined(events: Iterable[Event]) -> bytes:
    return b"".join(event.data for event in events)


def requests(*chunks: bytes) -> list[Event]:
    return feed(PROTOCOL.request_framer(), *chunks)


def infos(*chunks: bytes) -> list[MessageInfo]:
    return [e.info for e in requests(*chunks) if isinstance(e, Head)]


def replies(expected: Sequence[MessageInfo], *chunks: bytes) -> list[Event]:
    framer = PROTOCOL.response_framer()
    for request in expected:
        framer.expect(request)
    return feed(framer, *chunks)


def messages(events: Iterable[Event]) -> list[tuple[str, bytes]]:
    """Each message's summary and bytes, and each switch: what no split may change."""
    out: list[tuple[str, bytes]] = []
    summary, data = "", b""
    for event in events:
        if isinstance(event, Head):
            summary, data = event.info.summary, event.data
        elif isinstance(event, Part):
            data += event.data
        elif isinstance(event, End):
            out.append((summary, data + event.data))
        elif isinstance(event, Switched):
            out.append((f"switched: {event.reason}", b""))
    return out


def split(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in pairwise(points) if b > a]


CLIENT = b"".join(request for request, _ in RECORDED)
SERVER = b"".join(reply for _, reply in RECORDED)


# -- requests -------------------------------------------------------------------


def test_the_protocol_is_registered() -> None:
    assert wire_protocol("memcache") is PROTOCOL is MEMCACHE
    assert PROTOCOL.name == "memcache"


def test_a_set_is_its_line_then_its_data_block() -> None:
    raw = b"set user:1 5 0 5\r\nalice\r\n"
    assert requests(raw) == [
        Head(
            b"set user:1 5 0 5\r\n",
            MessageInfo(
                "set user:1",
                {"command": "set", "noreply": False, "keys": ("user:1",), "key": "user:1"},
            ),
        ),
        End(b"alice\r\n"),
    ]


def test_a_data_block_is_counted_not_scanned() -> None:
    # the data holds a line that looks like a command: it is data all the same
    raw = b"set k 0 0 12\r\nget x\r\nEND\r\n\r\nmn\r\n"
    events = requests(raw)
    assert [type(e) for e in events] == [Head, End, Head, End]
    assert events[1] == End(b"get x\r\nEND\r\n\r\n")
    assert [e.info.summary for e in events if isinstance(e, Head)] == ["set k", "mn"]
    assert [type(e) for e in requests(raw[:20], raw[20:])] == [Head, Part, End, Head, End]


@pytest.mark.parametrize(
    ("raw", "command", "keys", "noreply"),
    [
        (b"get a\r\n", "get", ("a",), False),
        (b"gets a b c\r\n", "gets", ("a", "b", "c"), False),
        (b"gat 10 a b\r\n", "gat", ("a", "b"), False),
        (b"cas k 0 0 1 77 noreply\r\nx\r\n", "cas", ("k",), True),
        (b"delete k noreply\r\n", "delete", ("k",), True),
        (b"incr n 1\r\n", "incr", ("n",), False),
        (b"touch k 10 noreply\r\n", "touch", ("k",), True),
        (b"flush_all noreply\r\n", "flush_all", (), True),
        (b"get noreply\r\n", "get", ("noreply",), False),  # a key, for get
        (b"quit\r\n", "quit", (), True),  # the server closes: no reply
        (b"mg k v\r\n", "mg", ("k",), False),
        (b"mg dXNlcjox b v\r\n", "mg", ("user:1",), False),  # base64 key, matched decoded
        (b"ms k 2 T0\r\nhi\r\n", "ms", ("k",), False),
        (b"STATS\r\n", "stats", (), False),
        (b"\r\n", "", (), False),
    ],
)
def test_fields_of_each_command(
    raw: bytes, command: str, keys: tuple[str, ...], noreply: bool
) -> None:
    events = requests(raw)
    assert joined(events) == raw
    assert isinstance(events[-1], End)
    (info,) = infos(raw)
    assert info.fields["command"] == command
    assert info.fields["keys"] == keys
    assert info.fields["key"] == (keys[0] if keys else "")
    assert info.fields["noreply"] is noreply


def test_summaries_are_the_command_and_its_first_key() -> None:
    assert [i.summary for i in infos(b"get a b\r\nset user:1 0 0 1\r\nx\r\nstats\r\n")] == [
        "get a ...",
        "set user:1",
        "stats",
    ]


def test_a_malformed_storage_line_carries_no_data_block_as_memcached_reads_it() -> None:
    events = requests(b"set bad 0 0 x\r\nget a\r\n")
    assert [type(e) for e in events] == [Head, End, Head, End]


def test_the_binary_protocol_drops_to_plain_relay_at_once() -> None:
    raw = b"\x80\x00\x00\x05" + b"\x00" * 20
    events = requests(raw)
    assert events == [Switched("memcache binary protocol (command)", raw)]
    assert requests(b"get a\r\n", raw)[2:] == [Switched("memcache binary protocol (command)", raw)]
    assert replies([], b"\x81\x00")[0] == Switched("memcache binary protocol (reply)", b"\x81\x00")


def test_a_line_too_long_drops_to_plain_relay() -> None:
    raw = b"get " + b"k" * MAX_LINE
    events = requests(raw, b"more")
    assert [type(e) for e in events] == [Switched, Opaque]
    assert joined(events) == raw + b"more"


def test_eof_mid_command_is_a_switch_that_keeps_the_bytes() -> None:
    assert requests(b"set k 0 0 5\r\nab", b"") == [
        Head(b"set k 0 0 5\r\n", infos(b"set k 0 0 5\r\n")[0]),
        Part(b"ab"),
        Switched("closed mid-command"),
    ]
    assert requests(b"get", b"") == [Switched("closed mid-command", b"get")]
    assert requests(b"get a\r\n", b"") == requests(b"get a\r\n")


# -- replies ----------------------------------------------------------------------


def test_each_recorded_command_gets_one_reply() -> None:
    for client, server in RECORDED:
        expected = infos(client)
        events = replies(expected, server, b"")
        assert joined(events) == server, client
        heads = [e for e in events if isinstance(e, Head)]
        assert len(heads) == len(expected), (client, events)
        assert not any(isinstance(e, Switched) for e in events), client


def test_reply_summaries_are_the_first_word() -> None:
    got = [m[0] for m in messages(replies(infos(CLIENT), SERVER, b""))]
    assert got[:12] == [
        "STORED",
        "noreply",
        "VALUE",
        "VALUE",
        "VALUE",
        "NOT_STORED",
        "NOT_STORED",
        "STORED",
        "STORED",
        "EXISTS",
        "NOT_FOUND",
        "STORED",
    ]
    assert "STAT" in got
    assert "RESET" in got
    assert "CLIENT_ERROR" in got


def test_a_get_reply_runs_to_end_through_its_data_blocks() -> None:
    raw = b"VALUE a 0 5\r\nEND\r\n\r\nVALUE b 0 1\r\nx\r\nEND\r\n"
    events = replies(infos(b"get a b\r\n"), raw)
    assert messages(events) == [("VALUE", raw)]
    assert isinstance(events[-1], End)
    assert events[-1].data == b"END\r\n"


def test_noreply_commands_get_an_empty_reply_before_the_next_one() -> None:
    expected = infos(b"set a 0 0 1 noreply\r\nx\r\ndelete b noreply\r\nget a\r\n")
    events = replies(expected, b"VALUE a 0 1\r\nx\r\nEND\r\n")
    assert messages(events) == [
        ("noreply", b""),
        ("noreply", b""),
        ("VALUE", b"VALUE a 0 1\r\nx\r\nEND\r\n"),
    ]
    framer = PROTOCOL.response_framer()
    framer.expect(infos(b"get a\r\n")[0])
    assert messages(framer.feed(b"END\r\n")) == [("END", b"END\r\n")]
    framer.expect(infos(b"quit\r\n")[0])  # owed at the next feed, here the EOF
    assert messages(framer.feed(b"")) == [("noreply", b"")]


def test_quiet_meta_commands_are_paired_by_what_quiet_mode_suppresses() -> None:
    client = b"mg miss v q\r\nmg hit v q k O7\r\nms k 2 q\r\nhi\r\nmd k q\r\nmd gone q O9\r\nmn\r\n"
    server = b"VA 2 khit O7\r\nhi\r\nNF O9\r\nMN\r\n"
    assert messages(replies(infos(client), server)) == [
        ("noreply", b""),
        ("VA", b"VA 2 khit O7\r\nhi\r\n"),
        ("noreply", b""),
        ("noreply", b""),
        ("NF", b"NF O9\r\n"),
        ("MN", b"MN\r\n"),
    ]


def test_a_stats_listing_runs_to_end() -> None:
    raw = b"PREFIX a get 1 hit 1 set 0 del 0\r\nEND\r\n"
    assert messages(replies(infos(b"stats detail dump\r\n"), raw)) == [("PREFIX", raw)]
    assert messages(replies(infos(b"stats reset\r\n"), b"RESET\r\n")) == [("RESET", b"RESET\r\n")]
    metadump = b"key=a exp=-1 la=1 cas=2 fetch=no cls=1 size=63\r\nEND\r\n"
    assert messages(replies(infos(b"lru_crawler metadump all\r\n"), metadump)) == [
        ("key=a", metadump)
    ]


def test_unsolicited_replies_are_framed_by_their_own_shape() -> None:
    events = replies([], b"VALUE a 0 1\r\nx\r\nEND\r\nSERVER_ERROR out of memory\r\n")
    heads = [e for e in events if isinstance(e, Head)]
    assert [h.info.fields["unsolicited"] for h in heads] == [True, True]


def test_watch_switches_after_its_ok() -> None:
    events = replies(infos(b"watch\r\n"), b"OK\r\nts=1 gid=2 type=item_get\r\n")
    assert [type(e) for e in events] == [Head, End, Switched, Opaque]


# -- properties ---------------------------------------------------------------------

conversations = st.lists(st.sampled_from(RECORDED), min_size=1, max_size=8)
cut_points = st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=40)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(conversation=conversations, cuts=cut_points)
def test_requests_split_anyhow_frame_the_same(conversation: Any, cuts: list[int]) -> None:
    client = b"".join(request for request, _ in conversation)
    whole = requests(client, b"")
    events = requests(*split(client, cuts), b"")
    assert joined(events) == client
    assert messages(events) == messages(whole)
    assert len(messages(whole)) == sum(len(infos(request)) for request, _ in conversation)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(conversation=conversations, cuts=cut_points)
def test_replies_split_anyhow_frame_the_same(conversation: Any, cuts: list[int]) -> None:
    client = b"".join(request for request, _ in conversation)
    server = b"".join(reply for _, reply in conversation)
    expected = infos(client)
    whole = replies(expected, server, b"")
    events = replies(expected, *split(server, cuts), b"")
    assert joined(events) == server
    assert messages(events) == messages(whole)
    assert len(messages(whole)) == len(expected)  # one reply each, noreply ones empty


def framing_holds(events: list[Event], data: bytes) -> None:
    assert joined(events) == data
    kinds = [type(e) for e in events]
    if Switched in kinds:
        assert set(kinds[kinds.index(Switched) + 1 :]) <= {Opaque}


prefixes = st.sampled_from([b"", b"set k 0 0 3\r\n", b"VALUE k 0 3\r\n", b"VA 2\r\n", b"get "])


@settings(max_examples=500)
@given(prefix=prefixes, noise=st.binary(max_size=300), cuts=cut_points)
def test_random_bytes_never_raise_and_lose_nothing(
    prefix: bytes, noise: bytes, cuts: list[int]
) -> None:
    data = prefix + noise
    expected = infos(b"get k\r\nset k 0 0 1 noreply\r\nx\r\nmg k v q\r\nstats\r\n")
    for make in (PROTOCOL.request_framer, PROTOCOL.response_framer):
        framers = [make(), make()]
        for framer in framers:
            for info in expected:
                getattr(framer, "expect", lambda _: None)(info)
        whole = feed(framers[0], data, b"")
        events = feed(framers[1], *split(data, cuts), b"")
        framing_holds(whole, data)
        framing_holds(events, data)
        assert messages(events) == messages(whole)


@settings(max_examples=300)
@given(
    lines=st.lists(
        st.sampled_from(
            [b"get a", b"set a 0 0 2", b"xy", b"VALUE a 0 1", b"END", b"VA 1", b"mn", b"MN", b""]
        ),
        max_size=12,
    ),
    cuts=cut_points,
)
def test_line_soup_frames_the_same_however_split(lines: list[bytes], cuts: list[int]) -> None:
    data = b"".join(line + b"\r\n" for line in lines)
    for make in (PROTOCOL.request_framer, PROTOCOL.response_framer):
        whole = feed(make(), data, b"")
        events = feed(make(), *split(data, cuts), b"")
        framing_holds(whole, data)
        assert messages(events) == messages(whole)


# -- matching and errors ----------------------------------------------------------------


def matches(match: object, raw: bytes) -> bool:
    return parse_match(match, "rule")(infos(raw)[0])


def test_match_forms() -> None:
    assert matches("set", b"set a 0 0 1\r\nx\r\n")
    assert matches("SET", b"set a 0 0 1\r\nx\r\n")
    assert not matches("set", b"get a\r\n")
    assert matches("get|gets", b"gets a\r\n")
    assert matches("get user:*", b"get other user:1\r\n")  # any key
    assert not matches("get user:*", b"get other\r\n")
    assert matches({"command": ["delete", "touch"], "key": "s*"}, b"touch s1 10\r\n")
    assert matches({"key": "s*"}, b"delete s1\r\n")
    assert not matches({"command": "get"}, b"delete s1\r\n")


@pytest.mark.parametrize(
    "bad", ["", "get a b", "ge!t", {"cmd": "get"}, {"key": 3}, {"command": []}, 42]
)
def test_bad_matches_name_the_rule(bad: object) -> None:
    with pytest.raises(ConfigError, match="rule"):
        parse_match(bad, "rule")


def test_the_error_reply() -> None:
    info = infos(b"get a\r\n")[0]
    assert error_reply({}, info) == (b"SERVER_ERROR injected by vaurien\r\n", "SERVER_ERROR")
    assert error_reply({"reply": "CLIENT_ERROR no"}, info) == (
        b"CLIENT_ERROR no\r\n",
        "CLIENT_ERROR",
    )
    assert PROTOCOL.error_reply({"reply": ""}, info)[1] == "SERVER_ERROR"
    check_error_options({"reply": "SERVER_ERROR out of memory"}, "rule")
    for bad in ("a\r\nb", 3, " "):
        with pytest.raises(ConfigError, match="rule: reply="):
            PROTOCOL.check_error_options({"reply": bad}, "rule")
