"""PostgreSQL framing, matching and errors, without a socket.

Hand-written messages check the events; real psycopg traffic (recorded by
``record_postgresql``) checks, over every split hypothesis tries, that the
framed messages do not depend on how the bytes arrive and that the events
carry exactly the bytes fed; random bytes never raise and lose nothing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_vaurien.errors import ConfigError
from pytest_vaurien.protocols import wire_protocol
from pytest_vaurien.protocols.base import (
    Batch,
    End,
    Event,
    Head,
    MessageInfo,
    Opaque,
    Part,
    Switched,
)
from pytest_vaurien.protocols.postgresql import (
    PROTOCOL,
    PgRequestFramer,
    PgResponseFramer,
    RequestBatch,
    Session,
    shorten,
)
from pytest_vaurien.protocols.postgresql_match import (
    check_error_options,
    error_reply,
    error_request,
    parse_match,
)
from pytest_vaurien.protocols.postgresql_replies import HOLD_REPLY
from tests.protocols.postgresql_traffic import CONNECTIONS


def msg(kind: bytes, body: bytes = b"") -> bytes:
    return kind + (len(body) + 4).to_bytes(4, "big") + body


_PARAMS = b"user\0vaurien\0database\0postgres\0\0"
STARTUP = (8 + len(_PARAMS)).to_bytes(4, "big") + (196608).to_bytes(4, "big") + _PARAMS
SSL = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")
READY = (
    msg(b"R", (0).to_bytes(4, "big")) + msg(b"S", b"a\0b\0") + msg(b"K", bytes(8)) + msg(b"Z", b"I")
)


def query(sql: str) -> bytes:
    return msg(b"Q", sql.encode() + b"\0")


def parse(sql: str, name: str = "") -> bytes:
    return msg(b"P", name.encode() + b"\0" + sql.encode() + b"\0\0\0")


def bind(statement: str = "", portal: str = "") -> bytes:
    return msg(b"B", portal.encode() + b"\0" + statement.encode() + b"\0" + bytes(6))


def execute(portal: str = "") -> bytes:
    return msg(b"E", portal.encode() + b"\0" + bytes(4))


DESCRIBE = msg(b"D", b"P\0")
SYNC = msg(b"S")
FLUSH = msg(b"H")


def error(sqlstate: str) -> bytes:
    return msg(b"E", b"SERROR\0C" + sqlstate.encode() + b"\0Mboom\0\0")


def complete(tag: str) -> bytes:
    return msg(b"C", tag.encode() + b"\0")


def framers() -> tuple[PgRequestFramer, PgResponseFramer]:
    return PROTOCOL.framers()


def feed(framer: PgRequestFramer | PgResponseFramer, *chunks: bytes) -> list[Event]:
    events: list[Event] = []
    for chunk in chunks:
        events += framer.feed(chunk)
    return events


def joined(events: Iterable[Event]) -> bytes:
    return b"".join(event.data for event in events)


def heads(events: Iterable[Event]) -> list[MessageInfo]:
    return [e.info for e in events if isinstance(e, Head) and not e.interim]


def messages(events: Iterable[Event]) -> list[tuple[str, str, bytes]]:
    """Head, Parts, End merged into one (kind, summary, bytes) a message: the
    shape that must not depend on how the bytes were split."""
    out: list[tuple[str, str, bytes]] = []
    current: list[Any] | None = None
    for event in events:
        if isinstance(event, Head):
            current = ["interim" if event.interim else "head", event.info.summary, event.data]
        elif isinstance(event, Part):
            assert current is not None
            current[2] += event.data
        elif isinstance(event, End):
            assert current is not None
            current[2] += event.data
            out.append((current[0], current[1], current[2]))
            current = None
        elif isinstance(event, Switched):
            out.append(("switched", event.reason, event.data))
        elif out and out[-1][0] == "opaque":
            out[-1] = ("opaque", "", out[-1][2] + event.data)
        else:
            out.append(("opaque", "", event.data))
    return out


def exchange(up: Sequence[bytes], down: Sequence[bytes]) -> tuple[list[Event], list[Event]]:
    """Frame the client's chunks, expect every request framed, frame the server's."""
    return exchange_with(up, down, framers())


def exchange_with(
    up: Sequence[bytes], down: Sequence[bytes], framed: tuple[PgRequestFramer, PgResponseFramer]
) -> tuple[list[Event], list[Event]]:
    """:func:`exchange` through these framers."""
    requests, replies = framed
    sent = feed(requests, *up, b"")
    for info in heads(sent):
        replies.expect(info)
    return sent, feed(replies, *down, b"")


# -- requests ----------------------------------------------------------------


def test_the_startup_and_a_query() -> None:
    sent, got = exchange(
        [SSL, STARTUP, query("SELECT 1")], [b"N", READY, complete("SELECT 1") + msg(b"Z", b"I")]
    )
    infos = heads(sent)
    assert [(i.summary, i.fields.get("handshake", False)) for i in infos] == [
        ("SSLRequest", True),
        ("startup", True),
        ("SELECT 1", False),
    ]
    assert infos[1].fields["user"] == "vaurien"
    assert infos[2].fields["sql"] == "SELECT 1"
    assert infos[2].fields["in_transaction"] is False
    assert [m[1] for m in messages(got)] == ["N", "Z", "C SELECT 1"]


def test_in_transaction_comes_from_the_last_ready_for_query() -> None:
    requests, replies = framers()
    [startup, _] = requests.feed(STARTUP)
    assert isinstance(startup, Head)
    replies.expect(startup.info)
    replies.feed(READY)
    [begin, _] = requests.feed(query("BEGIN"))
    assert isinstance(begin, Head)
    replies.expect(begin.info)
    replies.feed(complete("BEGIN") + msg(b"Z", b"T"))
    [update, _] = requests.feed(query("UPDATE accounts SET x = 1"))
    assert isinstance(update, Head)
    assert update.info.fields["in_transaction"] is True
    assert begin.info.fields["in_transaction"] is False


def test_an_execute_group_is_one_unit_matched_on_its_statement() -> None:
    requests, _ = framers()
    requests.feed(STARTUP)
    events = requests.feed(
        parse("UPDATE accounts SET balance = 0", "s1") + bind("s1", "p1") + DESCRIBE
    )
    assert events == []  # held until what follows says what they are
    events = requests.feed(execute("p1") + SYNC)
    [group, sync] = heads(events)
    assert group.summary == "UPDATE accounts SET balance = 0"
    assert (group.fields["kind"], group.fields["sql"]) == (
        "execute",
        "UPDATE accounts SET balance = 0",
    )
    assert group.fields["_plan"] == "PBOE"
    assert (sync.summary, sync.fields["handshake"]) == ("Sync", True)
    # a later Bind and Execute of the prepared statement: matched on its SQL
    [again, _] = heads(requests.feed(bind("s1") + execute() + SYNC))
    assert again.fields["sql"] == "UPDATE accounts SET balance = 0"
    assert parse_match("^update ACCOUNTS", "m")(again)


def test_messages_no_execute_follows_are_relayed_outside_the_rules() -> None:
    requests, _ = framers()
    requests.feed(STARTUP)
    [prepare, sync] = heads(requests.feed(parse("SELECT 1", "s") + SYNC))
    assert (prepare.summary, prepare.fields["handshake"], prepare.fields["_plan"]) == (
        "Parse",
        True,
        "P",
    )
    [flushed] = heads(requests.feed(parse("SELECT 2", "t") + FLUSH))
    assert flushed.fields["_plan"] == "P"
    [flush] = heads(requests.feed(FLUSH))
    assert (flush.summary, flush.fields["_plan"]) == ("Flush", "")
    assert not parse_match(".*", "m")(sync)


def test_answered_skips_the_rest_of_the_batch_until_sync() -> None:
    requests, _ = framers()
    requests.feed(STARTUP)
    group = parse("SELECT 1") + bind() + execute()
    first = heads(requests.feed(group + group + FLUSH))
    requests.answered(first[0])
    assert first[0].fields.get("skipped") is None
    assert first[1].fields["skipped"]
    assert first[1].fields["substitute"] == (b"", b"")
    assert first[2].fields["skipped"]
    assert first[2].fields["handshake"]
    later = heads(requests.feed(group + SYNC + group))
    assert later[0].fields["skipped"]
    assert "skipped" not in later[1].fields  # the Sync goes to the server
    assert "skipped" not in later[2].fields
    assert not parse_match(".*", "m")(later[0])


def test_answered_on_a_simple_query_changes_nothing() -> None:
    requests, _ = framers()
    requests.feed(STARTUP)
    [q1, q2] = heads(requests.feed(query("SELECT 1") + query("SELECT 2")))
    requests.answered(q1)
    assert "skipped" not in q2.fields


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "PostgreSQL: not a startup message"),
        (
            (16).to_bytes(4, "big") + (80877102).to_bytes(4, "big") + bytes(8),
            "PostgreSQL CancelRequest",
        ),
        (
            (8).to_bytes(4, "big") + (131072).to_bytes(4, "big"),
            "PostgreSQL: unsupported startup code 131072",
        ),
        (STARTUP + b"Z\0\0\0\4", "PostgreSQL: unknown message 'Z'"),
        (STARTUP + b"Q\0\0\0\2", "PostgreSQL: unknown message 'Q'"),
    ],
)
def test_what_cannot_be_framed_switches_with_no_byte_lost(raw: bytes, reason: str) -> None:
    requests, replies = framers()
    events = requests.feed(raw) + requests.feed(b"more")
    assert joined(events) == raw + b"more"
    assert [e.reason for e in events if isinstance(e, Switched)] == [reason]
    assert isinstance(events[-1], Opaque)
    # the server side follows
    assert replies.feed(b"x") == [Switched(reason, b"x")]


def test_tls_accepted_switches_both_sides() -> None:
    requests, replies = framers()
    [ssl, _] = requests.feed(SSL)
    assert isinstance(ssl, Head)
    replies.expect(ssl.info)
    events = replies.feed(b"S\x16\x03\x03")
    assert events == [
        Head(b"S", MessageInfo("S")),
        End(),
        Switched("PostgreSQL TLS"),
        Opaque(b"\x16\x03\x03"),
    ]
    assert requests.feed(b"\x16\x03\x01") == [Switched("PostgreSQL TLS", b"\x16\x03\x01")]


def test_copy_switches_both_sides_after_the_reply() -> None:
    requests, replies = framers()
    [startup, _] = requests.feed(STARTUP)
    held = b"d\0\0"  # a CopyData header, incomplete: held
    [copy, _] = requests.feed(query("COPY t FROM STDIN") + held)
    for info in (startup.info, copy.info):  # type: ignore[union-attr]
        replies.expect(info)
    copy_in = msg(b"G", bytes(3))
    events = replies.feed(READY + copy_in + b"more")
    assert messages(events)[-3:] == [
        ("head", "COPY", copy_in),
        ("switched", "PostgreSQL COPY", b""),
        ("opaque", "", b"more"),
    ]
    assert requests.feed(b"tial") == [Switched("PostgreSQL COPY", held + b"tial")]
    assert requests.feed(b"x") == [Opaque(b"x")]


def test_a_client_closing_mid_message_leaves_no_byte_behind() -> None:
    requests, _ = framers()
    raw = STARTUP + parse("SELECT 1") + query("SELECT 2")[:6]
    events = feed(requests, raw, b"")
    assert joined(events) == raw
    assert [e.reason for e in events if isinstance(e, Switched)] == [
        "PostgreSQL: closed mid-message"
    ]


# -- replies -----------------------------------------------------------------


def reply_framer(*plans: str) -> PgResponseFramer:
    replies = PgResponseFramer(Session())
    for plan in plans:
        replies.expect(MessageInfo("x", {"_plan": plan}))
    return replies


def test_after_an_error_the_server_skips_until_sync() -> None:
    replies = reply_framer("PBOE", "PBOE", "", "Y", "PBOE")
    events = replies.feed(msg(b"1") + error("22012") + msg(b"Z", b"I") + msg(b"1"))
    assert [m[1] for m in messages(events)] == ["E 22012", "skipped", "skipped", "Z"]
    assert messages(events)[0][2] == msg(b"1") + error("22012")
    assert replies.feed(msg(b"2") + msg(b"n") + complete("SELECT 0")) != []


def test_rows_stream_once_the_summary_is_known_or_too_much_is_held() -> None:
    replies = reply_framer("Q", "Q")
    row = msg(b"D", b"\0\1\0\0\0\1x")
    assert replies.feed(msg(b"T", bytes(2)) + row) == []
    big = msg(b"D", bytes(HOLD_REPLY))
    events = replies.feed(big)
    assert [type(e) for e in events] == [Head]
    assert events[0].info.summary == "T"  # type: ignore[union-attr]
    events = replies.feed(complete("SELECT 3") + msg(b"Z", b"I"))
    assert events == [Part(complete("SELECT 3") + msg(b"Z", b"I")), End()]


def test_messages_owed_to_no_request_are_interim() -> None:
    replies = reply_framer()
    notify = msg(b"A", bytes(4) + b"chan\0pay\0")
    assert replies.feed(notify) == [Head(notify, MessageInfo("A"), interim=True), End()]


def test_authentication_waits_for_the_client() -> None:
    replies = reply_framer("A", "A")
    sasl = msg(b"R", (10).to_bytes(4, "big") + b"SCRAM-SHA-256\0\0")
    final = msg(b"R", (12).to_bytes(4, "big") + b"v=x")
    events = replies.feed(sasl + final + READY)
    assert [m[1] for m in messages(events)] == ["R 10", "Z"]


def test_a_server_closing_mid_reply_ends_it() -> None:
    replies = reply_framer("Q")
    fatal = msg(b"E", b"SFATAL\0C57P01\0Mbye\0\0")
    events = feed(replies, fatal + b"Z\0", b"")
    assert messages(events) == [
        ("head", "E 57P01", fatal),
        ("switched", "PostgreSQL: closed mid-message", b"Z\0"),
    ]


# -- recorded traffic -----------------------------------------------------------


def test_recorded_traffic_framed_whole() -> None:
    shapes = {}
    for up, down, what in CONNECTIONS:
        sent, got = exchange([up], [down])
        assert joined(sent) == up
        assert joined(got) == down
        shapes[what] = [m[1] for m in messages(got)]
    assert shapes["pipeline mode"][2:] == [
        "C SELECT 1",
        "C SELECT 1",
        "Z",
        "",
        "E 22012",
        "skipped",
        "Z",
        "",
        "C SELECT 1",
        "",
    ]
    assert shapes["COPY TO STDOUT"][-3:] == ["COPY", "PostgreSQL COPY", ""]


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.integers(0, len(CONNECTIONS) - 1),
    up_cuts=st.lists(st.integers(0, 1 << 16), max_size=30),
    down_cuts=st.lists(st.integers(0, 1 << 16), max_size=30),
)
def test_recorded_traffic_split_anywhere_frames_the_same(
    which: int, up_cuts: list[int], down_cuts: list[int]
) -> None:
    up, down, _ = CONNECTIONS[which]
    whole = exchange([up], [down])
    sent, got = exchange(splits(up, up_cuts), splits(down, down_cuts))
    assert joined(sent) == up
    assert joined(got) == down
    assert messages(sent) == messages(whole[0])
    assert messages(got) == messages(whole[1])


@settings(max_examples=300, deadline=None)
@given(noise=st.binary(max_size=300), cuts=st.lists(st.integers(0, 400), max_size=10))
def test_random_bytes_after_a_startup_never_raise_and_lose_nothing(
    noise: bytes, cuts: list[int]
) -> None:
    requests, _ = framers()
    raw = STARTUP + noise
    assert joined(feed(requests, *splits(raw, cuts), b"")) == raw


@settings(max_examples=300, deadline=None)
@given(
    plans=st.lists(st.sampled_from(["Q", "A", "L", "Y", "PBOE", "SE", "", "C", "E"]), max_size=6),
    noise=st.binary(max_size=300),
    cuts=st.lists(st.integers(0, 400), max_size=10),
)
def test_random_replies_never_raise_and_lose_nothing(
    plans: list[str], noise: bytes, cuts: list[int]
) -> None:
    replies = reply_framer(*plans)
    assert joined(feed(replies, *splits(noise, cuts), b"")) == noise


@settings(max_examples=200, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(list(b"ZCDTEN1")), max_size=12),
    plans=st.lists(st.sampled_from(["Q", "PBOE", "Y", ""]), max_size=6),
)
def test_well_formed_replies_in_any_order_lose_nothing(kinds: list[int], plans: list[str]) -> None:
    data = b"".join(msg(bytes([k]), b"I" if k == ord("Z") else b"x\0") for k in kinds)
    replies = reply_framer(*plans)
    events = feed(replies, data, b"")
    assert joined(events) == data
    assert not any(isinstance(e, Switched) for e in events)


# -- matching and errors ----------------------------------------------------------


def unit(sql: str, in_transaction: bool = False, kind: str = "query") -> MessageInfo:
    return MessageInfo(shorten(sql), {"kind": kind, "sql": sql, "in_transaction": in_transaction})


def test_match_forms() -> None:
    update = unit("update accounts set x = 1", True)
    assert parse_match("^UPDATE accounts", "m")(update)
    assert not parse_match("^SELECT", "m")(update)
    assert parse_match({"sql": "accounts", "in_transaction": True}, "m")(update)
    assert not parse_match({"in_transaction": False}, "m")(update)
    assert parse_match(None, "m")(update)
    assert not parse_match({"in_transaction": False}, "m")(MessageInfo("Sync", {"kind": "sync"}))


@pytest.mark.parametrize(
    ("match", "words"),
    [
        ("(", "does not compile"),
        ("", "not a regex"),
        ({"sql": 3}, "not a regex"),
        ({"in_transaction": "yes"}, "not a bool"),
        ({"table": "x"}, "unknown key"),
        (42, "expected an SQL regex"),
    ],
)
def test_bad_matches_say_where_and_what(match: object, words: str) -> None:
    with pytest.raises(ConfigError, match=rf"^rule 1: match: .*{words}"):
        parse_match(match, "rule 1: match")


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"sqlstate": "4000"}, "not an SQLSTATE"),
        ({"severity": "LOG"}, "expected one of"),
        ({"message": 3}, "text"),
    ],
)
def test_bad_error_options_say_where(options: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=rf"^rule 2: .*{words}"):
        check_error_options(options, "rule 2")


def test_the_error_reply_of_a_query_then_ready() -> None:
    data, summary = error_reply({}, unit("SELECT 1"))
    assert summary == "E 40001"
    body = b"SERROR\0VERROR\0C40001\0Mserialization_failure (injected by vaurien)\0\0"
    assert data == msg(b"E", body) + msg(b"Z", b"I")
    data, _ = error_reply(
        {"sqlstate": "40P01", "message": "dead"}, unit("SELECT 1", kind="execute")
    )
    assert data == msg(
        b"E", b"SERROR\0VERROR\0C40P01\0Mdead\0\0"
    )  # Sync's reply follows from the server
    data, _ = error_reply({"sqlstate": "57P01", "severity": "fatal"}, unit("SELECT 1"))
    assert data == msg(b"E", b"SFATAL\0VFATAL\0C57P01\0Madmin_shutdown (injected by vaurien)\0\0")


def test_the_error_request_raises_inside_a_transaction_only() -> None:
    assert error_request({}, unit("UPDATE t")) is None
    assert error_request({}, unit("UPDATE t", True, kind="execute")) is None
    assert error_request({"severity": "FATAL"}, unit("UPDATE t", True)) is None
    raw = error_request({"message": "it's $m$ here"}, unit("UPDATE t", True))
    assert raw is not None
    sql = raw[5:-1].decode()
    assert raw == query(sql)
    assert sql == (
        "DO $vaurien$ BEGIN RAISE EXCEPTION USING ERRCODE = '40001', "
        "MESSAGE = $m1$it's $m$ here$m1$; END $vaurien$;"
    )


def test_summaries_are_shortened_at_a_word() -> None:
    assert shorten("SELECT 1") == "SELECT 1"
    assert shorten("UPDATE  accounts\n SET balance = balance - 100 WHERE id = 1") == (
        "UPDATE accounts SET balance = balance - ..."
    )


def test_the_protocol_is_registered_and_framers_share_a_session() -> None:
    assert wire_protocol("postgresql") is PROTOCOL
    requests, replies = framers()
    assert requests.session is replies.session
    other, _ = framers()
    assert other.session is not requests.session


def _reply_chunks(up: bytes, down: bytes) -> list[bytes]:
    """The server's stream cut where each reply ends, as a server sends them."""
    chunks, at, size = [], 0, 0
    for event in exchange([up], [down])[1]:
        size += len(event.data)
        if isinstance(event, End):
            chunks.append(down[at : at + size])
            at, size = at + size, 0
    return [*chunks, down[at:]] if at < len(down) else chunks


def test_whole_simple_replies_frame_as_message_by_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one-pass path for whole replies to simple queries gives exactly the
    events (heads, summaries, parts, ends) of the message-by-message one."""
    taken = []
    one_pass = PgResponseFramer._simple_replies

    def counted(self: PgResponseFramer, data: bytes, events: list[Event]) -> int:
        done = one_pass(self, data, events)
        taken.append(done)
        return done

    def shape(events: list[Event]) -> list[tuple[Any, ...]]:
        return [(type(e), getattr(e, "info", None), e.data) for e in events]

    monkeypatch.setattr(PgResponseFramer, "_simple_replies", counted)
    fast = {what: exchange([up], _reply_chunks(up, down))[1] for up, down, what in CONNECTIONS}
    assert sum(1 for done in taken if done) >= 5  # the simple queries took it
    monkeypatch.setattr(PgResponseFramer, "_simple_replies", lambda self, data, events: 0)
    for up, down, what in CONNECTIONS:
        slow = exchange([up], _reply_chunks(up, down))[1]
        assert shape(fast[what]) == shape(slow), what


# -- the plain path: requests and their replies in batches ----------------------------


def plain_exchange(
    up: Sequence[bytes], down: Sequence[bytes], framed: tuple[PgRequestFramer, PgResponseFramer]
) -> tuple[list[Event], list[Event], list[list[str]]]:
    """:func:`exchange` as the engine frames when every unit is relayed
    untouched and no one reads the records: requests with ``batch`` set, a
    batch's plans expected at once, replies with ``batch_limit`` the plain
    requests first in line (the engine's plain run). Also returns the plans
    each request batch left in the session."""
    requests, replies = framed
    requests.batch = True
    line: deque[int | None] = deque()  # a plain run's count, or one request of its own
    sent: list[Event] = []
    plans: list[list[str]] = []
    for chunk in [*up, b""]:
        for event in requests.feed(chunk):
            sent.append(event)
            count = 0
            if isinstance(event, Batch):
                plans.append(list(requests.session.batched))
                replies.expect_plain(event.count)
                assert not requests.session.batched
                count = event.count
            elif isinstance(event, Head):
                replies.expect(event.info)
                fields = event.info.fields
                count = int(fields.keys().isdisjoint(("handshake", "substitute", "noreply")))
            else:
                continue
            if count and line and line[-1] is not None:
                line[-1] += count
            else:
                line.append(count or None)
    got: list[Event] = []
    replying = False
    for chunk in [*down, b""]:
        head = line[0] if line and not replying else None
        replies.batch_limit = head or 0
        for event in replies.feed(chunk):
            got.append(event)
            if isinstance(event, Batch):
                assert line[0] is not None
                assert line[0] >= event.count
                line[0] -= event.count
                if not line[0]:
                    line.popleft()
            elif isinstance(event, Head) and not event.interim and line:
                replying = True
            elif isinstance(event, End) and replying:
                replying = False
                if line[0] is None or line[0] == 1:
                    line.popleft()
                else:
                    line[0] -= 1
    return sent, got, plans


def entries(events: Iterable[Event]) -> list[tuple[Any, ...]]:
    """One entry a batch (``("batch", event)``) or a request or reply framed
    on its own (``(head info, interim, bytes)``); a switch as it is, then the
    opaque bytes after it as one."""
    out: list[tuple[Any, ...]] = []
    current: list[Any] | None = None
    for event in events:
        if isinstance(event, Batch):
            out.append(("batch", event))
        elif isinstance(event, Head):
            current = [event.info, event.interim, event.data]
        elif isinstance(event, (Part, End)):
            assert current is not None
            current[2] += event.data
            if isinstance(event, End):
                out.append(tuple(current))
                current = None
        elif isinstance(event, Opaque) and out and out[-1][0] is Opaque:
            out[-1] = (Opaque, out[-1][1] + event.data)  # however the bytes came
        else:
            out.append((type(event), event.data))
    assert current is None
    return out


def same_entries(
    fast: list[tuple[Any, ...]], slow: list[tuple[Any, ...]], plans: list[list[str]] | None
) -> int:
    """Entry by entry: a batch of ``count`` is, on the general path, that
    many requests (or replies) in a row, none interim, with the same bytes
    in all; for requests (``plans`` given), the same plans, and as many of
    them units (no handshake: an ordinal each) as the batch says, the others
    what the engine relays outside the rules; everything else the same
    events. Returns how many entries went in batches."""
    at = batched = 0
    for one in fast:
        if one[0] != "batch":
            assert one == slow[at]
            at += 1
            continue
        batch = one[1]
        group = slow[at : at + batch.count]
        at += batch.count
        batched += batch.count
        assert len(group) == batch.count
        assert all(isinstance(info, MessageInfo) and not interim for info, interim, _ in group)
        assert b"".join(data for _, _, data in group) == batch.data
        if plans is None:
            continue
        infos = [info for info, _, _ in group]
        assert [info.fields["_plan"] for info in infos] == plans.pop(0)
        units = [info for info in infos if not info.fields.get("handshake")]
        assert batch.units == len(units)
        assert all(info.fields["kind"] in ("query", "execute") for info in units)
        others = [info.fields for info in infos if info.fields.get("handshake")]
        assert all(f["kind"] in ("sync", "flush", "extended") for f in others)
        assert all(f.keys().isdisjoint(("substitute", "noreply", "skipped")) for f in others)
    assert at == len(slow)
    assert plans in (None, [])
    return batched


def _repeated(which: str, times: int) -> tuple[bytes, bytes]:
    """A recorded connection with what came after its startup sent ``times``
    over (it ends with a Terminate)."""
    up, down = next((u, d) for u, d, what in CONNECTIONS if what == which)
    first = up.index(STARTUP[4:]) + len(STARTUP) - 4
    ready = down.index(b"Z\0\0\0\x05I") + 6
    return up[:first] + up[first:-5] * times + up[-5:], down[:ready] + down[ready:] * times


#: Recorded traffic, and clients sending many simple queries, or pipelines, at once.
_PLAIN_TRAFFIC = [
    *((up, down) for up, down, _ in CONNECTIONS),
    _repeated("simple queries", 3),
    _repeated("pipeline mode", 3),
]


def test_the_plain_path_batches_simple_queries_and_their_replies() -> None:
    up, down, _ = CONNECTIONS[0]
    ready = down.index(b"Z\0\0\0\x05I") + 6
    sent, got, plans = plain_exchange([up], [down[:ready], down[ready:]], framers())
    assert [(e.count, e.units) for e in sent if isinstance(e, RequestBatch)] == [(7, 7)]
    assert plans == [["Q"] * 7]
    assert [e.count for e in got if isinstance(e, Batch)] == [7]
    assert joined(got) == down


def test_the_plain_path_batches_an_extended_pipeline_with_its_syncs() -> None:
    """psycopg's pipeline: two Executes, then Sync and Flush; then after an
    error, the skip until Sync; every request owed a reply is in the batch,
    the Executes alone are units."""
    up, down = next((u, d) for u, d, what in CONNECTIONS if what == "pipeline mode")
    first = up.index(STARTUP[4:]) + len(STARTUP) - 4
    ready = down.index(b"Z\0\0\0\x05I") + 6
    requests, replies = framers()
    sent, got, plans = plain_exchange(
        [up[:first], up[first:-5], up[-5:]], [down[:ready], down[ready:]], (requests, replies)
    )
    batches = [e for e in sent if isinstance(e, RequestBatch)]
    assert [(b.count, b.units) for b in batches] == [(9, 5)]
    assert plans == [["PBOE", "PBOE", "Y", "", "PBOE", "PBOE", "Y", "", "Q"]]
    assert [e.count for e in got if isinstance(e, Batch)] == [9]
    assert joined(got) == down
    assert not replies._skipping
    assert requests.session.status == b"I"


def test_the_plain_path_keeps_the_statement_map_and_the_transaction_state() -> None:
    """A statement prepared and a transaction begun while batching: the
    first unit framed one by one afterwards (a rule was added) is matched on
    that statement's SQL, inside the transaction."""
    requests, replies = framers()
    requests.batch = True
    replies.expect(heads(requests.feed(STARTUP))[0])
    replies.feed(READY)
    update = "UPDATE accounts SET balance = 0"
    sent = requests.feed(query("BEGIN") + parse(update, "s1") + SYNC + parse("SELECT 1", "s2"))
    assert [(e.count, e.units) for e in sent if isinstance(e, RequestBatch)] == [(3, 1)]
    replies.expect_plain(3)
    replies.batch_limit = 3
    got = replies.feed(complete("BEGIN") + msg(b"Z", b"T") + msg(b"1") + msg(b"Z", b"T"))
    assert [e.count for e in got if isinstance(e, Batch)] == [3]
    requests.batch = False  # a rule: units one by one again
    [group, sync] = heads(requests.feed(bind("s1") + execute() + SYNC))
    assert group.fields["sql"] == update
    assert group.fields["in_transaction"] is True
    assert group.fields["_plan"] == "PBE"  # the Parse of s2 held across the switch
    assert parse_match({"sql": "^UPDATE", "in_transaction": True}, "m")(group)
    assert sync.summary == "Sync"


def test_a_statement_parsed_again_maps_to_its_latest_sql_whichever_path_framed_it() -> None:
    """Batches skip a Parse or Bind that repeats the last one they mapped;
    one framed on its own in between must not leave that stale."""
    requests, _ = framers()
    requests.feed(STARTUP)
    for batch, sql in ((True, "SELECT 1"), (False, "SELECT 2"), (True, "SELECT 1")):
        requests.batch = batch
        requests.feed(parse(sql, "s") + bind("s", "p") + SYNC)
    requests.batch = False
    [unit, _] = heads(requests.feed(execute("p") + SYNC))
    assert unit.fields["sql"] == "SELECT 1"
    requests.feed(bind("other", "p") + SYNC)
    requests.batch = True
    requests.feed(bind("s", "p") + SYNC)
    requests.batch = False
    [unit, _] = heads(requests.feed(execute("p") + SYNC))
    assert unit.fields["sql"] == "SELECT 1"


def test_held_messages_cross_from_one_by_one_to_batches() -> None:
    requests, _ = framers()
    requests.feed(STARTUP)
    assert requests.feed(parse("SELECT 1") + bind()) == []
    requests.batch = True
    [batch] = requests.feed(DESCRIBE + execute() + SYNC)
    assert isinstance(batch, RequestBatch)
    assert (batch.data, batch.count, batch.units) == (
        parse("SELECT 1") + bind() + DESCRIBE + execute() + SYNC,
        2,
        1,
    )
    assert list(requests.session.batched) == ["PBOE", "Y"]


def test_after_a_reply_cut_across_chunks_the_whole_ones_go_in_a_batch_again() -> None:
    """The server's chunks rarely end where a reply does in a long pipeline:
    the reply cut in two is framed message by message and counts against
    the limit; the whole replies after it go in one batch again."""
    requests, replies = framers()
    requests.batch = True
    replies.expect(heads(requests.feed(STARTUP))[0])
    replies.feed(READY)
    group = parse("SELECT 1") + bind() + DESCRIBE + execute()
    [batch] = requests.feed(group * 4 + SYNC)
    assert isinstance(batch, RequestBatch)
    replies.expect_plain(batch.count)
    one = msg(b"1") + msg(b"2") + msg(b"n") + complete("SELECT 1")
    data = one * 4 + msg(b"Z", b"I")
    cut = len(one) + 7  # in the second reply's BindComplete
    replies.batch_limit = 5
    assert replies.feed(data[:cut]) == [Batch(one, 1)]
    replies.batch_limit = 4  # the engine: the rest of the plain run
    events = replies.feed(data[cut:])
    assert [type(e) for e in events] == [Head, End, Batch]
    assert joined(events) == data[len(one) :]
    assert events[-1] == Batch(one * 2 + msg(b"Z", b"I"), 3)
    assert replies.batch_limit == 0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.integers(0, len(_PLAIN_TRAFFIC) - 1),
    up_cuts=st.lists(st.integers(0, 1 << 16), max_size=30),
    down_cuts=st.lists(st.integers(0, 1 << 16), max_size=30),
    by_reply=st.booleans(),
)
def test_batched_requests_and_replies_are_what_the_general_path_frames(
    which: int, up_cuts: list[int], down_cuts: list[int], by_reply: bool
) -> None:
    """Request by request and reply by reply, over real traffic (simple
    queries, the extended protocol, prepared statements, pipelines with an
    error mid-way and several Syncs in flight) split anywhere, or where each
    reply ends as a server sends them: the requests a batch holds are those
    the general path frames, with the same plans and as many units; a
    batch of replies the same bytes as the replies it stands for;
    everything else the same events, and the transaction state the same."""
    up, down = _PLAIN_TRAFFIC[which]
    general = framers()
    slow = exchange_with([up], [down], general)
    down_chunks = _reply_chunks(up, down) if by_reply else splits(down, down_cuts)
    batched = framers()
    sent, got, plans = plain_exchange(splits(up, up_cuts), down_chunks, batched)
    assert joined(sent) == up
    assert joined(got) == down
    same_entries(entries(sent), entries(slow[0]), plans)
    same_entries(entries(got), entries(slow[1]), None)
    assert batched[0].session.status == general[0].session.status
    assert batched[0]._statements == general[0]._statements
    assert batched[0]._portals == general[0]._portals


def test_whole_recorded_connections_go_mostly_in_batches() -> None:
    """Fed whole, the recorded extended protocol goes nearly all in batches
    (the check above would also hold if nothing were batched)."""
    for what in ("pipeline mode", "raw extended protocol", "prepared statements"):
        up, down = next((u, d) for u, d, w in CONNECTIONS if w == what)
        slow = exchange([up], [down])
        sent, got, plans = plain_exchange([up], _reply_chunks(up, down), framers())
        requests = same_entries(entries(sent), entries(slow[0]), plans)
        replies = same_entries(entries(got), entries(slow[1]), None)
        assert requests == replies == len(entries(slow[0])) - 2 - (what != "raw extended protocol")
