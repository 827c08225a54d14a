"""MySQL framing, matching and errors, without a socket.

Hand-written packets check the events; real PyMySQL traffic with MariaDB
10.11 (recorded through a tap, kept below compressed) checks, over every
split hypothesis tries, that the framed messages do not depend on how the
bytes arrive and that the events carry exactly the bytes fed; random bytes
never raise and lose nothing.
"""

from __future__ import annotations

import ast
import base64
import itertools
import zlib
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_vaurien.errors import ConfigError
from pytest_vaurien.protocols.base import End, Event, Head, MessageInfo, Opaque, Part, Switched
from pytest_vaurien.protocols.mysql import (
    CLIENT_DEPRECATE_EOF,
    CLIENT_PROTOCOL_41,
    CLIENT_SSL,
    PROTOCOL,
    MysqlRequestFramer,
    MysqlResponseFramer,
    Session,
    shorten,
)
from pytest_vaurien.protocols.mysql_match import (
    check_error_options,
    error_reply,
    parse_match,
    rollback_request,
)

#: (client bytes, server bytes) of two PyMySQL connections: DDL, inserts, a
#: select, a multi-statement query, an error, a transaction, a ping, a 70 kB
#: row, a raw COM_STMT_PREPARE and COM_STMT_CLOSE, COM_INIT_DB, COM_QUIT.
_TRAFFIC = (
    "eNrt1n9T2kgYwPG3stObK3gCl01Aoo7jodLWK6gFvHbmuHFCSNpcNVCIFntv/jYQIKwB9a797/txFjfJk/29C3/mey"
    "9G3YlhJEmqVOlOHHN/dsP3l8kwiqnI755Gg0E0z9/cj79cX4VOFNx5V0NnPP46GPXjB6pthnvlXgdeGKnnN566rg7v"
    "p/Eq688f3XmjcTAI497Iklkqq0z5ahjEZZStqrXbnUhTa4DVrnfEWa1Zb4vbyLdvemWhRxy36rVOXZzUOrWjWrsuTl"
    "+Js/OOqH84bXfaIm79jv7KpQqL3q0pSBXT0EtxXHdwG0ZjkQ/6IggjMRwFN87oXnz27gui51w7oevFDwoi7r+IvEm0"
    "tadXcHrWrrc64vSsc74s8Y9a41L1Li8LQhpGQeSc3FZB5M3k8uyy0dhSA1N9ODCN+nFH/CJetc6bi+JO1oTJfZHkVM"
    "HWvri8OIn7umhFPMzzbhyIinj/pt6qC9XZAxFPi7W59nAw9LLG+aj++vTsQcs31z3PFYVMt0J2I72c1nmjcVQ7fpvs"
    "kPQz1RrprGlzq36h5jmfm+QKomooW6XVSLmTRAb95dyujHK6YYezzblSwG5Gk/SVbUYZQfKFqjHXX7kbVkrqryiNkp"
    "QlaRebzihwTo6Kxnbf60nzdl5GOf1WIcq7B6+Lb5IDQ42HH8+DvWxIfHjY6l1ZWb//5UpL3P29d38fvTXf/3bvbDwP"
    "4u2/qefadVU76p4bK39QuZmxpYxAMyvwZctz1XiM94QpxMnt8DpwnchTl4YQ751RGIQf4wutvjhvbWuVW30vPullvG"
    "Ls+RrU8ub0GJ19uofJyz19C8TpIn2zoj99QlXVZE+sZjdW+mBt/Zq6KD+x3nLy1TL/7ybffL6bfBVay2uZtaIrq/l4"
    "V8yuXyQZOxUQH2ZyOh1yNjOOtkzi/PT7ahbg97Qa7Kwa9LmW2tGemu6Vc2H+3mKU5cNRtuUjfbbSLeqGGau2PK9r7V"
    "AtXpPaWJlaT6premL+x56sFG6vKdz6/8MUZfa2vHJn2olpZelx6j18M12Fu+lYybcGX8fixoncT15/ekYcf3LCj0k+"
    "dV78vLqAfP9b3LqfymbbMDtO79oT3VxUmn4h50R/4I1DdS28STCOHjnmVvapseGctTY0XKYaLvWD7occyFmbKv/ojp"
    "Jm8jOgm5t0Fz8E5jNVXF12893nL39S5J60xZKmRkkRcraQ/P5wfmMCAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "AAAAAAAAC+u+7EqKhkJEnlfS91bSb/3dQ9qf3XY/X7KsmqFmf1PV8Lk4fzug4fFjBNO92JnXU/3QErqwPbqRvlZe0y"
    "Uh+247qD2zAaa3kz6C8+Fy3qaTVbcbpI39QG80lVVXvOtRO63mp2Y6WPDcPOmnmsZsyjHjNNua2CyPdyIy1e1eGYe7"
    "Mbvr9MhlFc06rvkkaDQTTP39yPv1xfhU4U3HlXQ2c8/joY9edD716514EXRur5zXQ8h/fTeJX154/uvNE4GIRxb2TJ"
    "LMULonw1nE502apau2q5mvqQt+sdcVZr1tviNvLtm556SVpZQbXLzvnxebN52hEHwuiGD2Ma9eOOKJvaZEwfzl7MmB"
    "qZK4herr9yN6yU1F9RGiUpS9IuNp1R4JwcFY3tvteT5q3MWBbG76fDyfanZj6ZQTVEftwKezn98Wza6l1ZWT8hcqUl"
    "/3x42Wp+frfzYbfzbeMEaV02N62/56zVR2L1JLV83Fn78fPJLJv6AWU+3Jm2fOYBlbWry4vqNp3Nz+57buuvfwG2us"
    "EF"
)
CONNECTIONS: list[tuple[bytes, bytes]] = ast.literal_eval(
    zlib.decompress(base64.b64decode(_TRAFFIC)).decode()
)


def pkt(seq: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes([seq]) + payload


def login(caps: int = CLIENT_PROTOCOL_41, user: bytes = b"root") -> bytes:
    body = caps.to_bytes(4, "little") + b"\0\0\0\1" + b"\x2d" + bytes(23) + user + b"\0\0"
    return pkt(1, body)


GREETING = pkt(0, b"\x0a10.11.6-MariaDB\0" + bytes(40))
OK = pkt(2, b"\x00\x00\x00\x02\x00\x00\x00")


def ok(seq: int, status: int = 2) -> bytes:
    return pkt(seq, b"\x00\x00\x00" + status.to_bytes(2, "little") + b"\0\0")


def eof(seq: int, status: int = 2) -> bytes:
    return pkt(seq, b"\xfe\0\0" + status.to_bytes(2, "little"))


def column(seq: int, name: bytes) -> bytes:
    def s(x: bytes) -> bytes:
        return bytes([len(x)]) + x

    return pkt(seq, s(b"def") + s(b"") + s(b"") + s(b"") + s(name) + s(name) + bytes(13))


def query(sql: bytes) -> bytes:
    return pkt(0, b"\x03" + sql)


def connected(caps: int = CLIENT_PROTOCOL_41) -> tuple[MysqlRequestFramer, MysqlResponseFramer]:
    """Framers past the login."""
    requests, replies = PROTOCOL.framers()
    assert [type(e) for e in replies.feed(GREETING)] == [Head, End]
    [head, _] = requests.feed(login(caps))
    assert isinstance(head, Head)
    replies.expect(head.info)
    assert summaries(replies.feed(OK)) == ["OK"]
    return requests, replies


def summaries(events: Sequence[Event]) -> list[str]:
    return [e.info.summary for e in events if isinstance(e, Head)]


def joined(events: Sequence[Event]) -> bytes:
    return b"".join(e.data for e in events)


def ask(
    requests: MysqlRequestFramer, replies: MysqlResponseFramer, request: bytes, reply: bytes
) -> tuple[MessageInfo, list[Event]]:
    [head, end] = requests.feed(request)
    assert isinstance(head, Head)
    assert isinstance(end, End)
    if not head.info.fields.get("noreply"):
        replies.expect(head.info)
    events = replies.feed(reply)
    assert joined(events) == reply
    return head.info, events


def test_the_greeting_is_a_reply_and_the_login_a_handshake() -> None:
    requests, replies = PROTOCOL.framers()
    assert summaries(replies.feed(GREETING)) == ["greeting"]
    [head, end] = requests.feed(login())
    assert isinstance(head, Head)
    assert isinstance(end, End)
    assert head.info.fields["handshake"] is True
    assert head.info.fields["user"] == "root"
    replies.expect(head.info)
    switch = pkt(2, b"\xfemysql_native_password\0" + bytes(21))
    assert summaries(replies.feed(switch)) == ["auth switch"]
    [auth, _] = requests.feed(pkt(3, bytes(20)))
    assert isinstance(auth, Head)
    assert auth.info.fields["handshake"] is True
    replies.expect(auth.info)
    # caching_sha2 fast auth: 0x01 0x03 then OK, one reply
    events = replies.feed(pkt(4, b"\x01\x03") + ok(5))
    assert summaries(events) == ["OK"]
    assert [type(e) for e in events] == [Head, End]
    info, _ = ask(requests, replies, query(b"SELECT 1"), ok(1))
    assert info.fields["command"] == "Query"
    assert "handshake" not in info.fields


def test_an_ssl_request_switches_both_sides() -> None:
    requests, replies = PROTOCOL.framers()
    replies.feed(GREETING)
    ssl = pkt(1, (CLIENT_PROTOCOL_41 | CLIENT_SSL).to_bytes(4, "little") + bytes(28))
    events = requests.feed(ssl + b"\x16\x03\x01")
    assert events == [Switched("MySQL TLS", ssl + b"\x16\x03\x01")]
    assert requests.feed(b"more") == [Opaque(b"more")]
    assert replies.feed(b"\x16\x03\x03") == [Switched("MySQL TLS", b"\x16\x03\x03")]


@pytest.mark.parametrize("deprecate_eof", [False, True])
def test_a_result_set_and_the_transaction_state(deprecate_eof: bool) -> None:
    caps = CLIENT_PROTOCOL_41 | (CLIENT_DEPRECATE_EOF if deprecate_eof else 0)
    requests, replies = connected(caps)
    info, events = ask(requests, replies, query(b"BEGIN"), ok(1, status=3))
    assert (info.summary, info.fields["in_transaction"], summaries(events)) == (
        "BEGIN",
        False,
        ["OK"],
    )
    end = ok(5, status=3)[:4] + b"\xfe" + ok(5, status=3)[5:] if deprecate_eof else eof(5, 3)
    middle = b"" if deprecate_eof else eof(3, 3)
    rows = pkt(4, b"\x011") + pkt(5, b"\x012")
    reply = pkt(1, b"\x01") + column(2, b"a") + middle + rows + end
    info, events = ask(requests, replies, query(b"SELECT a FROM t"), reply)
    assert info.fields["in_transaction"] is True
    assert summaries(events) == ["rows 2"]
    assert isinstance(events[-1], End)
    info, events = ask(requests, replies, query(b"COMMIT"), ok(1))
    assert info.fields["in_transaction"] is True
    info, _ = ask(requests, replies, pkt(0, b"\x0e"), ok(1))
    assert (info.summary, info.fields["in_transaction"]) == ("Ping", False)


def test_several_result_sets_are_one_reply() -> None:
    requests, replies = connected()
    first = pkt(1, b"\x01") + column(2, b"1") + eof(3) + pkt(4, b"\x011") + eof(5, 0x0A)
    reply = first + ok(6, 0x0A) + pkt(7, b"\xff\x7a\x04#42S02nope")
    [head, _end] = requests.feed(query(b"SELECT 1; UPDATE x; SELECT * FROM nope"))
    assert isinstance(head, Head)
    replies.expect(head.info)
    events = replies.feed(reply + ok(1))  # then an unsolicited packet
    assert summaries(events) == ["rows 1", "OK"]
    assert joined(events) == reply + ok(1)


def test_prepared_statements_are_matched_on_their_sql() -> None:
    requests, replies = connected()
    sql = b"UPDATE accounts SET balance = ? WHERE id = ?"
    prepare_ok = pkt(1, b"\x00" + (7).to_bytes(4, "little") + b"\0\0\2\0\0\0\0")
    reply = prepare_ok + column(2, b"?") + column(3, b"?") + eof(4)
    info, events = ask(requests, replies, pkt(0, b"\x16" + sql), reply)
    assert info.summary == "PREPARE UPDATE accounts SET balance = ? WHERE ..."
    assert summaries(events) == ["OK"]
    assert isinstance(events[-1], End)
    execute = pkt(0, b"\x17" + (7).to_bytes(4, "little") + b"\0\1\0\0\0" + bytes(12))
    info, events = ask(requests, replies, execute, ok(1))
    assert (info.summary, info.fields["command"]) == (
        "UPDATE accounts SET balance = ? WHERE ...",
        "Execute",
    )
    assert info.fields["sql"] == sql.decode()
    assert parse_match("^update accounts", "m")(info)
    [head, _end] = requests.feed(pkt(0, b"\x19" + (7).to_bytes(4, "little")))
    assert isinstance(head, Head)
    assert head.info.fields["noreply"] is True
    assert replies.feed(b"") == []


def test_unknown_commands_and_local_infile_switch_to_plain_relay() -> None:
    requests, _ = connected()
    events = requests.feed(pkt(0, b"\x42abc") + b"rest")
    assert events == [Switched("MySQL command 0x42", pkt(0, b"\x42abc") + b"rest")]
    requests, replies = connected()
    [head, _] = requests.feed(query(b"LOAD DATA LOCAL INFILE 'x' INTO TABLE t"))
    assert isinstance(head, Head)
    replies.expect(head.info)
    events = replies.feed(pkt(1, b"\xfbx") + b"z")
    assert events == [Switched("MySQL LOCAL INFILE", pkt(1, b"\xfbx")), Opaque(b"z")]
    assert requests.feed(b"file") == [Switched("MySQL LOCAL INFILE", b"file")]


def test_a_long_query_spans_packets() -> None:
    requests, _ = connected()
    sql = b"SELECT '" + b"x" * 0xFFFFFF + b"'"
    payload = b"\x03" + sql
    data = pkt(0, payload[:0xFFFFFF]) + pkt(1, payload[0xFFFFFF:])
    events: list[Event] = []
    for at in range(0, len(data), 1 << 20):
        events += requests.feed(data[at : at + (1 << 20)])
    [head, _end] = events
    assert isinstance(head, Head)
    assert head.data == data
    assert head.info.fields["sql"] == sql.decode()
    assert head.info.fields["_seq"] == 1


def test_match_forms_and_their_errors() -> None:
    info = MessageInfo("UPDATE", {"command": "Query", "sql": "update t", "in_transaction": True})
    assert parse_match("^UPDATE", "r")(info)
    assert parse_match({"in_transaction": True}, "r")(info)
    assert not parse_match({"sql": "x", "in_transaction": True}, "r")(info)
    assert not parse_match({"in_transaction": False}, "r")(info)
    assert parse_match(None, "r")(MessageInfo("Ping", {"command": "Ping"}))
    assert not parse_match(None, "r")(MessageInfo("login", {"command": "Login", "handshake": True}))
    assert not parse_match("x", "r")(MessageInfo("Ping", {"command": "Ping"}))
    with pytest.raises(ConfigError, match=r"^rule 1: sql regex '\(' does not compile"):
        parse_match("(", "rule 1")
    with pytest.raises(ConfigError, match=r"^rule 1: unknown key\(s\) 'verb'"):
        parse_match({"verb": "x"}, "rule 1")
    with pytest.raises(ConfigError, match=r"^rule 1: in_transaction 'yes' is not a bool"):
        parse_match({"in_transaction": "yes"}, "rule 1")
    with pytest.raises(ConfigError, match=r"^rule 1: 3 is a int"):
        parse_match(3, "rule 1")


def test_error_replies() -> None:
    info = MessageInfo("UPDATE", {"command": "Query", "sql": "UPDATE", "_seq": 0})
    data, summary = error_reply({}, info)
    text = (
        b"Deadlock found when trying to get lock; try restarting transaction (injected by vaurien)"
    )
    assert (data, summary) == (pkt(1, b"\xff\xbd\x04#40001" + text), "ERR 1213")
    data, summary = error_reply({"errno": 1205, "sqlstate": "", "message": "slow"}, info)
    assert (data, summary) == (pkt(1, b"\xff\xb5\x04#HY000slow"), "ERR 1205")
    assert error_reply({"errno": "1290"}, info)[0][3:13] == b"\x01\xff\x0a\x05#HY000"
    for bad in ({"errno": "x"}, {"errno": 70000}, {"sqlstate": "abc"}, {"message": 3}):
        with pytest.raises(ConfigError, match="^rule 2: "):
            check_error_options(bad, "rule 2")


def test_a_deadlock_in_a_transaction_rolls_it_back() -> None:
    inside = MessageInfo("UPDATE", {"command": "Query", "in_transaction": True, "_seq": 0})
    outside = MessageInfo("UPDATE", {"command": "Query", "in_transaction": False, "_seq": 0})
    substitute = rollback_request({}, inside)
    assert substitute == (query(b"ROLLBACK"), error_reply({}, inside)[0])
    assert rollback_request({}, outside) is None
    assert rollback_request({"errno": 1205}, inside) is None
    assert PROTOCOL.error_request({}, inside) == substitute


def test_shorten() -> None:
    assert shorten("UPDATE  accounts\n SET balance = balance - 1 WHERE id = 1") == (
        "UPDATE accounts SET balance = balance - ..."
    )


def frame(
    up: bytes, down: bytes, cuts_up: list[int], cuts_down: list[int]
) -> tuple[list[Event], list[Event]]:
    """Both streams cut at cuts: the client's framed first, its requests
    then expected by the reply framer (the greeting needs none)."""
    session = Session()
    requests, replies = MysqlRequestFramer(session), MysqlResponseFramer(session)
    up_events: list[Event] = []
    for piece in [*_pieces(up, cuts_up), b""]:
        up_events += requests.feed(piece)
    for event in up_events:
        if isinstance(event, Head) and not event.info.fields.get("noreply"):
            replies.expect(event.info)
    down_events: list[Event] = []
    for piece in [*_pieces(down, cuts_down), b""]:
        down_events += replies.feed(piece)
    return up_events, down_events


def _pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def _shape(events: list[Event]) -> list[tuple[str, str]]:
    """Messages as (summary, bytes) - independent of how Parts were cut."""
    shape: list[tuple[str, str]] = []
    for event in events:
        if isinstance(event, Head):
            shape.append((event.info.summary, ""))
        if isinstance(event, (Switched, Opaque)):
            shape.append((type(event).__name__, ""))
    return shape


@pytest.mark.parametrize("index", range(len(CONNECTIONS)))
def test_recorded_traffic_frames_without_a_switch(index: int) -> None:
    up, down = CONNECTIONS[index]
    up_events, down_events = frame(up, down, [], [])
    assert joined(up_events) == up
    assert joined(down_events) == down
    assert not any(isinstance(e, (Switched, Opaque)) for e in up_events + down_events)
    requests = [e.info for e in up_events if isinstance(e, Head)]
    assert requests[0].summary == "login"
    assert requests[1].summary == "SET NAMES utf8mb4"
    replies = summaries(down_events)
    assert replies[0] == "greeting"
    assert len(replies) == 1 + sum(1 for r in requests if not r.fields.get("noreply"))
    if index == 0:
        assert "ERR 1146" in replies
        assert "rows 2" in replies
        assert "rows" in replies


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    index=st.sampled_from(range(len(CONNECTIONS))),
    cuts_up=st.lists(st.integers(min_value=0), max_size=12),
    cuts_down=st.lists(st.integers(min_value=0), max_size=12),
)
def test_any_split_frames_the_same_and_loses_no_byte(
    index: int, cuts_up: list[int], cuts_down: list[int]
) -> None:
    up, down = CONNECTIONS[index]
    whole = frame(up, down, [], [])
    split = frame(up, down, cuts_up, cuts_down)
    assert joined(split[0]) == up
    assert joined(split[1]) == down
    assert _shape(split[0]) == _shape(whole[0])
    assert _shape(split[1]) == _shape(whole[1])
    assert [e.info.fields for e in split[0] if isinstance(e, Head)] == [
        e.info.fields for e in whole[0] if isinstance(e, Head)
    ]


@settings(max_examples=200, deadline=None)
@given(
    up=st.binary(max_size=300),
    down=st.binary(max_size=300),
    cuts=st.lists(st.integers(min_value=0), max_size=6),
    plans=st.lists(st.sampled_from(["result", "prepare", "one", "fields", "rows", "auth"])),
)
def test_random_bytes_never_raise_and_lose_nothing(
    up: bytes, down: bytes, cuts: list[int], plans: list[str]
) -> None:
    session = Session()
    requests, replies = MysqlRequestFramer(session), MysqlResponseFramer(session)
    for plan in plans:
        replies.expect(MessageInfo("x", {"_plan": plan}))
    up_events: list[Event] = []
    down_events: list[Event] = []
    for piece in [*_pieces(up, cuts), b""]:
        up_events += requests.feed(piece)
    for piece in [*_pieces(down, cuts), b""]:
        down_events += replies.feed(piece)
    assert joined(up_events) == up
    assert joined(down_events) == down
    for events in (up_events, down_events):
        assert all(isinstance(e, (Head, Part, End, Switched, Opaque)) for e in events)
