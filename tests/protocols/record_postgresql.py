"""Record real PostgreSQL traffic for the framer tests (a script, not a test).

Starts PostgreSQL (tests/backends.py) behind a recording tap on localhost,
drives psycopg through it (simple and extended queries, prepared statements,
pipeline mode, errors, notices, LISTEN/NOTIFY, COPY), then a raw client for
what psycopg does not send (several Syncs in flight, Describe and Close of a
statement, Execute with a row limit, an empty query, Flush alone), and
writes what each connection carried, both ways, to ``postgresql_traffic.py``
beside this file:

    python -m tests.protocols.record_postgresql
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from tests import backends


class Tap:
    """Relays one connection at a time to ``target``, keeping both directions."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.up = bytearray()
        self.down = bytearray()

    def run_once(self, client: Callable[[int], None]) -> tuple[bytes, bytes]:
        self.up, self.down = bytearray(), bytearray()
        thread = threading.Thread(target=self._relay)
        thread.start()
        client(self.port)
        thread.join(10)
        return bytes(self.up), bytes(self.down)

    def _relay(self) -> None:
        conn, _ = self.server.accept()
        backend = socket.create_connection(self.target)

        def pump(src: socket.socket, dst: socket.socket, keep: bytearray) -> None:
            while data := src.recv(65536):
                keep += data
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)

        other = threading.Thread(target=pump, args=(backend, conn, self.down))
        other.start()
        pump(conn, backend, self.up)
        other.join(10)
        conn.close()
        backend.close()


def scenarios(extra: dict[str, Any]) -> list[tuple[str, Callable[[int], None]]]:
    def connect(port: int, **kw: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(host="127.0.0.1", port=port, **extra, **kw)

    def simple(port: int) -> None:
        with connect(port, autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS accounts (id int primary key, balance int)")
            conn.execute("INSERT INTO accounts VALUES (1, 100) ON CONFLICT DO NOTHING")
            conn.execute("SELECT 1; SELECT 2")
            conn.execute("")
            try:
                conn.execute("SELECT 1/0")
            except psycopg.errors.DivisionByZero:
                pass
            conn.execute("DO $$ BEGIN RAISE NOTICE 'hello'; END $$")
            conn.execute("SET application_name = 'recorded'")

    def transaction(port: int) -> None:
        with connect(port) as conn:
            conn.execute("UPDATE accounts SET balance = balance - 1 WHERE id = %s", (1,))
            conn.execute("SELECT balance FROM accounts WHERE id = %s", (1,)).fetchone()
            conn.commit()
            try:
                conn.execute("SELECT * FROM missing_table")
            except psycopg.errors.UndefinedTable:
                conn.rollback()

    def prepared(port: int) -> None:
        with connect(port, autocommit=True) as conn:
            for i in range(3):
                conn.execute("SELECT %s::int + 1", (i,), prepare=True).fetchone()
            conn.execute("SELECT generate_series(1, 50)").fetchall()

    def pipeline(port: int) -> None:
        with connect(port, autocommit=True) as conn:
            with conn.pipeline():
                conn.execute("SELECT %s", (1,))
                conn.execute("SELECT %s", (2,))
            try:
                with conn.pipeline():
                    conn.execute("SELECT 1/0")
                    conn.execute("SELECT %s", (3,))
            except psycopg.errors.DivisionByZero:
                pass
            conn.execute("SELECT 4").fetchone()

    def notify(port: int) -> None:
        with connect(port, autocommit=True) as conn:
            conn.execute("LISTEN channel")
            conn.execute("NOTIFY channel, 'payload'")
            conn.execute("SELECT 1")

    def copy(port: int) -> None:
        with (
            connect(port, autocommit=True) as conn,
            conn.cursor().copy("COPY (SELECT generate_series(1, 3)) TO STDOUT") as c,
        ):
            for _ in c:
                pass

    def pipeline_many(port: int) -> None:
        with connect(port) as conn:  # a transaction: BEGIN goes in the pipeline too
            with conn.pipeline():
                conn.execute("SELECT %s::int AS one", (1,))
                conn.execute("SELECT %s::int + 1", (1,), prepare=True)
                conn.execute("SELECT %s::text", ("two",))
                conn.cursor().executemany("SELECT %s::int", [(i,) for i in range(3)])
            conn.commit()
            try:
                with conn.pipeline():
                    conn.execute("SELECT %s::int", (5,))
                    conn.execute("SELECT 1/%s::int", (0,))
                    conn.execute("SELECT %s::int", (6,))
            except psycopg.errors.DivisionByZero:
                conn.rollback()
            for i in range(3):
                conn.execute("SELECT %s::int + 1", (i,), prepare=True).fetchone()
            conn.commit()

    return [
        ("simple queries", simple),
        ("a transaction, extended protocol", transaction),
        ("prepared statements", prepared),
        ("pipeline mode", pipeline),
        ("LISTEN/NOTIFY", notify),
        ("COPY TO STDOUT", copy),
        ("pipeline mode, a transaction and an error", pipeline_many),
        ("raw extended protocol", lambda port: raw_extended(port, extra)),
    ]


def message(kind: bytes, *fields: bytes) -> bytes:
    body = b"".join(fields)
    return kind + struct.pack(">I", len(body) + 4) + body


def bind(portal: bytes, statement: bytes, *params: bytes) -> bytes:
    values = b"".join(struct.pack(">i", len(p)) + p for p in params)
    return message(
        b"B", portal, b"\0", statement, b"\0", struct.pack(">hh", 0, len(params)), values, bytes(2)
    )


def parse(statement: bytes, sql: bytes) -> bytes:
    return message(b"P", statement, b"\0", sql, b"\0", bytes(2))


def execute(portal: bytes = b"", rows: int = 0) -> bytes:
    return message(b"E", portal, b"\0", struct.pack(">i", rows))


SYNC = message(b"S")
FLUSH = message(b"H")


def raw_extended(port: int, extra: dict[str, Any]) -> None:
    """What psycopg never sends, as a client of the protocol could: several
    Syncs in one write, a statement described and closed, a portal executed
    a few rows at a time (PortalSuspended), an empty query, NoData and a
    ParameterStatus, a notice, an error mid-batch with more batches after
    it, Flush alone and after a Parse, a transaction opened and failed."""
    params = f"user\0{extra['user']}\0database\0{extra['dbname']}\0\0".encode()
    startup = struct.pack(">II", 8 + len(params), 196608) + params
    writes = [
        parse(b"s1", b"SELECT $1::int AS a")
        + message(b"D", b"S", b"s1\0")
        + SYNC
        + bind(b"", b"s1", b"7")
        + message(b"D", b"P", b"\0")
        + execute()
        + SYNC,
        parse(b"", b"SELECT generate_series(1, 5)")
        + bind(b"p1", b"")
        + execute(b"p1", 2)
        + execute(b"p1", 2)
        + execute(b"p1")
        + message(b"C", b"P", b"p1\0")
        + SYNC
        + parse(b"", b"")
        + bind(b"", b"")
        + execute()
        + SYNC
        + parse(b"", b"SET application_name = 'raw'")
        + bind(b"", b"")
        + message(b"D", b"P", b"\0")
        + execute()
        + SYNC,
        parse(b"s2", b"SELECT 2") + FLUSH,
        FLUSH,
        message(b"C", b"S", b"s1\0")
        + message(b"C", b"S", b"s2\0")
        + SYNC
        + parse(b"", b"DO $$ BEGIN RAISE NOTICE 'raw'; END $$")
        + bind(b"", b"")
        + execute()
        + SYNC,
        parse(b"", b"BEGIN")
        + bind(b"", b"")
        + execute()
        + parse(b"", b"SELECT 1/0")
        + bind(b"", b"")
        + execute()
        + parse(b"", b"SELECT 2")
        + bind(b"", b"")
        + execute()
        + SYNC
        + parse(b"", b"SELECT 3")
        + bind(b"", b"")
        + execute()
        + SYNC
        + message(b"Q", b"ROLLBACK\0")
        + parse(b"", b"SELECT $1::int")
        + bind(b"", b"", b"4")
        + message(b"D", b"P", b"\0")
        + execute()
        + SYNC,
    ]
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(startup)
        _read_until(sock, 1)
        for data in writes:
            sock.sendall(data)
            ready = data.count(SYNC) + data.count(b"Q\0\0\0")
            _read_until(sock, ready, flushed=not ready)
        sock.sendall(message(b"X"))
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass


def _read_until(sock: socket.socket, ready: int, flushed: bool = False) -> None:
    """Read whole messages until ``ready`` ReadyForQuery came (or, with
    ``flushed``, until the server has nothing more to send for a Flush)."""
    buf = b""
    while ready or flushed:
        if flushed:
            sock.settimeout(0.5)  # a Flush has no end marker: what came by then
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return
        finally:
            sock.settimeout(None)
        assert data, "the server closed"
        buf += data
        while len(buf) >= 5:
            length = struct.unpack(">I", buf[1:5])[0]
            if len(buf) < 1 + length:
                break
            ready -= buf[0] == ord("Z")
            buf = buf[1 + length :]


def main() -> None:
    with backends.postgresql() as server:
        tap = Tap((server.host, server.port))
        rows = []
        for what, client in scenarios(server.extra):
            up, down = tap.run_once(client)
            rows.append(f"    (\n        {up!r},\n        {down!r},\n        {what!r},\n    ),\n")
    out = Path(__file__).with_name("postgresql_traffic.py")
    out.write_text(
        '"""Real traffic, recorded by ``python -m tests.protocols.record_postgresql``: '
        'do not edit."""\n\nfrom __future__ import annotations\n\n'
        "#: (what the client sent, what the server answered, what was done), one per connection.\n"
        "CONNECTIONS: list[tuple[bytes, bytes, str]] = [\n" + "".join(rows) + "]\n"
    )


if __name__ == "__main__":
    main()
