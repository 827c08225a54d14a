"""MySQL faults per command, through the real proxy, with PyMySQL and MariaDB 10.11."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pymysql
import pytest

from pytest_vaurien import Proxy, Rule
from tests.backends import Server

DATABASE = "vaurien"


def connect(host: str, port: int, **options: Any) -> pymysql.connections.Connection[Any]:
    return pymysql.connect(
        host=host, port=port, user="root", database=DATABASE, connect_timeout=10, **options
    )


@contextmanager
def through(
    server: Server, rules: list[Rule], **options: Any
) -> Iterator[tuple[Proxy, pymysql.connections.Connection[Any]]]:
    with Proxy(server.distant, protocol="mysql", rules=rules) as proxy:
        host, port = proxy.address
        conn = connect(host, port, **options)
        try:
            yield proxy, conn
        finally:
            conn.close()


@pytest.fixture(scope="module")
def accounts(mariadb_server: Server) -> Server:
    conn = pymysql.connect(host=mariadb_server.host, port=mariadb_server.port, user="root")
    with conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
        cur.execute(f"USE {DATABASE}")
        cur.execute("DROP TABLE IF EXISTS accounts")
        cur.execute("CREATE TABLE accounts (id int primary key, balance int) ENGINE=InnoDB")
        cur.execute("INSERT INTO accounts VALUES (1, 100), (2, 100)")
        conn.commit()
    return mariadb_server


def balance(server: Server, account: int = 1) -> int:
    conn = connect(server.host, server.port, autocommit=True)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT balance FROM accounts WHERE id = %s", (account,))
        row = cur.fetchone()
    assert row is not None
    return int(row[0])


def run(conn: pymysql.connections.Connection[Any], sql: str) -> tuple[Any, ...]:
    with conn.cursor() as cur:
        cur.execute(sql)
        return tuple(cur.fetchall())


def test_the_handshake_is_no_unit_and_commands_are(accounts: Server) -> None:
    with through(accounts, [], autocommit=True) as (proxy, conn):
        assert run(conn, "SELECT 1") == ((1,),)
        conn.ping(reconnect=False)
        records = [(e.request, e.fault, e.reply) for e in proxy.exchanges]
        assert proxy.connections[0].plain is None
    assert records == [
        ("SET NAMES utf8mb4", "dummy", "OK"),
        ("SELECT 1", "dummy", "rows 1"),
        ("Ping", "dummy", "OK"),
    ]


def test_an_error_outside_a_transaction_is_the_proxys_answer(accounts: Server) -> None:
    rules = [Rule("error", match="^UPDATE accounts", name="update")]
    with through(accounts, rules, autocommit=True) as (proxy, conn):
        before = balance(accounts)
        with pytest.raises(pymysql.err.OperationalError, match="injected by vaurien") as raised:
            run(conn, "UPDATE accounts SET balance = balance - 1 WHERE id = 1")
        assert raised.value.args[0] == 1213
        assert run(conn, "SELECT 2") == ((2,),)  # the connection goes on
        assert balance(accounts) == before  # the server never saw the UPDATE
        assert (proxy.rule("update").matched, proxy.rule("update").fired) == (1, 1)
        records = [(e.request, e.by, e.reply) for e in proxy.exchanges]
    assert records == [
        ("SET NAMES utf8mb4", "draw", "OK"),
        ("UPDATE accounts SET balance = balance - ...", "update", "ERR 1213"),
        ("SELECT 2", "draw", "rows 1"),
    ]


def test_error_options_choose_the_errno_and_exception(accounts: Server) -> None:
    rules = [Rule("error", match="^SELECT", errno=1146, message="gone")]
    with through(accounts, rules, autocommit=True) as (_proxy, conn):
        with pytest.raises(pymysql.err.ProgrammingError) as raised:
            run(conn, "SELECT * FROM accounts")
        assert raised.value.args == (1146, "gone")


def test_after_the_server_acts_and_the_client_is_told_it_failed(accounts: Server) -> None:
    rules = [Rule("error", after=True, match="^UPDATE accounts")]
    with through(accounts, rules, autocommit=True) as (proxy, conn):
        before = balance(accounts)
        with pytest.raises(pymysql.err.OperationalError) as raised:
            run(conn, "UPDATE accounts SET balance = balance + 1 WHERE id = 1")
        assert raised.value.args[0] == 1213
        assert balance(accounts) == before + 1
        assert run(conn, "SELECT 3") == ((3,),)
        [update] = [e for e in proxy.exchanges if e.request.startswith("UPDATE")]
    assert update.reply == "ERR 1213"


def test_a_rule_without_match_counts_commands_not_the_handshake(accounts: Server) -> None:
    rules = [Rule("error", schedule="at:3", errno=1205, name="third")]
    with through(accounts, rules, autocommit=True) as (proxy, conn):
        assert run(conn, "SELECT 1") == ((1,),)  # after SET NAMES: the second unit
        with pytest.raises(pymysql.err.OperationalError) as raised:
            run(conn, "SELECT 2")
        assert raised.value.args[0] == 1205
        assert proxy.rule("third").matched == 3


def test_in_transaction_is_the_servers_state(accounts: Server) -> None:
    rules = [Rule("error", match={"sql": "WHERE id = 2", "in_transaction": True}, name="tx")]
    with through(accounts, rules) as (proxy, conn):  # autocommit off
        run(conn, "SELECT balance FROM accounts WHERE id = 2")  # starts the transaction
        with pytest.raises(pymysql.err.OperationalError):
            run(conn, "SELECT balance FROM accounts WHERE id = 2")
        conn.rollback()
        conn.autocommit(True)
        run(conn, "SELECT balance FROM accounts WHERE id = 2")
        assert proxy.rule("tx").fired == 1
        states = [(e.request, e.reply) for e in proxy.exchanges]
    assert states[:4] == [
        ("SET NAMES utf8mb4", "OK"),
        ("SET AUTOCOMMIT = 0", "OK"),
        ("SELECT balance FROM accounts WHERE id = ...", "rows 1"),
        ("SELECT balance FROM accounts WHERE id = ...", "ERR 1213"),
    ]


def test_a_deadlock_inside_a_transaction_rolls_it_back_on_the_server(accounts: Server) -> None:
    rules = [Rule("error", match={"sql": "WHERE id = 2", "in_transaction": True})]
    with through(accounts, rules) as (_proxy, conn):  # autocommit off
        before = balance(accounts)
        run(conn, "UPDATE accounts SET balance = balance - 1 WHERE id = 1")
        with pytest.raises(pymysql.err.OperationalError) as raised:
            run(conn, "UPDATE accounts SET balance = balance + 1 WHERE id = 2")
        assert raised.value.args[0] == 1213
        conn.commit()  # the server rolled the transaction back: nothing to commit
        assert balance(accounts) == before


def test_a_raw_prepare_is_matched_on_its_sql(accounts: Server) -> None:
    rules = [Rule("error", match="^SELECT id, balance", errno=1146)]
    with through(accounts, rules, autocommit=True) as (proxy, conn):
        conn._execute_command(0x16, "SELECT id, balance FROM accounts WHERE id = ?")
        with pytest.raises(pymysql.err.ProgrammingError) as raised:
            conn._read_packet()
        assert raised.value.args[0] == 1146
        conn._execute_command(0x16, "SELECT balance FROM accounts WHERE id = ?")
        reply = conn._read_packet().get_all_data()
        statement, columns, params = struct.unpack("<IHH", reply[1:9])
        for _ in range(columns + params + (params > 0) + (columns > 0)):
            conn._read_packet()
        conn._execute_command(0x19, struct.pack("<I", statement))
        assert run(conn, "SELECT 4") == ((4,),)
        records = [(e.request, e.reply) for e in proxy.exchanges]
    assert records[1:] == [
        ("PREPARE SELECT id, balance FROM accounts WHERE ...", "ERR 1146"),
        ("PREPARE SELECT balance FROM accounts WHERE id = ...", "OK"),
        ("SELECT 4", "rows 1"),  # Close gets no reply: never a unit
    ]
