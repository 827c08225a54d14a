"""The plugin does not let a test pass silently, and does not hold on to proxies.

A dead backend must not pass for an injected fault; a marker that no fixture
reads is a warning; refused connections are not counted as faults; a test's
proxies are let go once its reports are made.
"""

from __future__ import annotations

import textwrap

import pytest

from pytest_vaurien.records import ConnectionRecord, Ending, Stats
from tests.servers import refused_address

CLIENT = """
import socket

import pytest


def poke(address):
    '''Connect, send a byte, read until the proxy closes or resets; the bytes read.'''
    try:  # the reset may come as soon as the connect
        with socket.create_connection(address, timeout=5) as sock:
            sock.sendall(b"x")
            return sock.recv(100)
    except ConnectionResetError:
        return b""
"""


@pytest.fixture
def dead() -> str:
    """A loopback address nobody listens on, as ``"HOST:PORT"``."""
    host, port = refused_address()
    return f"{host}:{port}"


def make_test(pytester: pytest.Pytester, body: str) -> None:
    pytester.makepyfile(CLIENT + textwrap.dedent(body))


# -- a backend that refused every connection ---------------------------------


def test_a_backend_that_refused_every_connection_fails_the_test(pytester, dead):
    """The test expected a fault and "got" one: the proxy reset its client
    because nothing listens behind it. That is a dead backend, not a fault."""
    make_test(
        pytester,
        f"""
        @pytest.mark.vaurien("error", distant="{dead}")
        def test_it(vaurien_proxy):
            assert poke(vaurien_proxy.address) == b""
            assert poke(vaurien_proxy.address) == b""
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines([f"*backend {dead} refused every connection (2); is it running?"])
    result.stdout.no_fnmatch_line("*Traceback*")


def test_the_marker_allows_refusals(pytester, dead):
    make_test(
        pytester,
        f"""
        @pytest.mark.vaurien(distant="{dead}", allow_refused=True)
        def test_it(vaurien_proxy):
            assert poke(vaurien_proxy.address) == b""
            assert str(vaurien_proxy.connections[0].ending) == "backend refused"
        """,
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_the_closest_marker_says_whether_refusals_are_allowed(pytester, dead):
    make_test(
        pytester,
        f"""
        pytestmark = pytest.mark.vaurien(distant="{dead}", allow_refused=True)

        def test_module_allows(vaurien_proxy):
            poke(vaurien_proxy.address)

        @pytest.mark.vaurien(allow_refused=False)
        def test_function_forbids(vaurien_proxy):
            poke(vaurien_proxy.address)
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_function_forbids*"])


def test_factory_proxies_are_checked_and_the_call_may_allow_refusals(pytester, dead, echo_server):
    make_test(
        pytester,
        f"""
        def test_refused(vaurien_proxy_factory):
            live = vaurien_proxy_factory("{echo_server.distant}")
            gone = vaurien_proxy_factory("{dead}")
            assert poke(live.address) == b"x"
            poke(gone.address)

        def test_allowed(vaurien_proxy_factory):
            gone = vaurien_proxy_factory("{dead}", allow_refused=True)
            poke(gone.address)

        @pytest.mark.vaurien(allow_refused=True)
        def test_the_call_overrides_the_marker(vaurien_proxy_factory):
            gone = vaurien_proxy_factory("{dead}", allow_refused=False)
            poke(gone.address)
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=3, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_refused*",
            f"*backend {dead} refused every connection (1); is it running?",
            "*ERROR at teardown of test_the_call_overrides_the_marker*",
        ]
    )
    result.stdout.no_fnmatch_line(f"*backend {echo_server.distant} refused*")


def test_a_proxy_that_had_no_connection_or_some_served_passes(pytester, dead, echo_server):
    make_test(
        pytester,
        f"""
        @pytest.mark.vaurien(distant="{dead}")
        def test_no_connection(vaurien_proxy):
            pass

        def test_served(vaurien_proxy):
            assert poke(vaurien_proxy.address) == b"x"
        """,
    )
    pytester.runpytest("--vaurien-distant", echo_server.distant).assert_outcomes(passed=2)


def test_connections_refused_or_closed_by_down_are_not_the_backends(pytester, echo_server):
    make_test(
        pytester,
        """
        import socket

        def test_down(vaurien_proxy):
            sock = socket.create_connection(vaurien_proxy.address, timeout=5)
            try:
                sock.sendall(b"x")
                assert sock.recv(10) == b"x"
                with vaurien_proxy.down():
                    assert sock.recv(10) == b""
                    with pytest.raises(ConnectionRefusedError):
                        socket.create_connection(vaurien_proxy.address, timeout=5)
            finally:
                sock.close()
            assert [str(r.ending) for r in vaurien_proxy.connections] == ["proxy down"]
        """,
    )
    pytester.runpytest("--vaurien-distant", echo_server.distant).assert_outcomes(passed=1)


@pytest.mark.parametrize("value", ['"yes"', "1", "None"])
def test_allow_refused_must_be_a_bool(pytester, echo_server, value):
    make_test(
        pytester,
        f"""
        @pytest.mark.vaurien(allow_refused={value})
        def test_it(vaurien_proxy):
            pass
        """,
    )
    result = pytester.runpytest("--vaurien-distant", echo_server.distant)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            f"vaurien marker on test_it: allow_refused={value.replace(chr(34), chr(39))} "
            "is not a bool; expected True or False"
        ]
    )


def test_the_factory_rejects_a_non_bool_allow_refused(pytester, echo_server):
    make_test(
        pytester,
        f"""
        from pytest_vaurien import ConfigError

        def test_it(vaurien_proxy_factory):
            with pytest.raises(ConfigError, match="allow_refused='yes' is not a bool"):
                vaurien_proxy_factory("{echo_server.distant}", allow_refused="yes")
        """,
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_the_marker_doc_names_allow_refused(pytester):
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.vaurien(*allow_refused=False*"])


# -- a marker that nothing reads ---------------------------------------------


def test_a_marker_on_a_test_without_a_vaurien_fixture_warns(pytester, echo_server):
    make_test(
        pytester,
        """
        @pytest.mark.vaurien("delay")
        def test_forgot_the_fixture():
            pass

        @pytest.mark.vaurien("delay", delay__sleep=0)
        def test_uses_it(vaurien_proxy):
            pass

        @pytest.fixture
        def client(vaurien_proxy):
            return vaurien_proxy.address

        @pytest.mark.vaurien("delay", delay__sleep=0)
        def test_through_a_fixture(client):
            pass

        @pytest.mark.vaurien("delay", delay__sleep=0)
        def test_dynamic(request):
            request.getfixturevalue("vaurien_proxy")
        """,
    )
    result = pytester.runpytest("--vaurien-distant", echo_server.distant)
    result.assert_outcomes(passed=4)
    warned = [line for line in result.outlines if "has no effect: the test uses no" in line]
    assert len(warned) == 1
    result.stdout.fnmatch_lines(
        [
            "*test_*.py::test_forgot_the_fixture",
            "*PytestWarning: vaurien marker on "
            "test_a_marker_on_a_test_without_a_vaurien_fixture_warns.py::test_forgot_the_fixture "
            "has no effect: the test uses no vaurien fixture*",
        ]
    )


def test_a_module_marker_does_not_warn_for_the_tests_that_use_no_proxy(pytester, echo_server):
    """A module-wide marker sets defaults for the module's proxy tests; the
    plain tests beside them are not a mistake."""
    make_test(
        pytester,
        """
        pytestmark = pytest.mark.vaurien("delay", delay__sleep=0)

        def test_plain():
            pass

        def test_proxy(vaurien_proxy):
            pass
        """,
    )
    result = pytester.runpytest("--vaurien-distant", echo_server.distant)
    result.assert_outcomes(passed=2)
    result.stdout.no_fnmatch_line("*has no effect*")


# -- refused connections in the totals ---------------------------------------


def test_refused_connections_are_not_faults():
    refused = ConnectionRecord(0, "127.0.0.1:1")
    refused.end(Ending.BACKEND_REFUSED, "Connection refused")
    delayed = ConnectionRecord(1, "127.0.0.1:2", handler="delay")
    delayed.end(Ending.CLIENT_CLOSED)
    plain = ConnectionRecord(2, "127.0.0.1:3", handler="dummy")
    stats = Stats.of([refused, delayed, plain])
    assert stats.faults == {"delay": 1}
    assert stats.refused == 1
    assert (stats + stats).refused == 2


def test_the_session_summary_names_refusals_apart_from_faults(pytester, dead):
    make_test(
        pytester,
        f"""
        @pytest.mark.vaurien("error", distant="{dead}", allow_refused=True)
        def test_it(vaurien_proxy):
            poke(vaurien_proxy.address)
        """,
    )
    result = pytester.runpytest("--junitxml=out.xml")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["vaurien: 1 connection proxied; faults injected: none; 1 refused by the backend"]
    )
    result.stdout.no_fnmatch_line("*faults injected: - *")
    assert '<property name="vaurien_faults" value="0"' in (pytester.path / "out.xml").read_text()


# -- memory ------------------------------------------------------------------


def test_a_tests_proxies_are_let_go_once_it_ended(pytester, echo_server):
    """pytest keeps every item until the session ends; the proxies (and their
    records) must not live as long."""
    make_test(
        pytester,
        """
        import gc
        import sys
        import time
        import weakref

        refs = []

        @pytest.mark.parametrize("fails", [False, True])
        def test_makes_proxies(vaurien_proxy, vaurien_proxy_factory, vaurien_distant, fails):
            other = vaurien_proxy_factory(vaurien_distant)
            assert poke(vaurien_proxy.address) == b"x"
            refs.extend(weakref.ref(p) for p in (vaurien_proxy, other))
            refs.append(weakref.ref(vaurien_proxy.connections[0]))
            assert not fails

        def test_later():
            # pytest keeps the last failure's traceback (and so its frame's
            # arguments) in sys.last_*, for post-mortem debugging: not ours
            for name in ("last_type", "last_value", "last_traceback", "last_exc"):
                if hasattr(sys, name):
                    setattr(sys, name, None)
            assert len(refs) == 6
            # teardown leaves an idle proxy for the hub's thread to close: a
            # bounded poll gives that thread the moment it needs
            deadline = time.monotonic() + 5
            while gc.collect() is not None and any(ref() for ref in refs):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.005)
            assert [ref() for ref in refs] == [None] * 6
        """,
    )
    # in a subprocess: in-process, pytester records every hook call, and the
    # failing test's CallInfo (its traceback, its frames) with them
    result = pytester.runpytest_subprocess("--vaurien-distant", echo_server.distant, timeout=60)
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*Captured vaurien call*"])
