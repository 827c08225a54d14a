"""Custom handlers, registered the three ways: conftest hook, dotted path, entry point."""

from __future__ import annotations

import textwrap

import pytest

from pytest_vaurien import BaseHandler, ConfigError, HandlerError
from pytest_vaurien.registry import Registry, make_plugin_manager, registry_from_plugins

#: What the inner test files start with: tests/client.py is beside them as ``client``.
INNER_IMPORTS = """\
import pytest

from client import roundtrip

"""

REVERSE = '''
from pytest_vaurien import BaseHandler


class Reverse(BaseHandler):
    """Reverses each reply chunk."""

    name = "reverse"

    def __call__(self, client_sock, backend_sock, to_backend):
        data = self._get_data(client_sock, backend_sock, to_backend)
        if data:
            (backend_sock if to_backend else client_sock).sendall(
                data if to_backend else data[::-1])
        return bool(data)
'''

USES_REVERSE = (
    INNER_IMPORTS
    + """
def test_it(vaurien_proxy):
    assert roundtrip(vaurien_proxy.address, b"abc") == b"cba"
"""
)


def test_handler_from_a_conftest_hook_applies_below_it_only(pytester, echo_server):
    pytester.mkpydir("chaos")
    pytester.path.joinpath("chaos", "conftest.py").write_text(
        REVERSE
        + textwrap.dedent("""
        def pytest_vaurien_add_handlers(config):
            return [Reverse]
    """)
    )
    pytester.path.joinpath("chaos", "test_in.py").write_text(USES_REVERSE)
    pytester.path.joinpath("test_out.py").write_text(USES_REVERSE)
    result = pytester.runpytest(
        "--vaurien-distant", echo_server.distant, "-o", "vaurien_behavior=reverse"
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*unknown handler 'reverse'; known: abort, bandwidth, blackout, delay, dummy, error, hang, latency, limit_data, reset_peer, slicer, slow_close, timeout, transient"
        ]
    )


def test_a_hook_may_leave_out_the_config_argument(pytester, echo_server):
    pytester.makeconftest(
        REVERSE
        + textwrap.dedent("""
        def pytest_vaurien_add_handlers():
            return [Reverse]
    """)
    )
    pytester.makepyfile(USES_REVERSE)
    result = pytester.runpytest(
        "--vaurien-distant", echo_server.distant, "--vaurien-behavior", "reverse"
    )
    result.assert_outcomes(passed=1)


def test_handler_by_dotted_path(pytester, echo_server):
    pytester.makepyfile(myhandlers=REVERSE)
    pytester.syspathinsert()
    pytester.makepyfile(
        INNER_IMPORTS
        + textwrap.dedent(f'''
        @pytest.mark.vaurien("50:myhandlers.Reverse,50:myhandlers.Reverse",
                             distant="{echo_server.distant}")
        def test_it(vaurien_proxy):
            assert roundtrip(vaurien_proxy.address, b"abc") == b"cba"
            assert vaurien_proxy.connections[0].handler == "myhandlers.Reverse"
    ''')
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_handler_from_an_installed_entry_point(pytester, echo_server, monkeypatch):
    site = pytester.mkdir("site")
    package = site / "reverse_vaurien"
    package.mkdir()
    (package / "__init__.py").write_text(
        REVERSE
        + textwrap.dedent("""
        import pytest_vaurien

        @pytest_vaurien.hookimpl
        def vaurien_add_handlers():
            return [Reverse]
    """)
    )
    info = site / "reverse_vaurien-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: reverse-vaurien\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[vaurien]\nreverse = reverse_vaurien\n")
    monkeypatch.syspath_prepend(str(site))

    registry = registry_from_plugins(make_plugin_manager())
    assert registry.resolve("reverse").__name__ == "Reverse"
    assert dict(registry.registrations())["reverse"].origin == "entry point 'reverse'"

    pytester.makepyfile(USES_REVERSE)
    result = pytester.runpytest(
        "--vaurien-distant", echo_server.distant, "--vaurien-behavior", "reverse"
    )
    result.assert_outcomes(passed=1)


def test_a_name_defined_twice_names_both_sources(pytester, echo_server):
    pytester.makeconftest(
        textwrap.dedent("""
        from pytest_vaurien import BaseHandler

        class MyDummy(BaseHandler):
            name = "dummy"

        def pytest_vaurien_add_handlers(config):
            return [MyDummy]
    """)
    )
    pytester.makepyfile("def test_it(vaurien_proxy): pass\n")
    result = pytester.runpytest("--vaurien-distant", echo_server.distant)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "handler name 'dummy' is defined twice: by built-in "
            "(pytest_vaurien.handlers.dummy.Dummy) and by pytest_vaurien_add_handlers in "
            "*conftest.py (conftest.MyDummy)"
        ]
    )


def test_a_hook_returning_something_else_is_named(pytester, echo_server):
    pytester.makeconftest("def pytest_vaurien_add_handlers(config):\n    return [42]\n")
    pytester.makepyfile("def test_it(vaurien_proxy): pass\n")
    result = pytester.runpytest("--vaurien-distant", echo_server.distant)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "pytest_vaurien_add_handlers in *conftest.py returned 42; "
            "expected a subclass of pytest_vaurien.BaseHandler"
        ]
    )


class Named(BaseHandler):
    name = "named"


def test_registry_errors(tmp_path, monkeypatch):
    registry = Registry()
    registry.add(Named, "here")
    registry.add(Named, "here again")  # the same class twice is harmless
    with pytest.raises(HandlerError, match="has name ''; expected an identifier"):
        registry.add(type("Anon", (BaseHandler,), {}), "there")
    with pytest.raises(ConfigError, match="unknown handler 'nope'; known: named"):
        registry.resolve("nope")
    with pytest.raises(ConfigError, match="'pytest_vaurien' has no attribute 'nothere'"):
        registry.resolve("pytest_vaurien.nothere.X")
    (tmp_path / "needs_dep.py").write_text("import no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(
        HandlerError,
        match="importing 'needs_dep.Handler' failed: No module named 'no_such_dependency'",
    ):
        registry.resolve("needs_dep.Handler")
    with pytest.raises(ConfigError, match="'pytest_vaurien' has no attribute 'Nope'"):
        registry.resolve("pytest_vaurien.Nope")
    with pytest.raises(ConfigError, match="expected a subclass of pytest_vaurien.BaseHandler"):
        registry.resolve("pytest_vaurien.Proxy")
    with pytest.raises(ConfigError, match="no module of that path imports"):
        registry.resolve("nosuchpackage.Handler")
    assert registry.resolve("tests.test_registry.Named") is Named
