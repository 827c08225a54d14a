"""PostgreSQL faults per query, through the real proxy, with psycopg and PostgreSQL 15."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from pytest_vaurien import Proxy, Rule
from tests.backends import Server


@contextmanager
def through(
    server: Server, rules: list[Rule], **options: Any
) -> Iterator[tuple[Proxy, psycopg.Connection[Any]]]:
    with Proxy(server.distant, protocol="postgresql", rules=rules) as proxy:
        host, port = proxy.address
        with psycopg.connect(
            host=host, port=port, connect_timeout=10, **server.extra, **options
        ) as conn:
            yield proxy, conn


def direct(server: Server) -> psycopg.Connection[Any]:
    """A connection straight to the server, once it accepts them (it listens
    before it is ready: "the database system is starting up")."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return psycopg.connect(
                host=server.host, port=server.port, autocommit=True, **server.extra
            )
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture(scope="module")
def accounts(postgres_server: Server) -> Server:
    with direct(postgres_server) as conn:
        conn.execute("DROP TABLE IF EXISTS accounts")
        conn.execute("CREATE TABLE accounts (id int primary key, balance int)")
        conn.execute("INSERT INTO accounts VALUES (1, 100), (2, 100)")
    return postgres_server


def balance(server: Server, account: int = 1) -> int:
    with direct(server) as conn:
        row = conn.execute("SELECT balance FROM accounts WHERE id = %s", (account,)).fetchone()
    assert row is not None
    return int(row[0])


def summaries(proxy: Proxy) -> list[tuple[str, str, str | None]]:
    return [(e.request, e.fault, e.reply) for e in proxy.exchanges]


def test_the_handshake_is_no_unit_and_queries_are(accounts: Server) -> None:
    with through(accounts, [], autocommit=True) as (proxy, conn):
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.execute("SELECT %s::int + 1", (1,)).fetchone() == (2,)
        records = summaries(proxy)
        assert proxy.connections[0].plain is None
    assert records == [
        ("SELECT 1", "dummy", "C SELECT 1"),
        ("SELECT $1::int + 1", "dummy", "C SELECT 1"),
    ]


def test_an_error_outside_a_transaction_is_the_proxys_answer(accounts: Server) -> None:
    rules = [Rule("error", match="^UPDATE accounts", name="update")]
    with through(accounts, rules, autocommit=True) as (proxy, conn):
        before = balance(accounts)
        with pytest.raises(psycopg.errors.SerializationFailure, match="injected by vaurien"):
            conn.execute("UPDATE accounts SET balance = balance - 1 WHERE id = 1")
        assert conn.execute("SELECT 2").fetchone() == (2,)  # the connection goes on
        assert balance(accounts) == before  # the server never saw the UPDATE
        assert (proxy.rule("update").matched, proxy.rule("update").fired) == (1, 1)
        records = [(e.request, e.by, e.reply) for e in proxy.exchanges]
    assert records == [
        ("UPDATE accounts SET balance = balance - ...", "update", "E 40001"),
        ("SELECT 2", "draw", "C SELECT 1"),
    ]


def test_an_error_inside_a_transaction_is_raised_by_the_server(accounts: Server) -> None:
    rules = [Rule("error", match={"sql": "^UPDATE accounts", "in_transaction": True})]
    with through(accounts, rules) as (_proxy, conn):
        before = balance(accounts)
        conn.execute("SELECT 1")  # BEGIN, then this: the transaction is open
        with pytest.raises(psycopg.errors.SerializationFailure):
            conn.execute("UPDATE accounts SET balance = balance - 1 WHERE id = 1", prepare=False)
        with pytest.raises(
            psycopg.errors.InFailedSqlTransaction, match="current transaction is aborted"
        ):
            conn.execute("SELECT 1")
        conn.rollback()
        assert conn.execute("SELECT 3").fetchone() == (3,)
        conn.rollback()
        assert balance(accounts) == before


def test_a_simple_query_in_a_transaction_is_replaced_by_a_raise(accounts: Server) -> None:
    """psycopg sends a query without parameters as a simple Query: the server raises."""
    rules = [Rule("error", match="^UPDATE accounts", sqlstate="40P01")]
    with through(accounts, rules) as (proxy, conn):
        conn.execute("SELECT 1")
        with pytest.raises(psycopg.errors.DeadlockDetected, match="deadlock_detected"):
            conn.cursor().execute(b"UPDATE accounts SET balance = 0 WHERE id = 1")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        conn.rollback()
        [update] = [e for e in proxy.exchanges if e.request.startswith("UPDATE")]
    assert (update.outcome, update.reply) == ("answered by the backend", "E 40P01")
    assert balance(accounts) != 0


def test_extended_protocol_is_matched_on_its_sql(accounts: Server) -> None:
    rules = [Rule("error", match="^SELECT \\$1::int \\* 2", sqlstate="57014")]
    with through(accounts, rules, autocommit=True) as (proxy, conn):
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT %s::int * 2", (21,))
        assert conn.execute("SELECT %s::int * 3", (2,)).fetchone() == (6,)
        records = summaries(proxy)
    assert records == [
        ("SELECT $1::int * 2", "error", "E 57014"),
        ("SELECT $1::int * 3", "dummy", "C SELECT 1"),
    ]


def test_a_prepared_statement_is_matched_on_its_sql(accounts: Server) -> None:
    rules = [Rule("error", match="^SELECT \\$1::int - 1", schedule="at:3")]
    with through(accounts, rules, autocommit=True) as (proxy, conn):
        for i in range(2):
            assert conn.execute("SELECT %s::int - 1", (i,), prepare=True).fetchone() == (i - 1,)
        with pytest.raises(psycopg.errors.SerializationFailure):
            conn.execute("SELECT %s::int - 1", (5,), prepare=True)
        assert conn.execute("SELECT %s::int - 1", (7,), prepare=True).fetchone() == (6,)
        rule = proxy.rules[0]
        assert (rule.matched, rule.fired) == (4, 1)


def test_pipeline_mode_without_a_fault(accounts: Server) -> None:
    with through(accounts, [], autocommit=True) as (proxy, conn):
        with conn.pipeline():
            cursors = [conn.execute("SELECT %s::int", (i,)) for i in range(5)]
        assert [c.fetchone() for c in cursors] == [(i,) for i in range(5)]
        assert len(proxy.exchanges) == 5


def test_pipeline_mode_with_a_faulted_statement_skips_the_rest_of_the_batch(
    accounts: Server,
) -> None:
    rules = [Rule("error", match="^SELECT \\$1::int AS faulted")]
    with through(accounts, rules, autocommit=True) as (proxy, conn):

        def batch() -> None:
            with conn.pipeline():
                conn.execute("SELECT %s::int AS fine", (1,))
                conn.execute("SELECT %s::int AS faulted", (2,))
                conn.execute("SELECT %s::int AS skipped", (3,))

        with pytest.raises(psycopg.errors.SerializationFailure):
            batch()
        assert conn.execute("SELECT %s::int", (4,)).fetchone() == (4,)
        with conn.pipeline():
            later = conn.execute("SELECT %s::int AS again", (5,))
        assert later.fetchone() == (5,)
        records = summaries(proxy)
    assert records[:2] == [
        ("SELECT $1::int AS fine", "dummy", "C SELECT 1"),
        ("SELECT $1::int AS faulted", "error", "E 40001"),
    ]
    assert records[-2:] == [
        ("SELECT $1::int", "dummy", "C SELECT 1"),
        ("SELECT $1::int AS again", "dummy", "C SELECT 1"),
    ]


def test_copy_falls_back_to_plain_relay(accounts: Server) -> None:
    with through(accounts, [], autocommit=True) as (proxy, conn):
        with conn.cursor().copy("COPY (SELECT generate_series(1, 3)) TO STDOUT") as copy:
            rows = [bytes(row) for row in copy]
        assert rows == [b"1\n", b"2\n", b"3\n"]
        with conn.cursor().copy("COPY accounts FROM STDIN") as copy:
            copy.write_row((10, 5))
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert proxy.connections[0].plain == "backend side: PostgreSQL COPY"
        assert proxy.exchanges[0].request.startswith("COPY")
    with direct(accounts) as c:
        c.execute("DELETE FROM accounts WHERE id = 10")


def test_notices_and_notifications_pass_through(accounts: Server) -> None:
    with through(accounts, [], autocommit=True) as (proxy, conn):
        notices: list[str] = []
        conn.add_notice_handler(lambda diag: notices.append(str(diag.message_primary)))
        conn.execute("DO $$ BEGIN RAISE NOTICE 'hello from the server'; END $$")
        assert notices == ["hello from the server"]
        conn.execute("LISTEN vaurien")
        host, port = proxy.address
        with psycopg.connect(host=host, port=port, autocommit=True, **accounts.extra) as other:
            other.execute("NOTIFY vaurien, 'ping'")
        received = next(conn.notifies(timeout=5))
        assert (received.channel, received.payload) == ("vaurien", "ping")
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_after_lets_the_server_act_and_the_client_is_told_it_failed(accounts: Server) -> None:
    """ "Did my UPDATE happen?": yes, though the client got a serialization failure."""
    rules = [Rule("error", match="^UPDATE accounts", after=True)]
    with through(accounts, rules, autocommit=True) as (proxy, conn):
        before = balance(accounts, 2)
        with pytest.raises(psycopg.errors.SerializationFailure):
            conn.execute(b"UPDATE accounts SET balance = balance + 1 WHERE id = 2")
        assert conn.execute("SELECT 5").fetchone() == (5,)
        assert balance(accounts, 2) == before + 1
        assert proxy.exchanges[0].reply == "E 40001"


def test_a_fatal_error_closes_the_session_as_a_server_shutting_down_does(
    accounts: Server,
) -> None:
    rules = [Rule("error", match="^SELECT 42", sqlstate="57P01", severity="FATAL")]
    with Proxy(accounts.distant, protocol="postgresql", rules=rules) as proxy:
        host, port = proxy.address
        conn = psycopg.connect(
            host=host, port=port, connect_timeout=10, autocommit=True, **accounts.extra
        )
        with pytest.raises(psycopg.errors.AdminShutdown):
            conn.execute("SELECT 42")
        assert conn.broken
        conn.close()
        [exchange] = [e for e in proxy.exchanges if e.request == "SELECT 42"]
    assert exchange.reply == "E 57P01"


def test_the_plain_path_counts_units_and_follows_the_transaction_state(accounts: Server) -> None:
    """With no record kept, at 100:dummy, simple queries and their replies go
    as batches: they still count as units, and the transaction state a rule
    added later matches on still follows the server."""
    with Proxy(accounts.distant, protocol="postgresql", keep_records=False) as proxy:
        host, port = proxy.address
        with psycopg.connect(
            host=host,
            port=port,
            connect_timeout=10,
            autocommit=True,
            cursor_factory=psycopg.ClientCursor,
            **accounts.extra,
        ) as conn:
            before = balance(accounts)
            for i in range(20):
                assert conn.execute(f"SELECT {i}").fetchone() == (i,)
            conn.execute("BEGIN")
            rule = proxy.add_rule(
                Rule("error", match={"sql": "^UPDATE accounts", "in_transaction": True})
            )
            with pytest.raises(psycopg.errors.SerializationFailure):
                conn.execute("UPDATE accounts SET balance = balance - 1 WHERE id = 1")
            conn.execute("ROLLBACK")
            assert conn.execute("SELECT 3").fetchone() == (3,)
        assert (rule.matched, rule.fired) == (1, 1)
        # 20 SELECTs and BEGIN (plain), the UPDATE, ROLLBACK, SELECT 3
        assert proxy.next_ordinal() == 25
    assert balance(accounts) == before


@contextmanager
def unrecorded(server: Server, **options: Any) -> Iterator[tuple[Proxy, psycopg.Connection[Any]]]:
    """At ``100:dummy`` with no record kept (as the ``vaurien`` command): the
    plain path, where requests and replies go in batches."""
    with Proxy(server.distant, protocol="postgresql", keep_records=False) as proxy:
        host, port = proxy.address
        with psycopg.connect(
            host=host, port=port, connect_timeout=10, **server.extra, **options
        ) as conn:
            yield proxy, conn


def test_the_plain_path_relays_parameterized_queries_and_pipelines(accounts: Server) -> None:
    """psycopg's server-side binding (Parse/Bind/Describe/Execute/Sync, then
    prepared statements from the fifth run on), a pipeline with several
    statements, and one that fails mid-way: right rows, right errors, and
    only the Executes count as units (not the Syncs, Flushes and Parses)."""
    with unrecorded(accounts, autocommit=True) as (proxy, conn):
        for i in range(30):
            assert conn.execute("SELECT %s::int * 2", (i,)).fetchone() == (i * 2,)
        with conn.pipeline():
            cursors = [conn.execute("SELECT %s::int + 1", (i,)) for i in range(10)]
        assert [c.fetchone() for c in cursors] == [(i + 1,) for i in range(10)]

        def failing() -> None:
            with conn.pipeline():
                conn.execute("SELECT %s::int", (1,))
                conn.execute("SELECT 1 / %s::int", (0,))
                conn.execute("SELECT %s::int", (2,))  # skipped by the server

        with pytest.raises(psycopg.errors.DivisionByZero):
            failing()
        assert conn.execute("SELECT %s::text", ("after",)).fetchone() == ("after",)
        # 30 + 10 + the two the server ran or failed + the one it skipped + 1
        assert proxy.next_ordinal() == 30 + 10 + 3 + 1 + 1


def test_a_rule_added_live_matches_a_statement_prepared_on_the_plain_path(
    accounts: Server,
) -> None:
    """A statement prepared while every request went in batches, in a
    transaction begun there too: a rule added afterwards matches its next
    Execute (a Bind and an Execute of the statement's name, no Parse) by the
    statement's SQL and by the transaction state, which the batches kept."""
    update = "UPDATE accounts SET balance = balance + %s WHERE id = 1"
    with unrecorded(accounts) as (proxy, conn):
        before = balance(accounts)
        for _ in range(3):
            conn.execute(update, (0,), prepare=True)
            conn.commit()
        conn.execute(update, (0,), prepare=True)  # BEGIN, then the UPDATE: in a transaction
        rule = proxy.add_rule(
            Rule("error", match={"sql": "^UPDATE accounts", "in_transaction": True})
        )
        with pytest.raises(psycopg.errors.SerializationFailure, match="injected by vaurien"):
            conn.execute(update, (1,), prepare=True)
        conn.rollback()
        assert (rule.matched, rule.fired) == (1, 1)
        assert conn.execute("SELECT %s::int", (7,)).fetchone() == (7,)
        conn.rollback()
    assert balance(accounts) == before
