"""Record real PostgreSQL traffic for the framer tests (a script, not a test).

Starts PostgreSQL (tests/backends.py) behind a recording tap on localhost,
drives psycopg through it (simple and extended queries, prepared statements,
pipeline mode, errors, notices, LISTEN/NOTIFY, COPY) and writes what each
connection carried, both ways, to ``postgresql_traffic.py`` beside this file:

    python -m tests.protocols.record_postgresql
"""

from __future__ import annotations

import socket
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

    return [
        ("simple queries", simple),
        ("a transaction, extended protocol", transaction),
        ("prepared statements", prepared),
        ("pipeline mode", pipeline),
        ("LISTEN/NOTIFY", notify),
        ("COPY TO STDOUT", copy),
    ]


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
