"""The pytest side: marker, command line, ini, precedence, fixtures, errors."""

from __future__ import annotations

import socket
import textwrap

import pytest

#: What the inner test files start with: tests/client.py is beside them as ``client``.
INNER_IMPORTS = """\
import socket

import pytest

from client import roundtrip
"""


@pytest.fixture
def make_test(pytester, upper_source):
    """``make_test(body)``: a test file of ``body``, with ``upper`` registered by a conftest hook."""

    def make(body: str, conftest_handlers: bool = True) -> None:
        if conftest_handlers:
            pytester.makeconftest(
                upper_source
                + textwrap.dedent("""
                def pytest_vaurien_add_handlers(config):
                    return [Upper]
            """)
            )
        pytester.makepyfile(INNER_IMPORTS + textwrap.dedent(body))

    return make


def test_marker_sets_distant_behavior_and_options(make_test, pytester, echo_server):
    make_test(
        f'''
        @pytest.mark.vaurien(behavior="upper", distant="{echo_server.distant}", upper__suffix="!")
        def test_it(vaurien_proxy):
            assert roundtrip(vaurien_proxy.address) == b"PING!"
            assert vaurien_proxy.behavior == "upper"
            assert vaurien_proxy.distant == "{echo_server.distant}"
            assert vaurien_proxy.host == "127.0.0.1" and vaurien_proxy.port > 0
            assert vaurien_proxy.address == (vaurien_proxy.host, vaurien_proxy.port)
            [record] = vaurien_proxy.connections
            assert record.handler == "upper" and record.bytes_to_backend == 4
    ''',
    )
    pytester.runpytest("--strict-markers").assert_outcomes(passed=1)


def test_marker_takes_the_behavior_as_first_argument(make_test, pytester, echo_server):
    make_test(
        f'''
        @pytest.mark.vaurien("upper", distant="{echo_server.distant}")
        def test_it(vaurien_proxy):
            assert roundtrip(vaurien_proxy.address) == b"PING"
    ''',
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_command_line_options(make_test, pytester, echo_server):
    make_test(
        """
        def test_it(vaurien_proxy):
            assert roundtrip(vaurien_proxy.address) == b"PING?"
    """,
    )
    result = pytester.runpytest(
        "--vaurien-distant",
        echo_server.distant,
        "--vaurien-behavior",
        "upper",
        "--vaurien-handler",
        "upper.suffix=?",
    )
    result.assert_outcomes(passed=1)


def test_ini_options(make_test, pytester, echo_server):
    pytester.makeini(f"""
        [pytest]
        vaurien_distant = {echo_server.distant}
        vaurien_behavior = upper
        vaurien_handlers =
            upper.suffix = ~
    """)
    make_test(
        """
        def test_it(vaurien_proxy):
            assert roundtrip(vaurien_proxy.address) == b"PING~"
    """,
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_precedence_marker_over_command_line_over_ini(make_test, pytester, echo_server):
    pytester.makeini("""
        [pytest]
        vaurien_distant = 127.0.0.1:1
        vaurien_behavior = dummy
        vaurien_handlers =
            handlers.upper.suffix = ini
    """)
    make_test(
        """
        def test_cli_over_ini(vaurien_proxy):
            assert roundtrip(vaurien_proxy.address) == b"PINGcli"

        @pytest.mark.vaurien(upper__suffix="marker")
        def test_marker_over_cli(vaurien_proxy):
            assert roundtrip(vaurien_proxy.address) == b"PINGmarker"

        @pytest.mark.vaurien("dummy")
        def test_marker_behavior(vaurien_proxy):
            assert roundtrip(vaurien_proxy.address) == b"ping"
    """,
    )
    result = pytester.runpytest(
        "--vaurien-distant",
        echo_server.distant,
        "--vaurien-behavior",
        "upper",
        "--vaurien-handler",
        "upper.suffix=cli",
    )
    result.assert_outcomes(passed=3)


def test_the_config_file_ranks_below_ini_options(make_test, pytester, echo_server):
    """vaurien_config is the lowest layer: the ini's own options win, and the
    file still gives what nothing above it sets (here the distant and the seed)."""
    (pytester.path / "chaos.ini").write_text(
        textwrap.dedent(f"""
        [vaurien]
        distant = {echo_server.distant}
        behavior = dummy
        seed = 77

        [handler:upper]
        suffix = file
    """)
    )
    pytester.makeini("""
        [pytest]
        vaurien_config = chaos.ini
        vaurien_behavior = upper
        vaurien_handlers =
            upper.suffix = ini
    """)
    make_test(
        """
        def test_ini_over_file(vaurien_proxy):
            assert vaurien_proxy.behavior == "upper"
            assert roundtrip(vaurien_proxy.address) == b"PINGini"
    """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["vaurien: seed=77"])
    pytester.runpytest("--vaurien-seed", "5").stdout.fnmatch_lines(["vaurien: seed=5"])


def test_markers_merge_from_module_to_function_and_the_closest_wins(
    make_test, pytester, echo_server
):
    make_test(
        f'''
        pytestmark = pytest.mark.vaurien("upper", distant="{echo_server.distant}",
                                         upper__suffix="!")

        def test_module_level(vaurien_proxy):
            assert roundtrip(vaurien_proxy.address) == b"PING!"

        @pytest.mark.vaurien("dummy")
        def test_function_behavior_module_distant(vaurien_proxy):
            assert roundtrip(vaurien_proxy.address) == b"ping"

        class TestClass:
            pytestmark = pytest.mark.vaurien(upper__suffix="?")

            def test_class_option(self, vaurien_proxy):
                assert roundtrip(vaurien_proxy.address) == b"PING?"

            @pytest.mark.vaurien(upper__suffix="#")
            def test_function_option(self, vaurien_proxy):
                assert roundtrip(vaurien_proxy.address) == b"PING#"
    ''',
    )
    pytester.runpytest().assert_outcomes(passed=4)


def test_vaurien_distant_fixture_can_be_overridden(pytester, upper_source, echo_server):
    host, port = echo_server.address
    pytester.makeconftest(
        upper_source
        + textwrap.dedent(f'''
        import pytest

        def pytest_vaurien_add_handlers(config):
            return [Upper]

        @pytest.fixture(scope="session")
        def vaurien_distant():
            return ("{host}", {port})
    ''')
    )
    pytester.makepyfile(
        INNER_IMPORTS
        + textwrap.dedent("""
        @pytest.mark.vaurien("upper")
        def test_it(vaurien_proxy, vaurien_distant):
            assert roundtrip(vaurien_proxy.address) == b"PING"
    """)
    )
    pytester.runpytest("--vaurien-distant", "127.0.0.1:1").assert_outcomes(passed=1)


def test_each_override_of_vaurien_distant_reaches_the_proxy(pytester, echo_server, backend):
    """A subdirectory's conftest, a module, a class and ``parametrize`` each
    override the fixture for their tests only; the others keep the flag's."""
    pytester.makepyfile(
        test_plain="""
        def test_flag(vaurien_proxy):
            assert vaurien_proxy.distant == "127.0.0.1:1"
        """,
        test_module=f"""
        import pytest

        @pytest.fixture
        def vaurien_distant():
            return "{backend.distant}"

        def test_module(vaurien_proxy):
            assert vaurien_proxy.distant == "{backend.distant}"

        class TestClass:
            @pytest.fixture
            def vaurien_distant(self):
                return "{echo_server.distant}"

            def test_class(self, vaurien_proxy):
                assert vaurien_proxy.distant == "{echo_server.distant}"

        @pytest.mark.parametrize("vaurien_distant", ["{echo_server.distant}"])
        def test_parametrized(vaurien_proxy, vaurien_distant):
            assert vaurien_proxy.distant == "{echo_server.distant}"
        """,
    )
    sub = pytester.mkpydir("sub")
    (sub / "conftest.py").write_text(
        textwrap.dedent(f"""
        import pytest

        @pytest.fixture
        def vaurien_distant():
            return "{backend.distant}"
        """)
    )
    (sub / "test_sub.py").write_text(
        textwrap.dedent(f"""
        def test_sub(vaurien_proxy):
            assert vaurien_proxy.distant == "{backend.distant}"
        """)
    )
    result = pytester.runpytest("--vaurien-distant", "127.0.0.1:1", "-p", "no:randomly")
    result.assert_outcomes(passed=5)


def test_a_proxy_whose_backend_is_configured_resolves_its_settings_once(pytester, echo_server):
    """The common case, no override of ``vaurien_distant``: the settings are
    resolved once per proxy (each resolve costs the test microseconds), and
    the marker's distant still beats the command line's."""
    pytester.makeconftest("""
        import pytest
        from pytest_vaurien import plugin

        CALLS = []
        _real = plugin.resolve

        def _counting(layers):
            CALLS.append(len(layers))
            return _real(layers)

        plugin.resolve = _counting

        @pytest.fixture(autouse=True)
        def resolves():
            CALLS.clear()
            return CALLS
    """)
    pytester.makepyfile(f"""
        import pytest

        pytestmark = pytest.mark.vaurien(distant="{echo_server.distant}")

        @pytest.mark.vaurien("delay", delay__sleep=0)
        def test_marked(resolves, vaurien_proxy):
            assert vaurien_proxy.distant == "{echo_server.distant}"
            assert len(resolves) == 1

        def test_module_marker_only(resolves, vaurien_proxy):
            assert vaurien_proxy.distant == "{echo_server.distant}"
            assert len(resolves) == 1
    """)
    result = pytester.runpytest("--vaurien-distant", "127.0.0.1:1", "-p", "no:randomly")
    result.assert_outcomes(passed=2)


def test_every_proxy_a_session_started_is_closed_when_it_ends(pytester, echo_server):
    """Teardown leaves an idle proxy to the hub to close without waiting; none
    is left listening by the end of the session, used or not."""
    addresses = pytester.path / "addresses.txt"
    pytester.makepyfile(
        INNER_IMPORTS
        + textwrap.dedent(f"""
        @pytest.mark.parametrize("n", range(40))
        def test_it(vaurien_proxy, n):
            with open({str(addresses)!r}, "a") as out:
                out.write("%s:%d\\n" % vaurien_proxy.address)
            if n % 2:
                assert roundtrip(vaurien_proxy.address, b"ping") == b"ping"
        """)
    )
    result = pytester.runpytest_subprocess("--vaurien-distant", echo_server.distant)
    result.assert_outcomes(passed=40)
    result.stdout.fnmatch_lines(["vaurien: 20 connections proxied*"])
    lines = addresses.read_text().split()
    assert len(lines) == 40
    for line in lines:
        host, port = line.rsplit(":", 1)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, int(port)), timeout=5)


def test_missing_distant_lists_the_four_ways(pytester):
    pytester.makepyfile("""
        def test_it(vaurien_proxy):
            pass
    """)
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "vaurien_proxy needs a backend address and none is configured*"
            "@pytest.mark.vaurien(distant=*--vaurien-distant HOST:PORT*vaurien_distant = "
            "HOST:PORT in the ini file*vaurien_distant fixture in conftest.py*",
        ]
    )
    result.stdout.no_fnmatch_line("*Traceback*")


def test_factory_makes_several_proxies_and_stops_them(make_test, pytester, echo_server):
    make_test(
        f'''
        import threading

        MADE = []

        def test_it(vaurien_proxy_factory):
            plain = vaurien_proxy_factory("{echo_server.distant}")
            loud = vaurien_proxy_factory({echo_server.address!r}, behavior="upper",
                                         upper__suffix="#")
            assert plain.port != loud.port
            assert roundtrip(plain.address) == b"ping"
            assert roundtrip(loud.address) == b"PING#"
            # one shared hub thread serves every proxy of the process
            assert [t.name for t in threading.enumerate()].count("vaurien-hub") == 1
            assert plain.running and loud.running
            MADE.extend((plain, loud))

        def test_after(vaurien_proxy_factory):
            assert MADE
            assert not any(proxy.running for proxy in MADE)
    ''',
    )
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=2)


def test_set_behavior_live_in_a_test(make_test, pytester, echo_server):
    make_test(
        f'''
        @pytest.mark.vaurien(distant="{echo_server.distant}")
        def test_it(vaurien_proxy):
            with socket.create_connection(vaurien_proxy.address, timeout=5) as pooled:
                pooled.sendall(b"a")
                assert pooled.recv(10) == b"a"
                with vaurien_proxy.set_behavior("upper", upper__suffix="+"):
                    assert roundtrip(vaurien_proxy.address) == b"PING+"
                    pooled.sendall(b"a")
                    assert pooled.recv(10) == b"A+"
                assert vaurien_proxy.behavior == "100:dummy"
                pooled.sendall(b"a")
                assert pooled.recv(10) == b"a"
    ''',
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_marker_is_registered_for_strict_markers(pytester):
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(
        ["@pytest.mark.vaurien(behavior=None, *, distant=None, **NAME__OPTION)*"]
    )


def test_options_are_in_a_vaurien_group_of_help(pytester):
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(
        [
            "vaurien chaos TCP proxy:",
            "*--vaurien-distant=HOST:PORT*",
            "*--vaurien-behavior=SPEC*",
            "*--vaurien-handler=NAME.OPTION=VALUE*",
            "*--vaurien-seed=N*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*vaurien_distant (string)*",
            "*vaurien_behavior (string)*",
            "*vaurien_handlers (linelist)*",
        ]
    )


def test_fixtures_are_documented(pytester):
    result = pytester.runpytest("--fixtures")
    # pytest lists them in the order of "file:line" as text, which moves as the file grows
    for fixture, summary in [
        ("vaurien_distant", "*Where the backend is*"),
        ("vaurien_proxy_factory", "*Make more proxies in one test*"),
        ("vaurien_proxy", "*A running chaos proxy*"),
    ]:
        result.stdout.fnmatch_lines([f"{fixture} -- *", summary])


def test_header_shows_the_seed(pytester):
    pytester.makepyfile("def test_it(): pass")
    result = pytester.runpytest("--vaurien-seed", "1234")
    result.stdout.fnmatch_lines(["vaurien: seed=1234"])


@pytest.mark.parametrize(
    ("args", "ini", "message"),
    [
        (
            ["--vaurien-behavior", "20:dealy"],
            "",
            "ERROR: --vaurien-behavior: unknown handler 'dealy'; known: abort, bandwidth, blackout, delay, dummy, error, hang, latency, limit_data, reset_peer, slicer, slow_close, timeout, transient, upper",
        ),
        (
            ["--vaurien-behavior", "60:upper,50:dummy"],
            "",
            "ERROR: --vaurien-behavior: '60:upper,50:dummy': percentages add up to 110; at most 100",
        ),
        (
            ["--vaurien-distant", "localhost"],
            "",
            "ERROR: --vaurien-distant: 'localhost' has no port; expected HOST:PORT",
        ),
        (
            ["--vaurien-handler", "upper.suffix"],
            "",
            "ERROR: --vaurien-handler: 'upper.suffix' is not an option setting; "
            "expected NAME.OPTION=VALUE, e.g. delay.sleep=2",
        ),
        (
            ["--vaurien-handler", "upper.sufix=1"],
            "",
            "ERROR: --vaurien-handler: handler 'upper' has no option 'sufix'; known options: suffix",
        ),
        (
            [],
            "vaurien_behavior = 120:upper",
            "ERROR: vaurien_behavior (tox.ini): '120:upper': '120:upper' has percentage '120'; "
            "expected a number from 0 to 100",
        ),
        (
            [],
            "vaurien_distant = [::1]80",
            "ERROR: vaurien_distant (tox.ini): '[::1]80' is not an address; expected [IPV6]:PORT",
        ),
        (
            [],
            "vaurien_handlers = nonsense",
            "ERROR: vaurien_handlers (tox.ini): 'nonsense' is not an option setting; "
            "expected NAME.OPTION=VALUE, e.g. delay.sleep=2",
        ),
    ],
)
def test_startup_configuration_errors_are_usage_errors(make_test, pytester, args, ini, message):
    pytester.makeini(f"[pytest]\n{ini}\n")
    make_test("def test_it(): pass")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    result.stderr.no_fnmatch_line("*Traceback*")


def test_bad_seed_is_an_argument_error(pytester):
    result = pytester.runpytest("--vaurien-seed", "abc")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*argument --vaurien-seed: 'abc' is not an integer"])


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        (
            '"20:nope"',
            "vaurien marker on test_it: behavior: unknown handler 'nope'; known: abort, bandwidth, blackout, delay, dummy, error, hang, latency, limit_data, reset_peer, slicer, slow_close, timeout, transient, upper",
        ),
        (
            '"upper", sleep=2',
            "vaurien marker on test_it: unexpected keyword argument 'sleep'; "
            "expected behavior=, distant= or NAME__OPTION=VALUE*",
        ),
        (
            '"upper", upper__sufix=2',
            "vaurien marker on test_it: handler 'upper' has no option "
            "'sufix'; known options: suffix",
        ),
        (
            '"upper", "dummy"',
            "vaurien marker on test_it: takes at most one positional argument "
            "(the behavior), got 2",
        ),
        ("behavior=20", "vaurien marker on test_it: behavior=20 is not a string*"),
        ('distant="nowhere"', "vaurien marker on test_it: distant: 'nowhere' has no port*"),
        ('"110:upper"', "vaurien marker on test_it: behavior: '110:upper'*has percentage '110'*"),
    ],
)
def test_bad_marker_fails_that_test_only(make_test, pytester, echo_server, marker, message):
    make_test(
        f"""
        @pytest.mark.vaurien({marker})
        def test_it(vaurien_proxy):
            pass

        @pytest.mark.vaurien("upper")
        def test_other(vaurien_proxy):
            assert roundtrip(vaurien_proxy.address) == b"PING"
    """,
    )
    result = pytester.runpytest("--vaurien-distant", echo_server.distant)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines([message])
    result.stdout.no_fnmatch_line("*Traceback*")


def test_handler_errors_surface_in_the_test(pytester, echo_server):
    pytester.makeconftest(
        textwrap.dedent("""
        from pytest_vaurien import BaseHandler

        class Broken(BaseHandler):
            name = "broken"

            def __call__(self, client_sock, backend_sock, to_backend):
                self._get_data(client_sock, backend_sock, to_backend)
                raise RuntimeError("handler bug")

        def pytest_vaurien_add_handlers(config):
            return [Broken]
    """)
    )
    pytester.makepyfile(
        INNER_IMPORTS
        + textwrap.dedent(f'''
        @pytest.mark.vaurien("broken", distant="{echo_server.distant}")
        def test_it(vaurien_proxy):
            assert roundtrip(vaurien_proxy.address) == b""
    ''')
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*handler error on vaurien-proxy*", "*RuntimeError: handler bug*"])


def test_unknown_handler_under_xdist_fails_the_proxy_tests_cleanly(pytester, echo_server):
    """Workers cannot end an xdist run with a usage error (xdist reports an
    INTERNALERROR): the tests that use a proxy fail with the message instead."""
    pytester.makepyfile(
        """
        def test_plain():
            pass

        def test_proxy(vaurien_proxy):
            pass
        """
    )
    result = pytester.runpytest_subprocess(
        "-n",
        "2",
        "--vaurien-distant",
        echo_server.distant,
        "--vaurien-behavior",
        "20:dealy",
        timeout=120,
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["--vaurien-behavior: unknown handler 'dealy'; known: *"])
    result.stdout.no_fnmatch_line("*INTERNALERROR*")
    result.stdout.no_fnmatch_line("*During handling*")
