"""Several backends in one test: ``vaurien_proxies`` by name, ``target=`` on markers.

Inner runs talk to a real Redis and a real PostgreSQL (tests/backends.py)
through the proxies, with redis-py and psycopg 3, as an application would.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import psycopg
import pytest
import redis

from tests import backends

#: Imported here, before any in-process inner run, so that pytester's restore of
#: sys.modules keeps them: psycopg's C extension cannot be imported twice, and a
#: second import's OperationalError would not be the class it raises.
CLIENT_MODULES = (psycopg, redis)

#: The inner runs' helpers: clients that fail fast (no retries, short timeouts).
STORES = """\
from __future__ import annotations

import psycopg
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def redis_client(proxy):
    return redis.Redis(*proxy.address, socket_timeout=2, retry=Retry(NoBackoff(), 0))


def pg_connect(proxy):
    return psycopg.connect(
        host=proxy.host, port=proxy.port, user="vaurien", dbname="postgres",
        connect_timeout=5, autocommit=True,
    )
"""


def conftest(redis_server: backends.Server, postgres_server: backends.Server) -> str:
    """An inner conftest whose ``vaurien_distant`` names both servers."""
    return textwrap.dedent(f"""\
        import pytest


        @pytest.fixture(scope="session")
        def vaurien_distant():
            return {{"redis": "{redis_server.distant}", "postgres": "{postgres_server.distant}"}}
        """)


@pytest.fixture
def stores(
    pytester: pytest.Pytester, redis_server: backends.Server, postgres_server: backends.Server
) -> pytest.Pytester:
    """pytester with the helpers and a conftest naming the two servers."""
    pytester.makepyfile(stores=STORES)
    pytester.makeconftest(conftest(redis_server, postgres_server))
    return pytester


def test_a_marker_with_target_faults_one_backend_only(stores):
    stores.makepyfile("""
        import psycopg
        import pytest
        import redis

        from stores import pg_connect, redis_client


        @pytest.mark.vaurien("blackout", target="postgres")
        def test_postgres_down_redis_up(vaurien_proxies):
            assert sorted(vaurien_proxies) == ["postgres", "redis"]
            assert vaurien_proxies["postgres"].behavior == "blackout"
            assert vaurien_proxies["redis"].behavior == "100:dummy"
            client = redis_client(vaurien_proxies["redis"])
            try:
                assert client.set("fruit:apple", 3)
                assert client.get("fruit:apple") == b"3"
            finally:
                client.close()
            with pytest.raises(psycopg.OperationalError):
                pg_connect(vaurien_proxies["postgres"])


        @pytest.mark.vaurien("blackout", target=["redis"])
        def test_redis_down_postgres_up(vaurien_proxies):
            with pg_connect(vaurien_proxies["postgres"]) as conn:
                assert conn.execute("SELECT 1 + 1").fetchone() == (2,)
            client = redis_client(vaurien_proxies["redis"])
            try:
                with pytest.raises(redis.ConnectionError):
                    client.ping()
            finally:
                client.close()


        @pytest.mark.vaurien("blackout")
        def test_without_target_the_marker_applies_to_all(vaurien_proxies):
            assert {proxy.behavior for proxy in vaurien_proxies.values()} == {"blackout"}


        @pytest.mark.vaurien("blackout", target=["redis", "postgres"])
        def test_a_list_names_several(vaurien_proxies):
            assert {proxy.behavior for proxy in vaurien_proxies.values()} == {"blackout"}
    """)
    stores.runpytest().assert_outcomes(passed=4)


def test_target_limits_options_rules_and_distant_too(stores, echo_server):
    host, port = echo_server.address
    stores.makepyfile(f"""
        import pytest

        from stores import redis_client


        @pytest.mark.vaurien(behavior="delay", delay__sleep=0.01, target="redis")
        @pytest.mark.vaurien(rules=["error"], distant="{host}:{port}", target="postgres")
        def test_each_its_own(vaurien_proxies):
            redis_proxy, pg_proxy = vaurien_proxies["redis"], vaurien_proxies["postgres"]
            assert redis_proxy.handlers["delay"].option("sleep") == 0.01
            assert [rule.name for rule in redis_proxy.rules] == []
            assert [rule.name for rule in pg_proxy.rules] == ["error#1"]
            assert pg_proxy.distant == "{host}:{port}"
            client = redis_client(redis_proxy)
            try:
                assert client.ping()
            finally:
                client.close()
    """)
    stores.runpytest().assert_outcomes(passed=1)


def test_vaurien_proxy_is_the_one_named_default(stores, redis_server, postgres_server):
    stores.makeconftest(
        textwrap.dedent(f"""\
        import pytest


        @pytest.fixture
        def vaurien_distant():
            return {{"default": "{redis_server.distant}", "db": "{postgres_server.distant}"}}
        """)
    )
    stores.makepyfile("""
        from stores import redis_client


        def test_it(vaurien_proxy, vaurien_proxies):
            assert vaurien_proxy is vaurien_proxies["default"]
            client = redis_client(vaurien_proxy)
            try:
                assert client.ping()
            finally:
                client.close()
    """)
    stores.runpytest().assert_outcomes(passed=1)


def test_vaurien_proxy_without_a_default_names_the_backends(stores):
    stores.makepyfile("""
        def test_it(vaurien_proxy):
            pass
    """)
    result = stores.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*vaurien_proxy is the proxy named 'default', and vaurien_distant names none: "
            "its backends are postgres, redis; use vaurien_proxies[[]NAME[]]*"
        ]
    )
    result.stdout.no_fnmatch_line("*Traceback*")


def test_a_target_that_names_no_proxy_fails_listing_the_names(stores):
    stores.makepyfile("""
        import pytest


        @pytest.mark.vaurien("hang", target="mysql")
        def test_fixture(vaurien_proxies):
            pass


        @pytest.mark.vaurien("hang", target=["redis", "mysql"])
        def test_factory(vaurien_proxies, vaurien_proxy_factory):
            pass


        @pytest.mark.vaurien("hang", target="")
        def test_empty(vaurien_proxies):
            pass
    """)
    result = stores.runpytest()
    result.assert_outcomes(passed=1, errors=3)  # test_factory passes, then errs at teardown
    message = (
        "*vaurien marker on {}: target 'mysql' names no proxy of this test; "
        "its proxies: postgres, redis"
    )
    result.stdout.fnmatch_lines(
        ["*ERROR at setup of test_fixture*", message.format("test_fixture")]
    )
    # with the factory a name may come later: said when the test ends
    result.stdout.fnmatch_lines(
        ["*ERROR at teardown of test_factory*", message.format("test_factory")]
    )
    result.stdout.fnmatch_lines(
        ["*vaurien marker on test_empty: target='' is not a proxy name or a list of them*"]
    )


def test_the_factory_names_proxies_for_target(pytester, echo_server):
    host, port = echo_server.address
    pytester.makepyfile(f"""
        import pytest


        @pytest.mark.vaurien("hang", target="slow")
        def test_it(vaurien_proxy_factory):
            slow = vaurien_proxy_factory("{host}:{port}", name="slow")
            fast = vaurien_proxy_factory("{host}:{port}", name="fast")
            unnamed = vaurien_proxy_factory("{host}:{port}")
            assert (slow.behavior, fast.behavior, unnamed.behavior) == ("hang", "100:dummy", "100:dummy")
            with pytest.raises(Exception, match="a proxy named 'fast' already runs in this test"):
                vaurien_proxy_factory("{host}:{port}", name="fast")


        @pytest.mark.vaurien("hang", target="slow")
        def test_named_too_late(vaurien_proxy_factory):
            vaurien_proxy_factory("{host}:{port}", name="fast")
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=2, errors=1)  # the second errs at teardown
    result.stdout.fnmatch_lines(
        [
            "*vaurien marker on test_named_too_late: target 'slow' names no proxy of this test; "
            "its proxies: fast"
        ]
    )


def test_ini_vaurien_distants(pytester, redis_server, postgres_server):
    pytester.makeini(f"""
        [pytest]
        vaurien_distants =
            # the cache
            cache = {redis_server.distant}
            db = {postgres_server.distant}
    """)
    pytester.makepyfile(f"""
        import pytest


        def test_default_fixture(vaurien_distant, vaurien_proxies):
            assert vaurien_distant == {{"cache": "{redis_server.distant}", "db": "{postgres_server.distant}"}}
            assert vaurien_proxies["cache"].distant == "{redis_server.distant}"


        @pytest.mark.vaurien(distant="127.0.0.1:1", target="db")
        def test_marker_distant_per_name(vaurien_distant):
            assert vaurien_distant["db"] == "127.0.0.1:1"
            assert vaurien_distant["cache"] == "{redis_server.distant}"


        def test_flag(vaurien_proxy, vaurien_proxies, request):
            flag = request.config.getoption("vaurien_distant")
            assert sorted(vaurien_proxies) == (["cache", "db", "default"] if flag else ["cache", "db"])
    """)
    pytester.runpytest().assert_outcomes(passed=2, errors=1)
    # --vaurien-distant is the default entry
    result = pytester.runpytest("--vaurien-distant", redis_server.distant, "-k", "flag")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("ini", "message"),
    [
        (
            "vaurien_distants = cache",
            "*vaurien_distants (tox.ini): 'cache' is not NAME = HOST:PORT",
        ),
        (
            "vaurien_distants = cache = 127.0.0.1",
            "*vaurien_distants (tox.ini): cache: '127.0.0.1' has no port*",
        ),
        (
            "vaurien_distants =\n    a = 127.0.0.1:1\n    a = 127.0.0.1:2",
            "*vaurien_distants (tox.ini): 'a' is given twice*",
        ),
        (
            "vaurien_distant = 127.0.0.1:1\nvaurien_distants = a = 127.0.0.1:2",
            "*vaurien_distant and vaurien_distants (tox.ini) are both set*",
        ),
    ],
)
def test_bad_vaurien_distants_is_a_usage_error(pytester, ini, message):
    (pytester.path / "tox.ini").write_text(f"[pytest]\n{ini}\n")
    pytester.makepyfile("def test_it(): pass")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_a_failing_test_reports_each_proxy(stores):
    stores.makepyfile("""
        import pytest

        from stores import redis_client


        @pytest.mark.vaurien("blackout", target="postgres")
        def test_it(vaurien_proxies):
            client = redis_client(vaurien_proxies["redis"])
            try:
                client.ping()
            finally:
                client.close()
            assert False, "fails on purpose"
    """)
    result = stores.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*Captured vaurien call*",
            "*-> 127.0.0.1:*, behavior '100:dummy': 1 connection",
            "*-> 127.0.0.1:*, behavior 'blackout': 0 connections",
        ]
    )


EXAMPLES = Path(__file__).resolve().parent / "fixtures_examples"
DOCS = Path(__file__).resolve().parent.parent / "docs"


def run_example(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    redis_server: backends.Server,
    postgres_server: backends.Server,
) -> pytest.RunResult:
    """Run tests/fixtures_examples/``name`` as a user would, against both servers."""
    monkeypatch.setenv("REDIS_ADDRESS", redis_server.distant)
    monkeypatch.setenv("POSTGRES_ADDRESS", postgres_server.distant)
    pytester.makepyfile(**{f"test_{name}": (EXAMPLES / f"{name}.py").read_text()})
    return pytester.runpytest()


def doc_blocks(page: str) -> list[str]:
    """The python code blocks of a docs page."""
    text = (DOCS / page).read_text()
    return [block.split("```", 1)[0] for block in text.split("```python\n")[1:]]


def test_the_several_backends_example_runs(pytester, monkeypatch, redis_server, postgres_server):
    result = run_example(
        pytester, monkeypatch, "example_several_backends", redis_server, postgres_server
    )
    result.assert_outcomes(passed=4)


def test_the_several_backends_page_shows_the_example_word_for_word():
    example = (EXAMPLES / "example_several_backends.py").read_text()
    blocks = doc_blocks("several-backends.md")
    assert len(blocks) >= 3
    for block in blocks:
        assert block in example, block


def test_vaurien_protocols_frames_each_backend_in_its_own_protocol(stores):
    """Session pools of Redis and PostgreSQL, each proxy framing its own
    protocol: a marker's rule faults one Redis command and one SQL statement,
    in a test whose pools were opened by the test before it."""
    stores.makeini("""
        [pytest]
        vaurien_protocols =
            redis = redis
            postgres = postgresql
    """)
    stores.makepyfile("""
        import psycopg
        import pytest
        import redis

        from stores import pg_connect, redis_client

        POOLS = {}


        def test_open_the_pools(vaurien_session_proxies):
            assert vaurien_session_proxies["redis"].protocol == "redis"
            assert vaurien_session_proxies["postgres"].protocol == "postgresql"
            POOLS["redis"] = redis_client(vaurien_session_proxies["redis"])
            POOLS["pg"] = pg_connect(vaurien_session_proxies["postgres"])
            assert POOLS["redis"].ping()
            assert POOLS["pg"].execute("SELECT 1").fetchone() == (1,)


        @pytest.mark.vaurien(target="redis", rules=["error; reply=READONLY replica; match=SET"])
        @pytest.mark.vaurien(
            target="postgres",
            rules=["error; sqlstate=40001; message=could not serialize; match=UPDATE *"],
        )
        def test_faults_per_command(vaurien_session_proxies):
            with pytest.raises(redis.exceptions.ReadOnlyError):
                POOLS["redis"].set("k", "v")
            assert POOLS["redis"].get("k") is None
            with pytest.raises(psycopg.errors.SerializationFailure):
                POOLS["pg"].execute("UPDATE pg_class SET relname = relname WHERE false")
            assert POOLS["pg"].execute("SELECT 2").fetchone() == (2,)
            requests = [e.request for e in vaurien_session_proxies["redis"].exchanges]
            assert "SET" in requests and "GET" in requests
            faults = [e.fault for e in vaurien_session_proxies["postgres"].exchanges if e.injected]
            assert faults == ["error"]


        def test_after_it_the_pools_relay_untouched():
            assert POOLS["redis"].set("k", "v")
            POOLS["pg"].execute("UPDATE pg_class SET relname = relname WHERE false")
            POOLS["redis"].close()
            POOLS["pg"].close()
    """)
    stores.runpytest("-p", "no:randomly").assert_outcomes(passed=3)


def test_vaurien_protocols_names_a_bad_line(pytester):
    pytester.makeini("""
        [pytest]
        vaurien_protocols =
            cache = resp
    """)
    pytester.makepyfile("def test_it(): pass")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*vaurien_protocols (tox.ini): cache: unknown protocol 'resp'; known: http, memcache*"]
    )
