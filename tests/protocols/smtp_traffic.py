"""aiosmtpd traffic, recorded: (client bytes, server bytes) per step.

Recorded over one connection, a step at a time; the first step is the
server's greeting, answering nothing.
"""

from __future__ import annotations

RECORDED: list[tuple[bytes, bytes]] = [
    (b"", b"220 localhost Python SMTP 1.4.6\r\n"),
    (
        b"EHLO client.example\r\n",
        b"250-localhost\r\n250-SIZE 33554432\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 HELP\r\n",
    ),
    (b"NOOP\r\n", b"250 OK\r\n"),
    (b"MAIL FROM:<alice@example.com> SIZE=120\r\n", b"250 OK\r\n"),
    (b"RCPT TO:<bob@example.org>\r\n", b"250 OK\r\n"),
    (b"RCPT TO:<carol@example.net>\r\n", b"250 OK\r\n"),
    (b"DATA\r\n", b"354 End data with <CR><LF>.<CR><LF>\r\n"),
    (
        b"Subject: hi\r\nFrom: alice@example.com\r\n\r\nHello.\r\n..a line with a dot\r\n.\r\n",
        b"250 OK\r\n",
    ),
    (b"RSET\r\n", b"250 OK\r\n"),
    (b"VRFY bob\r\n", b"252 Cannot VRFY user, but will accept message and attempt delivery\r\n"),
    (
        b"HELP\r\n",
        b"250 Supported commands: AUTH DATA EHLO HELO HELP MAIL NOOP QUIT RCPT RSET VRFY\r\n",
    ),
    (b"BOGUS\r\n", b'500 Error: command "BOGUS" not recognized\r\n'),
    (b"DATA\r\n", b"503 Error: need RCPT command\r\n"),
    (
        b"MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n",
        b"250 OK\r\n250 OK\r\n354 End data with <CR><LF>.<CR><LF>\r\n",
    ),
    (b".\r\n", b"250 OK\r\n"),
    (b"STARTTLS\r\n", b"454 TLS not available\r\n"),
    (
        b"AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n",
        b"538 5.7.11 Encryption required for requested authentication mechanism\r\n",
    ),
    (b"HELO again\r\n", b"250 localhost\r\n"),
    (b"QUIT\r\n", b"221 Bye\r\n"),
]
