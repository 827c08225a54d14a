"""Several backends: a shop whose stock lives in PostgreSQL, with a Redis cache in front.

docs/several-backends.md shows this file; tests/test_several_backends.py runs it
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


@pytest.fixture
def stock(vaurien_proxies):
    cache, db = vaurien_proxies["cache"], vaurien_proxies["db"]
    no_retry = Retry(NoBackoff(), 0)
    client = redis.Redis(cache.host, cache.port, socket_timeout=0.5, retry=no_retry)
    with psycopg.connect(
        host=db.host, port=db.port, user="vaurien", dbname="postgres", autocommit=True
    ) as conn:
        conn.execute("CREATE TEMP TABLE stock (item text PRIMARY KEY, count int)")
        conn.execute("INSERT INTO stock VALUES ('apple', 7)")
        yield Stock(client, conn)
    client.close()


def test_a_cached_count_spares_the_database(stock):
    stock.cache.set("stock:pear", 3)
    assert stock.count("pear") == 3


@pytest.mark.vaurien("blackout", target="cache")
def test_a_dead_cache_falls_back_to_the_database(stock, vaurien_proxies):
    assert stock.count("apple") == 7
    assert vaurien_proxies["cache"].behavior == "blackout"
    assert vaurien_proxies["db"].behavior == "100:dummy"


@pytest.mark.vaurien("delay", delay__sleep=1, target="cache")
def test_a_slow_cache_times_out_and_falls_back(stock):
    assert stock.count("apple") == 7


@pytest.mark.vaurien("blackout", target="replica")
def test_a_dead_replica_leaves_the_primary_working(vaurien_proxy_factory):
    primary = vaurien_proxy_factory(os.environ["POSTGRES_ADDRESS"], name="primary")
    replica = vaurien_proxy_factory(os.environ["POSTGRES_ADDRESS"], name="replica")
    login = {"user": "vaurien", "dbname": "postgres"}
    with psycopg.connect(host=primary.host, port=primary.port, **login) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host=replica.host, port=replica.port, **login)
