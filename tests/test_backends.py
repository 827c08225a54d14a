"""The real servers the protocol tests use start, answer their own clients, and stop."""

from __future__ import annotations

import smtplib

import psycopg
import pymemcache.client.base
import pymysql
import redis


def test_redis(redis_server):
    client = redis.Redis(host=redis_server.host, port=redis_server.port)
    assert client.ping()


def test_postgresql(postgres_server):
    with psycopg.connect(
        host=postgres_server.host, port=postgres_server.port, **postgres_server.extra
    ) as connection:
        assert connection.execute("select 1").fetchone() == (1,)


def test_memcached(memcached_server):
    client = pymemcache.client.base.Client((memcached_server.host, memcached_server.port))
    client.set("key", "value")
    assert client.get("key") == b"value"
    client.close()


def test_mariadb(mariadb_server):
    connection = pymysql.connect(host=mariadb_server.host, port=mariadb_server.port, user="root")
    with connection.cursor() as cursor:
        cursor.execute("select 1")
        assert cursor.fetchone() == (1,)
    connection.close()


def test_smtp(smtp_server):
    messages = smtp_server.extra["handler"].messages
    before = len(messages)  # the server serves the whole session
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as client:
        client.sendmail("a@example.org", ["b@example.org"], "Subject: hi\n\nbody\n")
    assert len(messages) == before + 1
