"""SMTP through the real proxy: smtplib against aiosmtpd.

Commands and message bodies are units; the greeting and EHLO are the
handshake, counted by no rule that does not name them.
"""

from __future__ import annotations

import smtplib

import pytest

from pytest_vaurien import Proxy
from pytest_vaurien.rules import Rule

MESSAGE = "Subject: hello\r\n\r\nHello from vaurien.\r\n.dot line\r\n"


def connect(proxy: Proxy) -> smtplib.SMTP:
    host, port = proxy.address
    return smtplib.SMTP(host, port, timeout=5)


def delivered(smtp_server) -> list[object]:
    return smtp_server.extra["handler"].messages


def test_a_rule_on_rcpt_refuses_that_recipient_only(smtp_server) -> None:
    rules = [Rule("error", match="RCPT <.*@example.org>", name="org")]
    with Proxy(smtp_server.distant, protocol="smtp", rules=rules) as proxy:
        before = len(delivered(smtp_server))
        with connect(proxy) as smtp:
            refused = smtp.sendmail("a@example.com", ["b@example.org", "c@example.net"], MESSAGE)
            assert refused == {"b@example.org": (451, b"4.3.0 injected by vaurien")}
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                smtp.sendmail("a@example.com", ["d@example.org"], MESSAGE)
        assert len(delivered(smtp_server)) == before + 1
        assert (proxy.rule("org").matched, proxy.rule("org").fired) == (2, 2)
        requests = [r.request for r in proxy.exchanges]
    assert "EHLO" not in " ".join(requests)  # the handshake is no unit
    # smtplib writes "MAIL FROM:" before Python 3.13 and "MAIL from:" since
    assert requests[0].upper().startswith("MAIL FROM:<A@EXAMPLE.COM>")
    assert [request.upper() for request in requests[1:5]] == [
        "RCPT TO:<B@EXAMPLE.ORG>",
        "RCPT TO:<C@EXAMPLE.NET>",
        "DATA",
        "BODY",
    ]


def test_a_rule_without_match_does_not_count_the_handshake(smtp_server) -> None:
    rules = [Rule("dummy", name="all")]
    with Proxy(smtp_server.distant, protocol="smtp", rules=rules) as proxy:
        with connect(proxy) as smtp:
            smtp.ehlo()
            smtp.noop()
        # NOOP and QUIT; not the greeting, not EHLO
        assert proxy.rule("all").matched == 2
        assert [(r.request, r.reply) for r in proxy.exchanges] == [("NOOP", "250"), ("QUIT", "221")]


def test_a_fault_on_data_answers_instead_of_354(smtp_server) -> None:
    rules = [Rule("error", match="DATA", code=554, text="5.3.0 no thanks")]
    with Proxy(smtp_server.distant, protocol="smtp", rules=rules) as proxy:
        before = len(delivered(smtp_server))
        with connect(proxy) as smtp:
            with pytest.raises(smtplib.SMTPDataError) as caught:
                smtp.sendmail("a@example.com", ["b@example.net"], MESSAGE)
            assert caught.value.smtp_code == 554
            smtp.rset()  # the server never entered its data phase: it still answers
            assert smtp.noop()[0] == 250
        assert len(delivered(smtp_server)) == before


def test_an_error_on_the_body_after_delivery_is_the_duplicate_case(smtp_server) -> None:
    rules = [Rule("error", match="BODY", after=True)]
    with Proxy(smtp_server.distant, protocol="smtp", rules=rules) as proxy:
        before = len(delivered(smtp_server))
        with connect(proxy) as smtp:
            with pytest.raises(smtplib.SMTPDataError) as caught:
                smtp.sendmail("a@example.com", ["b@example.net"], MESSAGE)
            assert caught.value.smtp_code == 451
            assert smtp.noop()[0] == 250
        # the server accepted the message; the client was told it failed
        assert len(delivered(smtp_server)) == before + 1
        assert [r.reply for r in proxy.exchanges if r.request == "BODY"] == ["451"]


def test_a_mail_from_refused(smtp_server) -> None:
    rules = [Rule("error", match={"verb": "MAIL", "arg": "alice"}, code=550, text="5.7.1 no")]
    with (
        Proxy(smtp_server.distant, protocol="smtp", rules=rules) as proxy,
        connect(proxy) as smtp,
    ):
        with pytest.raises(smtplib.SMTPSenderRefused):
            smtp.sendmail("alice@example.com", ["b@example.net"], MESSAGE)
        smtp.rset()
        assert smtp.sendmail("bob@example.com", ["b@example.net"], MESSAGE) == {}


def test_starttls_refused_by_the_server_keeps_framing(smtp_server) -> None:
    """aiosmtpd without TLS answers 454: no switch, the session goes on framed."""
    rules = [Rule("dummy", name="all")]
    with Proxy(smtp_server.distant, protocol="smtp", rules=rules) as proxy:
        with connect(proxy) as smtp:
            smtp.ehlo()
            code, _ = smtp.docmd("STARTTLS")
            assert code in (454, 502)
            assert smtp.noop()[0] == 250
        assert [r.request for r in proxy.exchanges][:2] == ["STARTTLS", "NOOP"]
        assert all(c.plain is None for c in proxy.connections)


def test_an_error_on_the_body_always_acts_after_delivery(smtp_server) -> None:
    rules = [Rule("error", match="BODY")]
    before = len(delivered(smtp_server))
    with Proxy(smtp_server.distant, protocol="smtp", rules=rules) as proxy:
        host, port = proxy.address
        with smtplib.SMTP(host, port, timeout=1) as smtp:
            with pytest.raises(smtplib.SMTPDataError):
                smtp.sendmail("a@example.com", ["b@example.net"], MESSAGE)
            assert smtp.noop()[0] == 250
        assert len(delivered(smtp_server)) == before + 1
