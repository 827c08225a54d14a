"""Long-lived pools: the application makes its Redis and PostgreSQL pools once per session.

docs/long-lived-pools.md shows this file; tests/test_session_proxies.py runs it
against real servers (REDIS_ADDRESS and POSTGRES_ADDRESS name them).
"""

from __future__ import annotations

import os

import psycopg
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


class Stock:
    """How many of an item are left: the cache first, the database when it misses or fails."""

    def __init__(self, cache: redis.Redis, db: psycopg.Connection) -> None:
        self.cache = cache
        self.db = db

    def count(self, item: str) -> int:
        try:
            cached = self.cache.get(f"stock:{item}")
        except redis.RedisError:
            cached = None  # a cache that fails is a cache that misses
        if cached is not None:
            return int(cached)
        row = self.db.execute("SELECT count FROM stock WHERE item = %s", (item,)).fetchone()
        return row[0] if row else 0


@pytest.fixture(scope="session")
def vaurien_distant():
    return {"cache": os.environ["REDIS_ADDRESS"], "db": os.environ["POSTGRES_ADDRESS"]}


@pytest.fixture(scope="session")
def app(vaurien_session_proxies):
    """The application, made once: its pools live as long as the session."""
    cache, db = vaurien_session_proxies["cache"], vaurien_session_proxies["db"]
    no_retry = Retry(NoBackoff(), 0)
    pool = redis.ConnectionPool(
        host=cache.host, port=cache.port, socket_timeout=0.5, retry=no_retry
    )
    conn = psycopg.connect(
        host=db.host, port=db.port, user="vaurien", dbname="postgres", autocommit=True
    )
    conn.execute("CREATE TEMP TABLE stock (item text PRIMARY KEY, count int)")
    conn.execute("INSERT INTO stock VALUES ('apple', 7)")
    yield Stock(redis.Redis(connection_pool=pool), conn)
    pool.disconnect()
    conn.close()


def test_counts_go_through_the_pools(app, vaurien_session_proxies):
    assert app.count("apple") == 7
    assert vaurien_session_proxies["db"].proxy.accepted == 1  # one connection, for good


@pytest.mark.vaurien("hang", target="cache")
def test_the_pooled_cache_connection_hangs(app, vaurien_session_proxies):
    assert app.count("apple") == 7  # the cache timed out: the database answered
    assert vaurien_session_proxies["cache"].connections[-1].handlers[-1] == "hang"


@pytest.mark.vaurien("delay", delay__sleep=0.05, target="db")
def test_a_slow_database_still_answers(app, vaurien_session_proxies):
    assert app.count("banana") == 0
    [connection] = vaurien_session_proxies["db"].connections  # the pool's, still open
    assert connection.handlers[-1] == "delay"
