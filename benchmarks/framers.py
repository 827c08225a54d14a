"""Is every framer linear in the bytes it sees? Socket-free, one protocol at a time.

    python benchmarks/framers.py [--quick] [--only redis,http] [--repeat 3]
                                 [--chunks 65536,1024] [--json results.json]

About 20 s (``--quick``: 2 s, N = 400 and S = 256 KiB instead of 2000 and
1 MiB). No socket, no server: only the framers of ``pytest_vaurien.protocols``.

For each protocol (http, redis, postgresql, mysql, memcache, smtp) the
framer pair of one connection (``WireProtocol.framers()``) is fed traffic
built here in the protocol's wire format, in the order the engine feeds it
(``engine/exchange.py``): a chunk of the client's bytes, each request head
``expect``-ed on the response framer, then the server's bytes that answer
what the client has sent so far. Handshakes come first, in the order the
protocol speaks (the server greets first for mysql and smtp), and a client
waits where the protocol makes it wait (SMTP's body after 354, MySQL's login
after the greeting).

Two shapes, each at two sizes ten times apart:

- ``small``: many small exchanges (Redis SET/GET, PostgreSQL simple
  queries with a row, HTTP keep-alive GETs, memcache set/get with some
  ``noreply``, MySQL COM_QUERY with a row or an OK, SMTP mails of many
  RCPTs and short bodies), N and 10 x N exchanges;
- ``big``: one big message each way where the protocol has one (a Redis
  SET and GET of a big value, an HTTP chunked upload and download, a
  PostgreSQL INSERT and a DataRow of a big text, a MySQL query and row of a
  big text, a memcache set and get of a big value, an SMTP body of many
  lines), S and 10 x S bytes;

each fed in 64 KiB chunks (what the proxy reads) and in 1 KiB chunks (a
slow sender). Redis and PostgreSQL run twice: ``framed`` (a message at a
time, as when records are kept or rules apply) and ``batch`` (the plain
path of ``100:dummy`` with no records, which the engine turns on with
``batch``/``batch_limit``).

A first run of each measure keeps the events and checks that they rebuild
both streams byte for byte, that as many requests and replies came out as
were sent, and that no framer switched to plain relay (a framer that gave
up would look fast): any failure stops the benchmark with what differed.
The timed runs then drop the events, as the engine does (a growing list of
them would time the garbage collector); the best of ``--repeat`` is kept,
each direction timed apart.

How to read the table: ``us/MB`` is microseconds of framing per 10^6 bytes
of traffic (both directions), at the smaller and the larger size; ``x10``
is their ratio: about 1 means linear; a framer whose work grows with what
it has seen before (rescanning a buffer, copying the rest of it per
message) shows about 10. ``req`` and ``rep``: the same ratio for the
request framer and the response framer alone (noisy where a side carries
little, as SMTP's replies). ``us/exch`` (small shape): the cost per
exchange at each size. The ``(hold)`` rows frame nothing: they append a
big message's chunks to a bytearray and copy it out, as the framers that
hold a message whole do (PostgreSQL, MySQL); their x10 is what memory
alone does between the two sizes (caches, and fresh pages once the
allocator maps big blocks afresh), often 3 to 5: a held-whole framer
whose x10 stays near that row's is linear. Compare the 64 KiB and 1 KiB
rows of the small shape too: a framer quadratic within one feed stays
linear over a stream cut in fixed chunks, but costs more per exchange in
big chunks than in small ones (``--chunks 1024,65536,262144`` shows it).
"""

from __future__ import annotations

import argparse
import gc
import json
import struct
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_vaurien.protocols import wire_protocol
from pytest_vaurien.protocols.base import Batch, End, Event, Head, Opaque, Switched

PROTOCOLS = ("http", "redis", "postgresql", "mysql", "memcache", "smtp")
#: Protocols whose framers have the engine's plain path (``batch``).
BATCHING = ("redis", "postgresql")
CHUNKS = (64 * 1024, 1024)
#: What a request must not carry to go on the plain path (exchange._NOT_PLAIN).
NOT_PLAIN = ("handshake", "substitute", "noreply")


@dataclass
class Traffic:
    """One connection's messages each way, and who waits for whom.

    ``answers[j]``: the client message server message ``j`` answers (-1:
    none, a greeting). ``waits[i]``: the server message client message ``i``
    is sent only after (-1: none). Every message is one head when framed.
    """

    client: list[bytes] = field(default_factory=list)
    server: list[bytes] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    waits: list[int] = field(default_factory=list)
    exchanges: int = 0  # the units: requests that are not handshake

    def send(self, message: bytes, after: int | None = None) -> int:
        """The client sends ``message`` (after server message ``after`` if given)."""
        self.client.append(message)
        self.waits.append(-1 if after is None else after)
        return len(self.client) - 1

    def reply(self, message: bytes, to: int = -1) -> int:
        """The server sends ``message``, answering client message ``to``."""
        self.server.append(message)
        self.answers.append(to)
        return len(self.server) - 1

    @property
    def size(self) -> int:
        return sum(map(len, self.client)) + sum(map(len, self.server))


# -- traffic, per protocol -------------------------------------------------


def http_small(n: int) -> Traffic:
    """Keep-alive GETs for distinct ids, each answered by a small JSON reply."""
    t = Traffic()
    for i in range(n):
        r = t.send(
            b"GET /api/items/%d HTTP/1.1\r\nHost: bench.example\r\nUser-Agent: bench/1.0\r\n"
            b"Accept: application/json\r\nAccept-Encoding: gzip, deflate\r\n\r\n" % i
        )
        body = b'{"id": %d, "name": "item %d", "ok": true}' % (i, i)
        t.reply(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body),
            r,
        )
    t.exchanges = n
    return t


def _chunked(size: int, piece: int = 16 * 1024) -> bytes:
    out = []
    for start in range(0, size, piece):
        length = min(piece, size - start)
        out.append(b"%x\r\n%s\r\n" % (length, b"z" * length))
    out.append(b"0\r\n\r\n")
    return b"".join(out)


def http_big(size: int) -> Traffic:
    """A chunked upload of ``size`` bytes, then a chunked download of as many."""
    t = Traffic()
    r = t.send(
        b"POST /upload HTTP/1.1\r\nHost: bench.example\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/octet-stream\r\n\r\n" + _chunked(size)
    )
    t.reply(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", r)
    r = t.send(b"GET /download HTTP/1.1\r\nHost: bench.example\r\n\r\n")
    t.reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunked(size), r)
    t.exchanges = 2
    return t


def resp(*args: bytes) -> bytes:
    """A Redis command as a multibulk array."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def _redis_hello(t: Traffic) -> None:
    """redis-py's handshake: CLIENT SETINFO twice (outside the rules)."""
    t.reply(b"+OK\r\n", t.send(resp(b"CLIENT", b"SETINFO", b"LIB-NAME", b"redis-py")))
    t.reply(b"+OK\r\n", t.send(resp(b"CLIENT", b"SETINFO", b"LIB-VER", b"5.2.1")))


def redis_small(n: int) -> Traffic:
    """A pipeline of SET then GET of 16-byte values."""
    t = Traffic()
    _redis_hello(t)
    for i in range(n // 2):
        key, value = b"key:%08d" % i, b"value-%010d" % i
        t.reply(b"+OK\r\n", t.send(resp(b"SET", key, value)))
        t.reply(b"$%d\r\n%s\r\n" % (len(value), value), t.send(resp(b"GET", key)))
    t.exchanges = n // 2 * 2
    return t


def redis_big(size: int) -> Traffic:
    """A SET of a ``size``-byte value, then its GET."""
    t = Traffic()
    _redis_hello(t)
    value = b"v" * size
    t.reply(b"+OK\r\n", t.send(resp(b"SET", b"big", value)))
    t.reply(b"$%d\r\n%s\r\n" % (size, value), t.send(resp(b"GET", b"big")))
    t.exchanges = 2
    return t


def pg(kind: bytes, body: bytes = b"") -> bytes:
    """A PostgreSQL message: type, length, body."""
    return kind + struct.pack(">I", len(body) + 4) + body


def _pg_fields(*names: bytes) -> bytes:
    """A RowDescription of text columns."""
    body = struct.pack(">H", len(names))
    for i, name in enumerate(names):
        body += name + b"\0" + struct.pack(">IHIhih", 16384, i + 1, 25, -1, -1, 0)
    return pg(b"T", body)


def _pg_row(*values: bytes) -> bytes:
    return pg(
        b"D",
        struct.pack(">H", len(values)) + b"".join(struct.pack(">I", len(v)) + v for v in values),
    )


def _pg_startup(t: Traffic) -> None:
    """StartupMessage (trust authentication), answered up to ReadyForQuery."""
    params = b"user\0bench\0database\0bench\0application_name\0bench\0\0"
    r = t.send(struct.pack(">II", 8 + len(params), 196608) + params)
    t.reply(
        pg(b"R", struct.pack(">I", 0))
        + pg(b"S", b"client_encoding\0UTF8\0")
        + pg(b"S", b"server_version\x0015.6\0")
        + pg(b"S", b"TimeZone\0Etc/UTC\0")
        + pg(b"K", struct.pack(">II", 4242, 123456789))
        + pg(b"Z", b"I"),
        r,
    )


def _pg_query(sql: bytes) -> bytes:
    return pg(b"Q", sql + b"\0")


def postgresql_small(n: int) -> Traffic:
    """Simple queries each returning one small row."""
    t = Traffic()
    _pg_startup(t)
    fields = _pg_fields(b"id", b"name")
    for i in range(n):
        r = t.send(_pg_query(b"SELECT id, name FROM users WHERE id = %d" % i))
        t.reply(
            fields + _pg_row(b"%d" % i, b"user %d" % i) + pg(b"C", b"SELECT 1\0") + pg(b"Z", b"I"),
            r,
        )
    t.exchanges = n
    return t


def postgresql_big(size: int) -> Traffic:
    """An INSERT of a ``size``-byte text literal, then a SELECT of it (one DataRow)."""
    t = Traffic()
    _pg_startup(t)
    text = b"t" * size
    r = t.send(_pg_query(b"INSERT INTO docs (body) VALUES ('" + text + b"')"))
    t.reply(pg(b"C", b"INSERT 0 1\0") + pg(b"Z", b"I"), r)
    r = t.send(_pg_query(b"SELECT body FROM docs WHERE id = 1"))
    t.reply(
        _pg_fields(b"body") + _pg_row(text) + pg(b"C", b"SELECT 1\0") + pg(b"Z", b"I"),
        r,
    )
    t.exchanges = 2
    return t


MAX_PAYLOAD = 0xFFFFFF


def my(seq: int, payload: bytes) -> tuple[bytes, int]:
    """One logical MySQL packet (split in physical packets of 16 MiB - 1,
    with an empty one after an exact multiple), and the next sequence id."""
    out = []
    while True:
        part, payload = payload[:MAX_PAYLOAD], payload[MAX_PAYLOAD:]
        out.append(len(part).to_bytes(3, "little") + bytes([seq & 0xFF]) + part)
        seq += 1
        if len(part) < MAX_PAYLOAD:
            return b"".join(out), seq


def _lenenc(value: int) -> bytes:
    if value < 0xFB:
        return bytes([value])
    if value < 1 << 16:
        return b"\xfc" + value.to_bytes(2, "little")
    if value < 1 << 24:
        return b"\xfd" + value.to_bytes(3, "little")
    return b"\xfe" + value.to_bytes(8, "little")


def _lenstr(data: bytes) -> bytes:
    return _lenenc(len(data)) + data


_MY_OK = b"\x00\x00\x00\x02\x00\x00\x00"  # OK: no rows, no id, autocommit, no warning
_MY_EOF = b"\xfe\x00\x00\x02\x00"  # EOF: no warning, autocommit


def _mysql_handshake(t: Traffic) -> None:
    """The server's greeting, the client's login (waiting for it), the OK."""
    greeting = (
        b"\x0a8.0.36\0"
        + struct.pack("<I", 42)
        + b"abcdefgh\0"
        + struct.pack("<HBHH", 0xF7FF, 0x21, 0x0002, 0xDFFF)
        + bytes([21])
        + bytes(10)
        + b"ijklmnopqrst\0"
        + b"mysql_native_password\0"
    )
    hello = t.reply(my(0, greeting)[0])
    caps = (
        0x1 | 0x200 | 0x2000 | 0x8000 | 0x80000
    )  # long password, 4.1, transactions, secure, plugin
    login = (
        struct.pack("<IIB", caps, 1 << 24, 0x21)
        + bytes(23)
        + b"bench\0"
        + _lenstr(bytes(range(20)))
        + b"mysql_native_password\0"
    )
    r = t.send(my(1, login)[0], after=hello)
    t.reply(my(2, _MY_OK)[0], r)


def _my_column(name: bytes, type_: int = 0xFD) -> bytes:
    return (
        _lenstr(b"def")
        + _lenstr(b"bench")
        + _lenstr(b"users")
        + _lenstr(b"users")
        + _lenstr(name)
        + _lenstr(name)
        + b"\x0c"
        + struct.pack("<HIBHB", 0x21, 1 << 20, type_, 0, 0)
        + b"\0\0"
    )


def _my_result(names: Sequence[bytes], rows: Sequence[Sequence[bytes]]) -> bytes:
    """A text result set with classic EOF packets (the client did not set DEPRECATE_EOF)."""
    out, seq = [], 1
    packet, seq = my(seq, _lenenc(len(names)))
    out.append(packet)
    for name in names:
        packet, seq = my(seq, _my_column(name))
        out.append(packet)
    packet, seq = my(seq, _MY_EOF)
    out.append(packet)
    for row in rows:
        packet, seq = my(seq, b"".join(_lenstr(v) for v in row))
        out.append(packet)
    out.append(my(seq, _MY_EOF)[0])
    return b"".join(out)


def _my_query(sql: bytes) -> bytes:
    return my(0, b"\x03" + sql)[0]


def mysql_small(n: int) -> Traffic:
    """COM_QUERY: a SELECT of one row, then an UPDATE answered OK, in turn."""
    t = Traffic()
    _mysql_handshake(t)
    for i in range(n):
        if i % 2:
            r = t.send(_my_query(b"UPDATE users SET seen = NOW() WHERE id = %d" % i))
            t.reply(my(1, b"\x00\x01\x00\x02\x00\x00\x00")[0], r)
        else:
            r = t.send(_my_query(b"SELECT id, name FROM users WHERE id = %d" % i))
            t.reply(_my_result((b"id", b"name"), [(b"%d" % i, b"user %d" % i)]), r)
    t.exchanges = n
    return t


def mysql_big(size: int) -> Traffic:
    """An INSERT of a ``size``-byte literal, then a row of that text."""
    t = Traffic()
    _mysql_handshake(t)
    text = b"m" * size
    r = t.send(_my_query(b"INSERT INTO docs (body) VALUES ('" + text + b"')"))
    t.reply(my(1, b"\x00\x01\x01\x02\x00\x00\x00")[0], r)
    r = t.send(_my_query(b"SELECT body FROM docs WHERE id = 1"))
    t.reply(_my_result((b"body",), [(text,)]), r)
    t.exchanges = 2
    return t


def memcache_small(n: int) -> Traffic:
    """set then get of 16-byte values; one set in four is ``noreply`` (no reply comes)."""
    t = Traffic()
    for i in range(n // 2):
        key, value = b"key:%08d" % i, b"value-%010d" % i
        noreply = b" noreply" if i % 4 == 3 else b""
        r = t.send(b"set %s 0 0 %d%s\r\n%s\r\n" % (key, len(value), noreply, value))
        if not noreply:
            t.reply(b"STORED\r\n", r)
        t.reply(
            b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (key, len(value), value),
            t.send(b"get " + key + b"\r\n"),
        )
    t.exchanges = n // 2 * 2
    return t


def memcache_big(size: int) -> Traffic:
    """A set of a ``size``-byte value, then its get."""
    t = Traffic()
    value = b"c" * size
    t.reply(b"STORED\r\n", t.send(b"set big 0 0 %d\r\n%s\r\n" % (size, value)))
    t.reply(b"VALUE big 0 %d\r\n%s\r\nEND\r\n" % (size, value), t.send(b"get big\r\n"))
    t.exchanges = 2
    return t


_EHLO_REPLY = (
    b"250-mx.example\r\n250-PIPELINING\r\n250-SIZE 33554432\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
)


def _smtp_hello(t: Traffic) -> int:
    """The greeting, then EHLO (sent after it) and its reply; returns that reply."""
    greeting = t.reply(b"220 mx.example ESMTP ready\r\n")
    return t.reply(_EHLO_REPLY, t.send(b"EHLO client.example\r\n", after=greeting))


def _smtp_mail(t: Traffic, after: int, recipients: int, body: bytes) -> int:
    """MAIL, RCPTs and DATA pipelined after server message ``after``, the
    body after the 354; returns the reply to the body."""
    t.reply(
        b"250 2.1.0 OK\r\n", t.send(b"MAIL FROM:<alice@example.com> SIZE=%d\r\n" % len(body), after)
    )
    for k in range(recipients):
        t.reply(b"250 2.1.5 OK\r\n", t.send(b"RCPT TO:<user%d@example.org>\r\n" % k, after))
    go = t.reply(b"354 End data with <CR><LF>.<CR><LF>\r\n", t.send(b"DATA\r\n", after))
    return t.reply(b"250 2.0.0 OK queued as 1A2B3C\r\n", t.send(body, go))


def _smtp_quit(t: Traffic, after: int) -> None:
    t.reply(b"221 2.0.0 Bye\r\n", t.send(b"QUIT\r\n", after))


def smtp_small(n: int) -> Traffic:
    """Mails of 5 recipients and a short body each (8 exchanges a mail)."""
    t = Traffic()
    last = _smtp_hello(t)
    body = (
        b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: hello\r\n\r\n"
        b"Hi Bob,\r\n..a line that starts with a dot\r\nBye.\r\n.\r\n"
    )
    mails = max(1, n // 8)
    for _ in range(mails):
        last = _smtp_mail(t, last, 5, body)
    _smtp_quit(t, last)
    t.exchanges = len(t.client) - 1
    return t


def smtp_big(size: int) -> Traffic:
    """One mail whose body is ``size`` bytes of 78-byte lines (some dot-stuffed)."""
    t = Traffic()
    last = _smtp_hello(t)
    line = b"x" * 76 + b"\r\n"
    stuffed = b"." + b"y" * 75 + b"\r\n"  # a line starting with a dot, doubled (RFC 5321 4.5.2)
    lines = [stuffed if i % 50 == 49 else line for i in range(max(1, size // len(line)))]
    body = b"Subject: big\r\n\r\n" + b"".join(lines) + b".\r\n"
    last = _smtp_mail(t, last, 1, body)
    _smtp_quit(t, last)
    t.exchanges = len(t.client) - 1
    return t


BUILDERS: dict[tuple[str, str], Callable[[int], Traffic]] = {
    ("http", "small"): http_small,
    ("http", "big"): http_big,
    ("redis", "small"): redis_small,
    ("redis", "big"): redis_big,
    ("postgresql", "small"): postgresql_small,
    ("postgresql", "big"): postgresql_big,
    ("mysql", "small"): mysql_small,
    ("mysql", "big"): mysql_big,
    ("memcache", "small"): memcache_small,
    ("memcache", "big"): memcache_big,
    ("smtp", "small"): smtp_small,
    ("smtp", "big"): smtp_big,
}


# -- feeding as the engine does --------------------------------------------


def schedule(t: Traffic, chunk: int) -> list[tuple[bool, bytes]]:
    """The chunks each side sends, in order: a chunk of the client's bytes
    (no further than it may go before a reply it waits for), then every
    byte of the server's that answers what the client has sent so far."""
    client, server = b"".join(t.client), b"".join(t.server)
    cstart, sstart = _starts(t.client), _starts(t.server)
    cend = cstart[1:]
    send = sstart[1:]
    # server bytes each client message needs first; client bytes each server message needs
    need_s = [send[w] if w >= 0 else 0 for w in t.waits]
    need_c = [cend[a] if a >= 0 else 0 for a in t.answers]
    out: list[tuple[bool, bytes]] = []
    cp = sp = ci = sj = 0
    while cp < len(client) or sp < len(server):
        progressed = False
        while ci < len(t.client) and need_s[ci] <= sp:
            ci += 1
        climit = cstart[ci] if ci < len(t.client) else len(client)
        if cp < climit:
            take = min(chunk, climit - cp)
            out.append((True, client[cp : cp + take]))
            cp += take
            progressed = True
        while sj < len(t.server) and need_c[sj] <= cp:
            sj += 1
        slimit = sstart[sj] if sj < len(t.server) else len(server)
        while sp < slimit:
            take = min(chunk, slimit - sp)
            out.append((False, server[sp : sp + take]))
            sp += take
            progressed = True
        if not progressed:
            raise RuntimeError(f"traffic deadlock at client byte {cp}, server byte {sp}")
    return out


def _starts(messages: Sequence[bytes]) -> list[int]:
    starts = [0]
    for message in messages:
        starts.append(starts[-1] + len(message))
    return starts


#: Seconds spent feeding requests, and replies; the events of each side if kept.
Run = tuple[float, float, list[Event], list[Event]]


def run_framed(protocol: str, chunks: Sequence[tuple[bool, bytes]], keep: bool) -> Run:
    """The general path: every request head is expected on the response framer
    (but a ``noreply`` one, which exchange._expect leaves out). The events are
    kept only for the check: the engine drops them, and a growing list of
    them would make the garbage collector's work part of the measure."""
    wire = wire_protocol(protocol)
    assert wire is not None
    requests, replies = wire.framers()
    up: list[Event] = []
    down: list[Event] = []
    feed_up, feed_down, expect = requests.feed, replies.feed, replies.expect
    clock = time.perf_counter
    t_up = t_down = 0.0
    for to_backend, data in chunks:
        started = clock()
        if to_backend:
            events = feed_up(data)
            for event in events:
                if type(event) is Head and not event.info.fields.get("noreply"):
                    expect(event.info)
            t_up += clock() - started
            if keep:
                up += events
        else:
            events = feed_down(data)
            t_down += clock() - started
            if keep:
                down += events
    return t_up, t_down, up, down


def run_batch(protocol: str, chunks: Sequence[tuple[bool, bytes]], keep: bool) -> Run:
    """The plain path of ``100:dummy`` with no records, as exchange.py drives
    it: ``batch`` on the request framer; a Batch or a plain head expected in
    bulk (``expect_plain``) or alone; ``batch_limit`` set before each chunk
    of replies to the count of the plain run first in line, if none of its
    replies is under way."""
    wire = wire_protocol(protocol)
    assert wire is not None
    requests, replies = wire.framers()
    requests.batch = True  # type: ignore[attr-defined]
    up: list[Event] = []
    down: list[Event] = []
    feed_up, feed_down, expect = requests.feed, replies.feed, replies.expect
    expect_plain = replies.expect_plain  # type: ignore[attr-defined]
    # what the engine's queue holds: [count] for a plain run, None for an exchange
    pending: deque[list[int] | None] = deque()
    outgoing: list[int] | bool | None = False  # False: no reply under way
    clock = time.perf_counter
    t_up = t_down = 0.0
    for to_backend, data in chunks:
        started = clock()
        if to_backend:
            requests.batch = True  # type: ignore[attr-defined]
            events = feed_up(data)
            for event in events:
                kind = type(event)
                if kind is Batch:
                    count = event.count  # type: ignore[union-attr]
                    if pending and pending[-1] is not None:
                        pending[-1][0] += count
                    else:
                        pending.append([count])
                    expect_plain(count)
                elif kind is Head:
                    fields = event.info.fields  # type: ignore[union-attr]
                    if fields.keys().isdisjoint(NOT_PLAIN):
                        if pending and pending[-1] is not None:
                            pending[-1][0] += 1
                        else:
                            pending.append([1])
                        expect(event.info)  # type: ignore[union-attr]
                    elif not fields.get("noreply"):
                        pending.append(None)
                        expect(event.info)  # type: ignore[union-attr]
            t_up += clock() - started
            if keep:
                up += events
        else:
            head = pending[0] if pending and outgoing is False else None
            replies.batch_limit = head[0] if head is not None else 0  # type: ignore[attr-defined]
            events = feed_down(data)
            for event in events:
                kind = type(event)
                if kind is Batch:
                    run = pending[0]
                    assert run is not None
                    run[0] -= event.count  # type: ignore[union-attr]
                    if not run[0]:
                        pending.popleft()
                elif kind is Head:
                    if outgoing is False and pending and not event.interim:  # type: ignore[union-attr]
                        outgoing = pending[0]
                elif kind is End and outgoing is not False:
                    if outgoing is None:
                        pending.popleft()
                    else:
                        outgoing[0] -= 1  # type: ignore[index]
                        if not outgoing[0]:  # type: ignore[index]
                            pending.popleft()
                    outgoing = False
            t_down += clock() - started
            if keep:
                down += events
    return t_up, t_down, up, down


def check(name: str, t: Traffic, up: Sequence[Event], down: Sequence[Event]) -> None:
    """Fail loudly unless the events are the traffic: same bytes, as many
    messages, no switch to plain relay."""
    for side, events, messages in (("client", up, t.client), ("server", down, t.server)):
        for event in events:
            if isinstance(event, (Switched, Opaque)):
                raise SystemExit(
                    f"{name}: the {side} framer switched to plain relay: {event!r:.200}"
                )
        got = b"".join(event.data for event in events)
        want = b"".join(messages)
        if got != want:
            at = next(
                (i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
                min(len(got), len(want)),
            )
            raise SystemExit(
                f"{name}: the {side} events do not rebuild its bytes: {len(got)} bytes for "
                f"{len(want)}, first difference at {at}"
            )
        count = sum(
            event.count if isinstance(event, Batch) else 1
            for event in events
            if isinstance(event, (Batch, Head))
        )
        if count != len(messages):
            raise SystemExit(f"{name}: {count} {side} messages framed, {len(messages)} sent")


@dataclass
class Row:
    """One line of the table: a protocol, shape, chunk size and path at two sizes."""

    protocol: str
    shape: str
    chunk: int
    path: str
    sizes: tuple[int, int]  # exchanges (small) or bytes of the big message (big)
    traffic: tuple[int, int]  # bytes both ways
    exchanges: tuple[int, int]
    up: tuple[float, float]  # seconds feeding requests (and expecting them)
    down: tuple[float, float]  # seconds feeding replies

    @property
    def seconds(self) -> tuple[float, float]:
        return self.up[0] + self.down[0], self.up[1] + self.down[1]

    @property
    def us_per_mb(self) -> tuple[float, float]:
        return _per_mb(self.seconds, self.traffic)

    @property
    def ratio(self) -> float:
        small, large = self.us_per_mb
        return large / small

    def side_ratio(self, seconds: tuple[float, float]) -> float:
        """The x10 ratio of one direction alone."""
        return (seconds[1] / self.traffic[1]) / (seconds[0] / self.traffic[0])

    def as_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "shape": self.shape,
            "chunk": self.chunk,
            "path": self.path,
            "sizes": list(self.sizes),
            "traffic_bytes": list(self.traffic),
            "exchanges": list(self.exchanges),
            "seconds_requests": list(self.up),
            "seconds_replies": list(self.down),
            "us_per_mb": list(self.us_per_mb),
            "us_per_exchange": [
                s / e * 1e6 for s, e in zip(self.seconds, self.exchanges, strict=True)
            ],
            "ratio": self.ratio,
            "ratio_requests": self.side_ratio(self.up),
            "ratio_replies": self.side_ratio(self.down),
        }


def _per_mb(seconds: tuple[float, float], traffic: tuple[int, int]) -> tuple[float, float]:
    return seconds[0] / traffic[0] * 1e12, seconds[1] / traffic[1] * 1e12


def measure(
    protocol: str, shape: str, path: str, chunk: int, sizes: tuple[int, int], repeat: int
) -> Row:
    """Best-of-``repeat`` feeding time at both sizes, after a run whose events are checked."""
    runner = run_batch if path == "batch" else run_framed
    up, down, traffic, exchanges = [], [], [], []
    for size in sizes:
        t = BUILDERS[protocol, shape](size)
        chunks = schedule(t, chunk)
        name = f"{protocol} {shape} {path} {chunk // 1024} KiB chunks, size {size}"
        _, _, up_events, down_events = runner(protocol, chunks, True)
        check(name, t, up_events, down_events)
        del up_events, down_events
        best = (float("inf"), 0.0)
        for _ in range(repeat):
            gc.collect()
            t_up, t_down, _, _ = runner(protocol, chunks, False)
            if t_up + t_down < sum(best):
                best = (t_up, t_down)
        up.append(best[0])
        down.append(best[1])
        traffic.append(t.size)
        exchanges.append(t.exchanges)
    return Row(
        protocol, shape, chunk, path, sizes, (traffic[0], traffic[1]),
        (exchanges[0], exchanges[1]), (up[0], up[1]), (down[0], down[1]),
    )  # fmt: skip


def hold_control(chunk: int, sizes: tuple[int, int], repeat: int) -> Row:
    """What holding a big message whole costs by itself, with no framing: its
    chunks appended to a bytearray, then copied out twice (a slice, then
    ``bytes``), for a message each way. The PostgreSQL and MySQL framers
    hold a message until it is complete and copy it so; how this row's x10
    departs from 1 is what memory alone does at these sizes (caches, the
    allocator handing out fresh pages past its mmap threshold), not a framer."""
    seconds, traffic = [], []
    for size in sizes:
        data = b"h" * size
        best = float("inf")
        for _ in range(repeat):
            gc.collect()
            started = time.perf_counter()
            for _ in range(2):
                held = bytearray()
                for at in range(0, size, chunk):
                    held += data[at : at + chunk]
                whole = bytes(held[0 : len(held)])
                del held, whole
            best = min(best, time.perf_counter() - started)
        seconds.append(best)
        traffic.append(2 * size)
    return Row(
        "(hold)", "big", chunk, "copy", sizes, (traffic[0], traffic[1]), (2, 2),
        (seconds[0], seconds[1]), (0.0, 0.0),
    )  # fmt: skip


def _size(shape: str, value: int) -> str:
    if shape == "small":
        return f"{value} ex"
    return f"{value / 2**20:g} MiB" if value >= 2**20 else f"{value // 1024} KiB"


def table(rows: Sequence[Row]) -> str:
    """The rows as text: us/MB at both sizes, x10 overall and per direction."""
    lines = [
        f"{'protocol':<10} {'shape':<5} {'chunk':>5} {'path':<6} {'size':>10} {'us/MB':>7}"
        f" {'size':>10} {'us/MB':>7} {'x10':>5} {'req':>5} {'rep':>5}  us/exch",
    ]
    for row in rows:
        small, large = row.us_per_mb
        per = ""
        if row.shape == "small":
            per = " -> ".join(
                f"{s / e * 1e6:.2f}" for s, e in zip(row.seconds, row.exchanges, strict=True)
            )
        sides = (
            f"{row.side_ratio(row.up):>5.2f} {row.side_ratio(row.down):>5.2f}"
            if row.down[0]
            else f"{'':>5} {'':>5}"
        )
        lines.append(
            f"{row.protocol:<10} {row.shape:<5} {row.chunk // 1024:>3}Ki {row.path:<6}"
            f" {_size(row.shape, row.sizes[0]):>10} {small:>7.0f}"
            f" {_size(row.shape, row.sizes[1]):>10} {large:>7.0f} {row.ratio:>5.2f} {sides}  {per}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one run each")
    parser.add_argument("--only", help="protocols, comma-separated (default: all)")
    parser.add_argument("--repeat", type=int, help="timed runs per measure, best kept (default 3)")
    parser.add_argument(
        "--chunks", help="chunk sizes in bytes, comma-separated (default: 65536,1024)"
    )
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    only = args.only.split(",") if args.only else list(PROTOCOLS)
    unknown = sorted(set(only) - set(PROTOCOLS))
    if unknown:
        parser.error(
            f"--only: unknown protocol(s) {', '.join(unknown)}; known: {', '.join(PROTOCOLS)}"
        )
    chunks = tuple(int(c) for c in args.chunks.split(",")) if args.chunks else CHUNKS
    n, s = (400, 256 * 1024) if args.quick else (2000, 1 << 20)
    repeat = args.repeat or (1 if args.quick else 3)
    rows = []
    for protocol in only:
        for shape, base in (("small", n), ("big", s)):
            for path in ("framed", "batch") if protocol in BATCHING else ("framed",):
                for chunk in chunks:
                    print(f"{protocol} {shape} {path} {chunk} B chunks", file=sys.stderr)
                    rows.append(measure(protocol, shape, path, chunk, (base, base * 10), repeat))
    rows.extend(hold_control(chunk, (s, s * 10), repeat) for chunk in chunks)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps([row.as_dict() for row in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
