"""``--vaurien-control URL``: the fixtures make each test's proxies on a running
``vaurien --control`` and delete them after; markers, rules, reports and the
refused-every-connection check work as in-process."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from tests import backends
from tests.servers import EchoServer, refused_address

pytest_plugins = ["pytester"]

#: Imported before any in-process inner run (see tests/test_several_backends.py).
CLIENT_MODULES = (psycopg, redis)


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> Iterator[backends.ControlProcess]:
    with backends.start_control_server(tmp_path_factory.mktemp("control")) as server:
        yield server


def _remote_proxies(control: backends.ControlProcess) -> list[dict[str, object]]:
    with urllib.request.urlopen(f"{control.url}/v1/proxies", timeout=10) as response:
        return list(json.load(response)["proxies"])


def test_markers_rules_and_live_changes_reach_the_remote_proxy(
    pytester: pytest.Pytester, control: backends.ControlProcess, echo_server: EchoServer
) -> None:
    host, port = echo_server.address
    pytester.makepyfile(f"""
        import socket

        import pytest

        from pytest_vaurien.remote import RemoteTestProxy


        def echo(address):
            with socket.create_connection(address, timeout=10) as sock:
                sock.sendall(b"ping")
                return sock.recv(10)


        @pytest.mark.vaurien(distant="{host}:{port}", rules=["abort; schedule=first:1; name=cut"])
        def test_remote(vaurien_proxy):
            assert isinstance(vaurien_proxy, RemoteTestProxy)
            assert vaurien_proxy.host == "127.0.0.1"
            assert echo(vaurien_proxy.address) == b""
            assert echo(vaurien_proxy.address) == b"ping"
            assert vaurien_proxy.wait("cut", 1, timeout=10)["fired"] == 1
            with vaurien_proxy.add_rule("abort; name=again"):
                assert echo(vaurien_proxy.address) == b""
            assert [rule.name for rule in vaurien_proxy.rules] == ["cut"]
            with vaurien_proxy.down():
                with pytest.raises(ConnectionRefusedError):
                    socket.create_connection(vaurien_proxy.address, timeout=10)
            assert echo(vaurien_proxy.address) == b"ping"
            assert len(vaurien_proxy.connections) == 4


        @pytest.mark.vaurien(distant="{host}:{port}", behavior="100:delay", delay__sleep=0.01)
        def test_options_and_seed(vaurien_proxy):
            assert vaurien_proxy.behavior == "100:delay"
            assert vaurien_proxy.options == {{"delay": {{"sleep": 0.01}}}}
            assert vaurien_proxy.remote.data["seed"] == vaurien_proxy.seed
    """)
    result = pytester.runpytest("--vaurien-control", control.url, "--vaurien-seed", "7")
    result.assert_outcomes(passed=2)
    assert _remote_proxies(control) == []  # each deleted after its test


def test_a_failing_test_reports_the_remote_connections(
    pytester: pytest.Pytester, control: backends.ControlProcess, echo_server: EchoServer
) -> None:
    host, port = echo_server.address
    pytester.makeini(f"""
        [pytest]
        vaurien_control = {control.url}
        vaurien_distant = {host}:{port}
    """)
    pytester.makepyfile("""
        import socket


        def test_fails(vaurien_proxy):
            with socket.create_connection(vaurien_proxy.address, timeout=10) as sock:
                sock.sendall(b"ping")
                assert sock.recv(10) == b"ping"
            assert False, "the app misbehaved"
    """)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*Captured vaurien call*",
            f"proxy 127.0.0.1:* -> {host}:{port}, behavior '100:dummy': 1 connection",
            "0 * dummy * 4 * 4 * client closed",
        ]
    )
    assert _remote_proxies(control) == []


def test_a_dead_backend_fails_the_test_as_in_process(
    pytester: pytest.Pytester, control: backends.ControlProcess
) -> None:
    host, port = refused_address()
    pytester.makepyfile("""
        import socket


        def test_dead(vaurien_proxy):
            try:  # the backend refused: the client is reset or closed
                with socket.create_connection(vaurien_proxy.address, timeout=10) as sock:
                    sock.settimeout(10)
                    assert sock.recv(10) == b""
            except ConnectionResetError:
                pass
    """)
    result = pytester.runpytest(
        "--vaurien-control", control.url, "--vaurien-distant", f"{host}:{port}"
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines([f"*backend {host}:{port} refused every connection (1)*"])


def test_several_backends_and_target(
    pytester: pytest.Pytester, control: backends.ControlProcess, echo_server: EchoServer
) -> None:
    with EchoServer() as other:
        pytester.makeconftest(f"""
            import pytest


            @pytest.fixture
            def vaurien_distant():
                return {{"a": "{echo_server.distant}", "b": "{other.distant}"}}
        """)
        pytester.makepyfile("""
            import socket

            import pytest


            def echo(address):
                with socket.create_connection(address, timeout=10) as sock:
                    sock.sendall(b"ping")
                    return sock.recv(10)


            @pytest.mark.vaurien(target=["b", "c"], behavior="100:abort")
            def test_b_only(vaurien_proxies, vaurien_proxy_factory):
                assert echo(vaurien_proxies["a"].address) == b"ping"
                assert echo(vaurien_proxies["b"].address) == b""
                extra = vaurien_proxy_factory(vaurien_proxies["a"].distant, name="c")
                assert extra.behavior == "100:abort"
                assert echo(extra.address) == b""
        """)
        result = pytester.runpytest("--vaurien-control", control.url)
    result.assert_outcomes(passed=1)
    assert _remote_proxies(control) == []


def test_what_the_server_refuses_fails_the_test_naming_the_field(
    pytester: pytest.Pytester, control: backends.ControlProcess, echo_server: EchoServer
) -> None:
    pytester.makepyfile(f"""
        import pytest


        @pytest.mark.vaurien(distant="{echo_server.distant}", behavior="100:my.own.Handler")
        def test_unknown_there(vaurien_proxy):
            pass
    """)
    result = pytester.runpytest("--vaurien-control", control.url)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*HTTP 400*behavior*"])


def test_an_unreachable_control_api_is_one_clear_error(
    pytester: pytest.Pytester, echo_server: EchoServer
) -> None:
    host, port = refused_address()
    pytester.makepyfile("def test_it(vaurien_proxy): pass")
    result = pytester.runpytest(
        "--vaurien-control", f"http://{host}:{port}", "--vaurien-distant", echo_server.distant
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*cannot reach the control API at http://{host}:{port}*"])


def test_a_bad_url_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_it(): pass")
    result = pytester.runpytest("--vaurien-control", "ftp://x")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--vaurien-control: control API URL 'ftp://x' is not valid*"])


def test_the_token_comes_from_the_environment(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    echo_server: EchoServer,
    tmp_path: Path,
) -> None:
    with backends.start_control_server(
        tmp_path, env={"VAURIEN_CONTROL_TOKEN": "s3cret"}
    ) as guarded:
        pytester.makepyfile("def test_it(vaurien_proxy): pass")
        args = ("--vaurien-control", guarded.url, "--vaurien-distant", echo_server.distant)
        refused = pytester.runpytest(*args)
        refused.assert_outcomes(errors=1)
        refused.stdout.fnmatch_lines(["*HTTP 401*"])
        monkeypatch.setenv("VAURIEN_CONTROL_TOKEN", "s3cret")
        pytester.runpytest(*args).assert_outcomes(passed=1)


def test_session_proxies_live_on_the_control_api_too(
    pytester: pytest.Pytester,
    control: backends.ControlProcess,
    redis_server: backends.Server,
    postgres_server: backends.Server,
) -> None:
    """Pools opened once, through session proxies made on the remote vaurien:
    each test gets its own marker's faults there, relay between tests, its own
    records; the proxies are deleted at the end of the session."""
    pytester.makeini(f"""
        [pytest]
        vaurien_control = {control.url}
        vaurien_distants =
            cache = {redis_server.distant}
            db = {postgres_server.distant}
        vaurien_protocols =
            cache = redis
            db = postgresql
    """)
    pytester.makepyfile("""
        import psycopg
        import pytest
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        from pytest_vaurien.remote import RemoteTestProxy

        POOLS = {}


        def test_open(vaurien_session_proxies):
            cache, db = vaurien_session_proxies["cache"], vaurien_session_proxies["db"]
            assert isinstance(cache.proxy, RemoteTestProxy)
            assert (cache.protocol, db.protocol) == ("redis", "postgresql")
            POOLS["r"] = redis.Redis(*cache.address, socket_timeout=2, retry=Retry(NoBackoff(), 0))
            POOLS["pg"] = psycopg.connect(
                host=db.host, port=db.port, user="vaurien", dbname="postgres", autocommit=True
            )
            assert POOLS["r"].ping()


        @pytest.mark.vaurien(target="cache", rules=["error; reply=READONLY replica; match=SET"])
        def test_failover(vaurien_session_proxies):
            with pytest.raises(redis.exceptions.ReadOnlyError):
                POOLS["r"].set("remote-k", "v")
            assert POOLS["pg"].execute("SELECT 1").fetchone() == (1,)
            cache = vaurien_session_proxies["cache"]
            assert [e.request for e in cache.exchanges] == ["SET"]
            assert cache.rule("error#1").fired == 1


        def test_relay_again(vaurien_session_proxies):
            assert POOLS["r"].set("remote-k", "v")
            assert vaurien_session_proxies["cache"].rules == []
            POOLS["r"].close()
            POOLS["pg"].close()
    """)
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=3)
    assert _remote_proxies(control) == []
