"""Proxies that outlive a test: ``vaurien_session_proxy`` and ``vaurien_session_proxies``.

Inner runs keep a Redis and a PostgreSQL connection open for their whole
session, through session proxies, as an application's pools would; each
test's own marker faults them, and relay is transparent between tests.
"""

from __future__ import annotations

import re
import textwrap

import pytest

from tests import backends
from tests.test_several_backends import EXAMPLES, STORES, conftest, doc_blocks, run_example

#: Session pools through the session proxies, opened by the first test that asks.
POOLS = """\
import pytest

from stores import pg_connect, redis_client


@pytest.fixture(scope="session")
def pools(vaurien_session_proxies):
    cache = redis_client(vaurien_session_proxies["redis"])
    db = pg_connect(vaurien_session_proxies["postgres"])
    yield cache, db
    cache.close()
    db.close()
"""


@pytest.fixture
def stores(
    pytester: pytest.Pytester, redis_server: backends.Server, postgres_server: backends.Server
) -> pytest.Pytester:
    """pytester with the helpers, both servers named, and session ``pools``."""
    pytester.makepyfile(stores=STORES)
    pytester.makeconftest(conftest(redis_server, postgres_server) + "\n\n" + POOLS)
    return pytester


def test_a_pool_opened_in_one_test_is_faulted_in_the_next_by_its_marker(stores):
    stores.makepyfile("""
        import pytest
        import redis


        def test_1_opens_the_pools(pools, vaurien_session_proxies):
            cache, db = pools
            assert cache.ping()
            assert db.execute("SELECT 1").fetchone() == (1,)
            assert [r.index for r in vaurien_session_proxies["redis"].connections] == [0]


        @pytest.mark.vaurien("blackout", target="redis")
        def test_2_the_marker_faults_the_open_pool(pools, vaurien_session_proxies):
            cache, db = pools
            redis_proxy = vaurien_session_proxies["redis"]
            assert redis_proxy.behavior == "blackout"
            assert vaurien_session_proxies["postgres"].behavior == "100:dummy"
            with pytest.raises(redis.ConnectionError):
                cache.ping()
            assert db.execute("SELECT 2").fetchone() == (2,)
            # the connection test 1 opened, no new one
            [record] = redis_proxy.connections
            assert (record.index, record.handlers) == (0, ["dummy", "blackout"])


        def test_3_relay_again_between_and_without_markers(pools, vaurien_session_proxies):
            cache, db = pools
            assert cache.ping()  # redis-py opens a new connection
            assert db.execute("SELECT 3").fetchone() == (3,)
            pg = vaurien_session_proxies["postgres"]
            assert pg.proxy.accepted == 1  # PostgreSQL's connection of test 1, still open
            assert [r.index for r in pg.connections] == [0]
            assert [r.index for r in vaurien_session_proxies["redis"].connections] == [1]
            assert {p.behavior for p in vaurien_session_proxies.values()} == {"100:dummy"}
    """)
    stores.runpytest().assert_outcomes(passed=3)


def test_the_report_of_a_failing_test_shows_its_own_connections_only(stores):
    stores.makepyfile("""
        import pytest

        from stores import redis_client


        def test_a_busy(pools, vaurien_session_proxies):
            cache, db = pools
            assert cache.ping()
            for _ in range(3):
                other = redis_client(vaurien_session_proxies["redis"])
                assert other.ping()
                other.close()


        @pytest.mark.vaurien("delay", delay__sleep=0.01, target="redis")
        def test_b_fails(pools, vaurien_session_proxies):
            cache, db = pools
            other = redis_client(vaurien_session_proxies["redis"])
            assert other.ping()
            other.close()
            assert False, "fails on purpose"
    """)
    result = stores.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    lines = result.stdout.lines
    start = next(i for i, line in enumerate(lines) if "Captured vaurien call" in line)
    report = "\n".join(lines[start:])
    # test_a's four connections are not test_b's: the one it opened (and, on a
    # loaded machine, the last one test_a closed, if its close is still moving
    # bytes when test_b begins)
    assert re.search(r"behavior 'delay': [12] connections?\n", report), report
    assert "behavior '100:dummy': 0 connections" in report, report


def test_one_session_proxy_per_xdist_worker(stores):
    stores.makepyfile(
        textwrap.dedent("""
        import os

        import pytest
        import redis


        @pytest.mark.parametrize("n", range(8))
        def test_relayed(n, pools, vaurien_session_proxies):
            cache, db = pools
            assert cache.ping()  # after a faulted test too: redis-py reconnects
            pid = db.execute("SELECT pg_backend_pid()").fetchone()[0]
            worker = os.environ["PYTEST_XDIST_WORKER"]
            with open(f"seen-{worker}-{n}", "w") as out:
                out.write(f"{vaurien_session_proxies['postgres'].port} {pid}")


        @pytest.mark.parametrize("n", range(4))
        @pytest.mark.vaurien("blackout", target="redis")
        def test_faulted(n, pools):
            cache, db = pools
            with pytest.raises(redis.ConnectionError):
                cache.ping()
            assert db.execute("SELECT 1").fetchone() == (1,)
        """)
    )
    result = stores.runpytest_subprocess("-n", "2")
    result.assert_outcomes(passed=12)
    seen: dict[str, set[str]] = {}
    for path in stores.path.glob("seen-*"):
        worker = path.name.split("-")[1]
        seen.setdefault(worker, set()).add(path.read_text())
    # each worker: one proxy port and one PostgreSQL backend (the pool survived)
    assert all(len(values) == 1 for values in seen.values()), seen
    if len(seen) == 2:
        assert len({next(iter(values)) for values in seen.values()}) == 2


def test_a_lone_distant_from_the_ini_file(pytester, echo_server):
    host, port = echo_server.address
    pytester.makeini(f"""
        [pytest]
        vaurien_distant = {host}:{port}
        vaurien_behavior = 100:dummy
    """)
    pytester.makepyfile("""
        import socket

        import pytest

        from client import roundtrip

        SEEN = []


        def test_1(vaurien_session_proxy):
            SEEN.append(vaurien_session_proxy.port)
            with vaurien_session_proxy.set_behavior("hang"):
                pass
            vaurien_session_proxy.set_behavior("hang")  # not restored by the test


        @pytest.mark.vaurien(rules=["delay; sleep=0"])
        def test_2(vaurien_session_proxy):
            assert vaurien_session_proxy.port == SEEN[0]
            assert vaurien_session_proxy.behavior == "100:dummy"
            assert [rule.name for rule in vaurien_session_proxy.rules] == ["delay#1"]
            assert roundtrip(vaurien_session_proxy.address) == b"ping"
            assert vaurien_session_proxy.rule("delay#1").fired == 1


        def test_3(vaurien_session_proxy):
            assert vaurien_session_proxy.rules == []
            assert vaurien_session_proxy.connections == []
            assert len(vaurien_session_proxy.proxy.connections) == 1
    """)
    pytester.runpytest().assert_outcomes(passed=3)


def test_a_marker_asking_another_protocol_fails_its_test(pytester, echo_server):
    host, port = echo_server.address
    pytester.makepyfile(f"""
        import pytest


        @pytest.fixture(scope="session")
        def vaurien_distant():
            return "{host}:{port}"


        @pytest.mark.vaurien(protocol="http")
        def test_other(vaurien_session_proxy):
            pass


        def test_fine(vaurien_session_proxy):
            assert vaurien_session_proxy.protocol == "tcp"
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "vaurien marker on test_other: protocol: protocol='http' for the session proxy "
            "'default', which relays 'tcp' for the whole session; set a session proxy's "
            "protocol with --vaurien-protocol, or vaurien_protocols (one NAME = PROTOCOL a "
            "line) or vaurien_protocol in the ini file"
        ]
    )


def test_refused_every_connection_counts_the_tests_own(pytester, echo_server):
    dead = backends.free_port()
    pytester.makepyfile(f"""
        import pytest

        from client import read_until_eof


        @pytest.fixture(scope="session")
        def vaurien_distant():
            return "127.0.0.1:{dead}"


        def connect(proxy):
            import socket

            try:  # the reset may come before the connect returns
                with socket.create_connection(proxy.address, timeout=5) as sock:
                    read_until_eof(sock)
            except ConnectionError:
                pass


        def test_a_refused(vaurien_session_proxy):
            connect(vaurien_session_proxy)


        @pytest.mark.vaurien(allow_refused=True)
        def test_b_allowed(vaurien_session_proxy):
            connect(vaurien_session_proxy)


        def test_c_no_connection(vaurien_session_proxy):
            pass
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_a_refused*",
            f"backend 127.0.0.1:{dead} refused every connection (1); is it running?",
        ]
    )


def test_a_narrower_vaurien_distant_is_said(pytester, echo_server):
    host, port = echo_server.address
    pytester.makepyfile(f"""
        import pytest


        @pytest.fixture
        def vaurien_distant():
            return "{host}:{port}"


        def test_it(vaurien_session_proxy):
            pass
    """)
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*vaurien_session_proxies needs vaurien_distant at session scope*"]
    )


def test_a_target_for_a_session_proxy_that_does_not_exist(stores):
    stores.makepyfile("""
        import pytest


        @pytest.mark.vaurien("hang", target="cache")
        def test_it(vaurien_session_proxies):
            pass
    """)
    result = stores.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "vaurien marker on test_it: target 'cache' names no proxy of this test; "
            "its proxies: postgres, redis"
        ]
    )


def test_the_long_lived_pools_example_runs(pytester, monkeypatch, redis_server, postgres_server):
    result = run_example(
        pytester, monkeypatch, "example_long_lived_pools", redis_server, postgres_server
    )
    result.assert_outcomes(passed=3)


def test_the_long_lived_pools_page_shows_the_example_word_for_word():
    example = (EXAMPLES / "example_long_lived_pools.py").read_text()
    blocks = doc_blocks("long-lived-pools.md")
    assert len(blocks) >= 3
    for block in blocks:
        assert block in example, block
