"""SMTP framing, matching and error replies, without a socket.

The two framers of a connection share what the server said (354 to DATA,
220 to STARTTLS), so the recorded traffic is replayed step by step as the
engine would: the client's bytes, each request expected, then the server's.
However the bytes of each step are split, the framed messages are the same
and the events' bytes are exactly the bytes fed; random bytes never raise.
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
from pytest_vaurien.protocols.smtp import (
    MAX_LINE,
    PROTOCOL,
    SMTP,
    SmtpRequestFramer,
    SmtpResponseFramer,
    check_error_options,
    error_reply,
    parse_match,
)
from tests.protocols.smtp_traffic import RECORDED


def joined(events: Iterable[Event]) -> bytes:
    return b"".join(event.data for event in events)


def split(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in pairwise(points) if b > a]


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


def converse(
    steps: Sequence[tuple[bytes, bytes]], cuts: Sequence[int] = ()
) -> tuple[list[Event], list[Event]]:
    """Replay ``steps`` through a linked pair of framers, as the engine would."""
    requests, replies = PROTOCOL.framers()
    up: list[Event] = []
    down: list[Event] = []
    for client, server in steps:
        for chunk in split(client, cuts):
            events = requests.feed(chunk)
            for event in events:
                if isinstance(event, Head):
                    replies.expect(event.info)
            up += events
        for chunk in split(server, cuts):
            down += replies.feed(chunk)
    return up + requests.feed(b""), down + replies.feed(b"")


def heads(events: Iterable[Event]) -> list[MessageInfo]:
    return [e.info for e in events if isinstance(e, Head)]


def command(raw: bytes) -> MessageInfo:
    (info,) = heads(SmtpRequestFramer().feed(raw))
    return info


# -- framing ----------------------------------------------------------------------


def test_the_protocol_is_registered() -> None:
    assert wire_protocol("smtp") is PROTOCOL is SMTP
    assert PROTOCOL.name == "smtp"


def test_the_recorded_session_is_framed_step_by_step() -> None:
    up, down = converse(RECORDED)
    assert joined(up) == b"".join(c for c, _ in RECORDED)
    assert joined(down) == b"".join(s for _, s in RECORDED)
    assert [i.summary for i in heads(up)] == [
        "EHLO client.example",
        "NOOP",
        "MAIL FROM:<alice@example.com> SIZE=120",
        "RCPT TO:<bob@example.org>",
        "RCPT TO:<carol@example.net>",
        "DATA",
        "BODY",
        "RSET",
        "VRFY bob",
        "HELP",
        "BOGUS",
        "DATA",
        "MAIL FROM:<a@b.c>",
        "RCPT TO:<d@e.f>",
        "DATA",
        "BODY",
        "STARTTLS",
        "AUTH PLAIN",  # the mechanism, never the credentials
        "HELO again",
        "QUIT",
    ]
    codes = [i.summary for i in heads(down)]
    assert codes[:8] == ["220", "250", "250", "250", "250", "250", "354", "250"]
    assert len(codes) == len(heads(up)) + 1  # and the greeting
    assert heads(down)[0].fields["unsolicited"] is True
    assert not any(i.fields["unsolicited"] for i in heads(down)[1:])
    assert not any(isinstance(e, Switched) for e in up + down[:-1])


def test_the_handshake_is_ehlo_and_helo() -> None:
    assert command(b"EHLO me\r\n").fields["handshake"] is True
    assert command(b"helo me\r\n").fields == {"verb": "HELO", "arg": "me", "handshake": True}
    assert "handshake" not in command(b"MAIL FROM:<a@b>\r\n").fields


def test_a_body_runs_to_the_lone_dot_and_dots_inside_do_not_end_it() -> None:
    body = b"Subject: x\r\n\r\n..\r\n.x\r\nend\r\n.\r\n"
    up, _ = converse([(b"", b"220 hi\r\n"), (b"DATA\r\n", b"354 go\r\n"), (body, b"250 OK\r\n")])
    assert messages(up) == [("DATA", b"DATA\r\n"), ("BODY", body)]
    body_head = heads(up)[1]
    assert body_head.fields == {"verb": "BODY", "arg": "", "error_after": True}
    # split byte by byte, the terminator is still found across feeds
    up, _ = converse(
        [(b"", b"220 hi\r\n"), (b"DATA\r\n", b"354 go\r\n"), (body, b"250 OK\r\n")],
        cuts=range(len(body)),
    )
    assert messages(up) == [("DATA", b"DATA\r\n"), ("BODY", body)]


def test_an_empty_body_is_just_the_dot() -> None:
    up, _ = converse([(b"", b"220 hi\r\n"), (b"DATA\r\n", b"354 go\r\n"), (b".\r\nQUIT\r\n", b"")])
    assert messages(up) == [("DATA", b"DATA\r\n"), ("BODY", b".\r\n"), ("QUIT", b"QUIT\r\n")]


def test_no_body_after_a_refused_data_or_one_the_proxy_answered() -> None:
    up, _ = converse([(b"", b"220 hi\r\n"), (b"DATA\r\n", b"503 no\r\n"), (b"NOOP\r\n", b"")])
    assert [i.summary for i in heads(up)] == ["DATA", "NOOP"]
    requests = SmtpRequestFramer()
    (data,) = heads(requests.feed(b"DATA\r\n"))
    requests.answered(data)  # a fault on DATA: the proxy answered instead of 354
    assert [i.summary for i in heads(requests.feed(b"RSET\r\n"))] == ["RSET"]


def test_data_and_starttls_ask_the_engine_never_to_forward_them_under_error() -> None:
    assert command(b"DATA\r\n").fields["error_after"] is False
    assert command(b"STARTTLS\r\n").fields["error_after"] is False


def test_bytes_before_the_reply_to_data_drop_to_plain_relay() -> None:
    up, _ = converse([(b"DATA\r\nSubject: x\r\n", b"")])
    assert messages(up)[1] == ("switched: SMTP: client sent before the reply to DATA", b"")
    assert joined(up) == b"DATA\r\nSubject: x\r\n"


def test_starttls_accepted_switches_both_sides() -> None:
    hello = b"\x16\x03\x01\x00\xa5\x01\x00"
    up, down = converse(
        [(b"", b"220 hi\r\n"), (b"STARTTLS\r\n", b"220 go ahead\r\n\x16\x03"), (hello, b"")]
    )
    assert [type(e) for e in up] == [Head, End, Switched, Opaque]
    assert up[2] == Switched("SMTP STARTTLS")
    assert down[-1] == Switched("SMTP STARTTLS", b"\x16\x03")
    refused, _ = converse(
        [(b"", b"220 hi\r\n"), (b"STARTTLS\r\n", b"454 TLS not available\r\n"), (b"NOOP\r\n", b"")]
    )
    assert [i.summary for i in heads(refused)] == ["STARTTLS", "NOOP"]


def test_auth_continuation_lines_are_never_shown() -> None:
    up, _ = converse(
        [
            (b"", b"220 hi\r\n"),
            (b"AUTH LOGIN\r\n", b"334 VXNlcm5hbWU6\r\n"),
            (b"Ym9i\r\n", b"334 UGFzc3dvcmQ6\r\n"),
            (b"c2VjcmV0\r\n", b"235 ok\r\n"),
            (b"NOOP\r\n", b"250 OK\r\n"),
        ]
    )
    assert [i.summary for i in heads(up)] == ["AUTH LOGIN", "AUTH ...", "AUTH ...", "NOOP"]
    assert heads(up)[1].fields == {"verb": "AUTH", "arg": "", "continuation": True}


def test_bdat_carries_a_counted_chunk() -> None:
    raw = b"BDAT 7 LAST\r\n.\r\nabcdNOOP\r\n"
    events = SmtpRequestFramer().feed(raw)
    assert messages(events) == [("BDAT 7 LAST", b"BDAT 7 LAST\r\n.\r\nabcd"), ("NOOP", b"NOOP\r\n")]


def test_multiline_replies_end_at_the_line_without_a_hyphen() -> None:
    raw = b"250-localhost\r\n250-SIZE 1\r\n250 HELP\r\n250 OK\r\n"
    events = SmtpResponseFramer().feed(raw)
    assert [type(e) for e in events] == [Head, Part, End, Head, End]
    assert messages(events) == [("250", raw[:-8]), ("250", b"250 OK\r\n")]


def test_what_is_not_a_reply_drops_to_plain_relay() -> None:
    assert SmtpResponseFramer().feed(b"HTTP/1.1 200 OK\r\n") == [
        Switched("not an SMTP reply", b"HTTP/1.1 200 OK\r\n")
    ]
    events = SmtpRequestFramer().feed(b"x" * (MAX_LINE + 1))
    assert [type(e) for e in events] == [Switched]
    assert SmtpRequestFramer().feed(b"NOOP") == []
    framer = SmtpRequestFramer()
    assert framer.feed(b"NO") + framer.feed(b"") == [Switched("closed mid-command", b"NO")]


def test_the_protocol_links_the_framers_it_makes_in_turn() -> None:
    requests, replies = PROTOCOL.framers()
    assert requests.session is replies.session
    other = PROTOCOL.response_framer()  # made alone: a session of its own
    assert other.session is not requests.session


# -- properties ---------------------------------------------------------------------

cut_points = st.lists(st.integers(min_value=0, max_value=1 << 12), max_size=30)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=cut_points, upto=st.integers(min_value=1, max_value=len(RECORDED)))
def test_the_session_split_anyhow_frames_the_same(cuts: list[int], upto: int) -> None:
    steps = RECORDED[:upto]
    whole_up, whole_down = converse(steps)
    up, down = converse(steps, cuts)
    assert joined(up) == b"".join(c for c, _ in steps)
    assert joined(down) == b"".join(s for _, s in steps)
    assert messages(up) == messages(whole_up)
    assert messages(down) == messages(whole_down)


def framing_holds(events: list[Event], data: bytes) -> None:
    assert joined(events) == data
    kinds = [type(e) for e in events]
    if Switched in kinds:
        assert set(kinds[kinds.index(Switched) + 1 :]) <= {Opaque}


prefixes = st.sampled_from(
    [b"", b"MAIL FROM:<a@b>\r\n", b"DATA\r\n", b"BDAT 5\r\n", b"250-x\r\n", b"354 go\r\n"]
)


@settings(max_examples=500)
@given(prefix=prefixes, noise=st.binary(max_size=300), cuts=cut_points, body=st.booleans())
def test_random_bytes_never_raise_and_lose_nothing(
    prefix: bytes, noise: bytes, cuts: list[int], body: bool
) -> None:
    data = prefix + noise
    for make in (SmtpRequestFramer, SmtpResponseFramer):
        framers: list[Any] = [make(), make()]
        if body:  # as if the server had said 354 to a DATA
            for framer in framers:
                framer.session.data = 1
        whole = framers[0].feed(data) + framers[0].feed(b"")
        events: list[Event] = []
        for chunk in [*split(data, cuts), b""]:
            events += framers[1].feed(chunk)
        framing_holds(whole, data)
        framing_holds(events, data)
        assert messages(events) == messages(whole)


# -- matching and errors ----------------------------------------------------------------


def matches(match: object, raw: bytes) -> bool:
    return parse_match(match, "rule")(command(raw))


def test_match_forms() -> None:
    assert matches("RCPT", b"RCPT TO:<a@b>\r\n")
    assert matches("rcpt", b"rcpt to:<a@b>\r\n")
    assert matches("MAIL|RCPT", b"MAIL FROM:<a@b>\r\n")
    assert not matches("MAIL|RCPT", b"DATA\r\n")
    assert matches("RCPT <.*@example.org>", b"RCPT TO:<bob@example.org>\r\n")
    assert not matches("RCPT <.*@example.org>", b"RCPT TO:<bob@example.net>\r\n")
    assert matches({"verb": ["BODY"]}, b"\r\n") is False
    assert parse_match({"verb": "BODY"}, "rule")(MessageInfo("BODY", {"verb": "BODY"}))
    assert matches({"arg": "SIZE=[0-9]+"}, b"MAIL FROM:<a@b> SIZE=10\r\n")


@pytest.mark.parametrize("bad", ["", "RC1PT", "RCPT (", {"verb": 3}, {"args": "x"}, 7, {"arg": ""}])
def test_bad_matches_name_the_rule(bad: object) -> None:
    with pytest.raises(ConfigError, match="rule"):
        parse_match(bad, "rule")


def test_the_error_reply() -> None:
    info = command(b"RCPT TO:<a@b>\r\n")
    assert error_reply({}, info) == (b"451 4.3.0 injected by vaurien\r\n", "451")
    assert PROTOCOL.error_reply({"code": 550, "text": "5.1.1 no such user"}, info) == (
        b"550 5.1.1 no such user\r\n",
        "550",
    )
    check_error_options({"code": "421", "text": ""}, "rule")
    for bad in ({"code": 250}, {"code": True}, {"text": "a\nb"}):
        with pytest.raises(ConfigError, match="rule: "):
            PROTOCOL.check_error_options(bad, "rule")
