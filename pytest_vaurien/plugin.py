"""pytest wiring only: options, ini keys, the marker, fixtures, the header.

Everything here turns pytest's view of configuration into
:mod:`pytest_vaurien.settings` layers and hands them to the engine.
Configuration errors from the command line and ini files surface as one
``pytest.UsageError``; a bad marker fails its own test.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import random
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from pytest_vaurien.address import format_address
from pytest_vaurien.config_file import ConfigFile, read_config_file
from pytest_vaurien.engine.proxy import Proxy
from pytest_vaurien.errors import ConfigError, HandlerError, ProxyError, VaurienError
from pytest_vaurien.plan import check_settings
from pytest_vaurien.records import Stats, render_fault_report
from pytest_vaurien.registry import Registry, make_plugin_manager, registry_from_plugins
from pytest_vaurien.rules import Rule
from pytest_vaurien.settings import (
    Layer,
    Settings,
    parse_handler_assignment,
    parse_handler_lines,
    resolve,
)

__all__ = ["ProxyFactory"]

ProxyFactory = Callable[..., Proxy]

_BASE_REGISTRY = pytest.StashKey[Registry]()
_LAYERS = pytest.StashKey[list[Layer]]()
_SEED = pytest.StashKey[int]()
_TEST_SETTINGS = pytest.StashKey[Settings]()
_PROXY_COUNT = pytest.StashKey[int]()
_ITEM_PROXIES = pytest.StashKey[list[Proxy]]()
_SESSION_STATS = pytest.StashKey[Stats]()
_MARKER_READ = pytest.StashKey[bool]()
#: What a test keeps of its own until its last report is made; dropped then,
#: since pytest keeps every item (and its stash) until the session ends.
_PER_TEST_KEYS: tuple[pytest.StashKey[Any], ...] = (
    _TEST_SETTINGS,
    _PROXY_COUNT,
    _ITEM_PROXIES,
    _MARKER_READ,
)
#: The fixtures that read the ``vaurien`` marker (or depend on one that does).
MARKER_FIXTURES = ("vaurien_proxy", "vaurien_proxy_factory", "vaurien_distant")

DISTANT_HELP = "Backend the proxy relays to, as HOST:PORT or [IPV6]:PORT"
BEHAVIOR_HELP = "Which faults connections get, e.g. '20:delay,10:error' (the rest: dummy)"
HANDLERS_HELP = "Handler options, one NAME.OPTION = VALUE a line (e.g. delay.sleep = 2)"
MARKER_DOC = (
    "vaurien(behavior=None, *, distant=None, protocol=None, rules=None, allow_refused=False, "
    "**NAME__OPTION): run the vaurien_proxy fixture of this test with this behavior (e.g. "
    "'20:delay,10:error'), backend HOST:PORT, protocol ('tcp', 'http': faults per request), "
    "rules (pytest_vaurien.Rule objects or strings such as 'error; status=503; "
    "schedule=first:2') and handler options (e.g. delay__sleep=2); allow_refused=True lets the "
    "test pass when the backend refused every connection."
)
PROTOCOL_HELP = (
    "What the proxy frames: tcp (faults per connection, the default) or http (per request)"
)
RULE_HELP = (
    "A rule: the fault, then '; key=value' pairs, e.g. "
    "'error; status=503; match=POST /payments/*; schedule=first:2'"
)
REFUSED_EVERY_CONNECTION = "backend {distant} refused every connection ({count}); is it running?"
NO_DISTANT = (
    "vaurien_proxy needs a backend address and none is configured; set it one of four ways: "
    '@pytest.mark.vaurien(distant="HOST:PORT") on the test, --vaurien-distant HOST:PORT on '
    "the command line, vaurien_distant = HOST:PORT in the ini file, or a vaurien_distant "
    'fixture in conftest.py that returns "HOST:PORT"'
)


def _fail(error: BaseException) -> NoReturn:
    """Fail the test with the error's message alone: no traceback, no chain."""
    raise pytest.fail.Exception(str(error), pytrace=False) from None


def _seed_type(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vaurien", "vaurien chaos TCP proxy")
    group.addoption(
        "--vaurien-distant", dest="vaurien_distant", metavar="HOST:PORT", help=DISTANT_HELP
    )
    group.addoption(
        "--vaurien-behavior", dest="vaurien_behavior", metavar="SPEC", help=BEHAVIOR_HELP
    )
    group.addoption(
        "--vaurien-handler",
        dest="vaurien_handler",
        action="append",
        default=[],
        metavar="NAME.OPTION=VALUE",
        help="Set a handler option, e.g. delay.sleep=2 (repeatable)",
    )
    group.addoption(
        "--vaurien-config",
        dest="vaurien_config",
        metavar="FILE",
        help="A vaurien ini file ([vaurien], [handler:NAME]); overrides vaurien_config",
    )
    group.addoption(
        "--vaurien-seed",
        dest="vaurien_seed",
        type=_seed_type,
        metavar="N",
        help="Seed every random choice of the proxies, to replay a run",
    )
    group.addoption(
        "--vaurien-protocol", dest="vaurien_protocol", metavar="NAME", help=PROTOCOL_HELP
    )
    group.addoption(
        "--vaurien-rule",
        dest="vaurien_rule",
        action="append",
        default=[],
        metavar="RULE",
        help=RULE_HELP + " (repeatable; replaces the ini file's rules)",
    )
    parser.addini("vaurien_distant", DISTANT_HELP)
    parser.addini("vaurien_protocol", PROTOCOL_HELP)
    parser.addini("vaurien_rules", "Rules, one a line: " + RULE_HELP, type="linelist")
    parser.addini("vaurien_behavior", BEHAVIOR_HELP)
    parser.addini("vaurien_handlers", HANDLERS_HELP, type="linelist")
    parser.addini(
        "vaurien_config",
        "A vaurien ini file, relative to this file; below the "
        "other vaurien_* options in precedence",
    )


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_vaurien import pytest_hookspecs

    pluginmanager.add_hookspecs(pytest_hookspecs)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_DOC)
    ini_name = config.inipath.name if config.inipath else "ini file"
    try:
        ini = Layer(
            source=f"vaurien_handlers ({ini_name})",
            distant=config.getini("vaurien_distant") or None,
            behavior=config.getini("vaurien_behavior") or None,
            options=parse_handler_lines(
                config.getini("vaurien_handlers"), f"vaurien_handlers ({ini_name})"
            ),
            distant_source=f"vaurien_distant ({ini_name})",
            behavior_source=f"vaurien_behavior ({ini_name})",
            protocol=config.getini("vaurien_protocol") or None,
            protocol_source=f"vaurien_protocol ({ini_name})",
            rules=_rule_lines(config.getini("vaurien_rules")),
            rules_source=f"vaurien_rules ({ini_name})",
        )
        cli = Layer(
            source="--vaurien-handler",
            distant=config.getoption("vaurien_distant"),
            behavior=config.getoption("vaurien_behavior"),
            options=dict(
                parse_handler_assignment(text, "--vaurien-handler")
                for text in config.getoption("vaurien_handler")
            ),
            distant_source="--vaurien-distant",
            behavior_source="--vaurien-behavior",
            protocol=config.getoption("vaurien_protocol"),
            protocol_source="--vaurien-protocol",
            rules=config.getoption("vaurien_rule"),
            rules_source="--vaurien-rule",
        )
        base = registry_from_plugins(make_plugin_manager())
        layers = [ini, cli]
        config_file = _read_config_file(config)
        if config_file is not None:
            layers.insert(0, config_file.layer)
            config_file.register_aliases(base)
        check_settings(resolve(layers), _known_registry(config, base), skip_unknown=True)
    except VaurienError as error:
        raise pytest.UsageError(str(error)) from None
    config.stash[_BASE_REGISTRY] = base
    config.stash[_LAYERS] = layers
    config.stash[_SEED] = _session_seed(config, resolve(layers).seed)
    config.stash[_SESSION_STATS] = Stats()
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(), "vaurien-xdist")


def _rule_lines(lines: list[str]) -> list[str]:
    """The ini file's rule lines, blank ones and ``#`` comments left out."""
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _read_config_file(config: pytest.Config) -> ConfigFile | None:
    """``--vaurien-config`` (relative to the invocation directory), else
    ``vaurien_config`` (relative to the ini file)."""
    flag = config.getoption("vaurien_config")
    ini_value = config.getini("vaurien_config")
    if flag:
        where, path = "--vaurien-config", Path(config.invocation_params.dir, flag)
    elif ini_value:
        base = config.inipath.parent if config.inipath else config.rootpath
        ini_name = config.inipath.name if config.inipath else "ini file"
        where, path = f"vaurien_config ({ini_name})", base / ini_value
    else:
        return None
    try:
        return read_config_file(path)
    except VaurienError as error:
        raise ConfigError(f"{where}: {error}") from None


def pytest_collection_finish(session: pytest.Session) -> None:
    """Check handler names once every collected test's conftest is loaded.

    A handler may come from a ``conftest.py`` deep in the tree, unknown when
    ``pytest_configure`` ran; after collection, a name nobody defines in the
    command line or ini options is a usage error, not N failed tests.
    """
    config = session.config
    if hasattr(config, "workerinput"):
        # an xdist worker cannot end the run with a usage error (xdist reports
        # a crash); there, each test that uses a proxy fails with the message
        return
    layers: list[Layer] = config.stash[_LAYERS]
    try:
        check_settings(resolve(layers), _known_registry(config, config.stash[_BASE_REGISTRY]))
    except VaurienError as error:
        raise pytest.UsageError(str(error)) from None


def _known_registry(config: pytest.Config, base: Registry) -> Registry:
    """The base registry plus what every conftest loaded so far adds.

    Collisions are left for the tests to report: sibling conftests may each
    define a name for their own directory.
    """
    impls = config.hook.pytest_vaurien_add_handlers.get_hookimpls()
    return _with_hook_handlers(base, impls, config, tolerant=True)


def _with_hook_handlers(
    base: Registry, impls: list[Any], config: pytest.Config, *, tolerant: bool = False
) -> Registry:
    """A copy of ``base`` with what each ``pytest_vaurien_add_handlers``
    implementation returns, called as pluggy would (last registered first;
    ``config`` only to those that take it).

    :param tolerant: skip an implementation that fails or collides.
    """
    registry = base.copy()
    for impl in reversed(impls):
        origin = _origin(impl.plugin_name)
        try:
            kwargs = {"config": config} if "config" in impl.argnames else {}
            try:
                batch = impl.function(**kwargs)
            except Exception as error:
                raise HandlerError(f"{origin} failed: {error!r}") from error
            registry.add_batch(batch, origin)
        except VaurienError:
            if not tolerant:
                raise
    return registry


def _session_seed(config: pytest.Config, configured: int | None) -> int:
    """The worker's inherited seed, else --vaurien-seed, else the config file's, else random."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and "vaurien_seed" in workerinput:
        return int(workerinput["vaurien_seed"])
    seed = config.getoption("vaurien_seed")
    if seed is None:
        seed = configured
    return seed if seed is not None else random.SystemRandom().randrange(10**9)


class _XdistHooks:
    """Hand the controller's seed to every worker, and collect their totals
    (registered only with xdist)."""

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["vaurien_seed"] = node.config.stash[_SEED]

    def pytest_testnodedown(self, node: Any, error: object) -> None:
        totals = getattr(node, "workeroutput", {}).get("vaurien_stats")
        if totals:
            config = node.config
            config.stash[_SESSION_STATS] = config.stash[_SESSION_STATS] + Stats(**totals)


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None and _SESSION_STATS in session.config.stash:
        workeroutput["vaurien_stats"] = dataclasses.asdict(session.config.stash[_SESSION_STATS])


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    stats = config.stash.get(_SESSION_STATS, None)
    if stats is None or not stats.connections or hasattr(config, "workerinput"):
        return
    faults = ", ".join(f"{name} {count}" for name, count in stats.faults.items()) or "none"
    plural = "" if stats.connections == 1 else "s"
    line = f"vaurien: {stats.connections} connection{plural} proxied; faults injected: {faults}"
    if stats.refused:
        # never got a handler: a dead backend is not a fault that was injected
        line += f"; {stats.refused} refused by the backend"
    terminalreporter.write_line(line)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Add the fault report to a failing test's report, and totals to every one."""
    report = yield
    proxies = item.stash.get(_ITEM_PROXIES, [])
    if proxies:
        # item.user_properties reach the later reports, and JUnit XML (which
        # reads them from the teardown report)
        if report.when == "call":
            stats = sum((proxy.stats for proxy in proxies), Stats())
            item.user_properties.append(("vaurien_connections", stats.connections))
            item.user_properties.append(("vaurien_faults", sum(stats.faults.values())))
            if stats.exchanges:
                item.user_properties.append(("vaurien_exchanges", stats.exchanges))
        if report.failed:
            text = fault_report(item, proxies)
            report.sections.append((f"Captured vaurien {report.when}", text))
            item.user_properties.append(("vaurien_seed", item.config.stash[_SEED]))
            item.user_properties.append(("vaurien_report", text))
            report.user_properties = list(item.user_properties)
    if report.when == "teardown":
        _warn_if_marker_unused(item)
        # the last report is made: what reports needed is in them, so let the
        # proxies, their handlers and records go (pytest keeps items to the end)
        for key in _PER_TEST_KEYS:
            if key in item.stash:
                del item.stash[key]
    return report


def _warn_if_marker_unused(item: pytest.Item) -> None:
    """Warn when the test's own ``vaurien`` marker configured nothing.

    Only a marker on the test itself: a module's or class's marker sets
    defaults for its proxy tests, and the plain tests beside them are fine.
    """
    if not any(mark.name == "vaurien" for mark in item.own_markers):
        return
    if item.stash.get(_MARKER_READ, False):
        return  # e.g. request.getfixturevalue("vaurien_proxy")
    fixtures = getattr(item, "fixturenames", ())
    if any(name in fixtures for name in MARKER_FIXTURES):
        return
    item.warn(
        pytest.PytestWarning(
            f"vaurien marker on {item.nodeid} has no effect: the test uses no vaurien "
            f"fixture ({', '.join(MARKER_FIXTURES)})"
        )
    )


def replay_command(item: pytest.Item) -> str:
    """The command line that replays ``item`` with the same faults."""
    # always quoted (a parametrized id holds brackets a shell would expand)
    quoted = "'" + item.nodeid.replace("'", "'\"'\"'") + "'"
    return f"pytest {quoted} --vaurien-seed={item.config.stash[_SEED]}"


def fault_report(item: pytest.Item, proxies: list[Proxy]) -> str:
    """What the proxies of ``item`` did, for a failing test's report."""
    return render_fault_report(item.config.stash[_SEED], replay_command(item), proxies)


def pytest_report_header(config: pytest.Config) -> str:
    seed = config.stash[_SEED]
    return f"vaurien: seed={seed}"


def _origin(plugin_name: str) -> str:
    if plugin_name.endswith("conftest.py"):
        try:
            plugin_name = str(Path(plugin_name).relative_to(Path.cwd()))
        except ValueError:
            pass
        return f"pytest_vaurien_add_handlers in {plugin_name}"
    return f"pytest_vaurien_add_handlers of pytest plugin {plugin_name!r}"


def _test_registry(request: pytest.FixtureRequest) -> Registry:
    """Built-ins and entry points, plus what this test's conftests add."""
    impls = request.node.ihook.pytest_vaurien_add_handlers.get_hookimpls()
    return _with_hook_handlers(request.config.stash[_BASE_REGISTRY], impls, request.config)


def _marker_layers(item: pytest.Item) -> list[Layer]:
    """A layer per ``vaurien`` marker, from the farthest (module) to the closest
    (function): a module may set the distant and each test its behavior."""
    item.stash[_MARKER_READ] = True
    return [_marker_layer(item, marker) for marker in reversed(list(item.iter_markers("vaurien")))]


def _check_allow_refused(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: allow_refused={value!r} is not a bool; expected True or False")
    return value


def _marker_allows_refused(item: pytest.Item) -> bool:
    """The closest marker's ``allow_refused``, False when none says."""
    for marker in item.iter_markers("vaurien"):  # closest first
        if "allow_refused" in marker.kwargs:
            where = f"vaurien marker on {item.name}"
            return _check_allow_refused(marker.kwargs["allow_refused"], where)
    return False


def _marker_layer(item: pytest.Item, marker: pytest.Mark) -> Layer:
    where = f"vaurien marker on {item.name}"
    kwargs = dict(marker.kwargs)
    if len(marker.args) > 1:
        raise VaurienError(
            f"{where}: takes at most one positional argument (the behavior), got {len(marker.args)}"
        )
    if marker.args:
        if "behavior" in kwargs:
            raise VaurienError(
                f"{where}: behavior given both as the first argument and as behavior="
            )
        kwargs["behavior"] = marker.args[0]
    distant = kwargs.pop("distant", None)
    behavior = kwargs.pop("behavior", None)
    protocol = kwargs.pop("protocol", None)
    rules = kwargs.pop("rules", None)
    if "allow_refused" in kwargs:
        _check_allow_refused(kwargs.pop("allow_refused"), where)
    if behavior is not None and not isinstance(behavior, str):
        raise VaurienError(
            f"{where}: behavior={behavior!r} is not a string; expected e.g. '20:delay,10:error'"
        )
    return Layer.from_keywords(where, distant, behavior, kwargs, protocol=protocol, rules=rules)


def _layers(item: pytest.Item) -> list[Layer]:
    configured: list[Layer] = item.config.stash[_LAYERS]
    return [*configured, *_marker_layers(item)]


def _settings_for(request: pytest.FixtureRequest) -> Settings:
    item: pytest.Item = request.node
    if _TEST_SETTINGS not in item.stash:
        try:
            item.stash[_TEST_SETTINGS] = resolve(_layers(item))
        except VaurienError as error:
            _fail(error)
    return item.stash[_TEST_SETTINGS]


def _proxy_seed(item: pytest.Item, index: int) -> int:
    """Same session seed, test and proxy index -> same seed, whatever the order."""
    text = f"{item.config.stash[_SEED]}:{item.nodeid}:{index}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


@pytest.fixture
def vaurien_distant(request: pytest.FixtureRequest) -> str | tuple[str, int]:
    """Where the backend is, as ``"HOST:PORT"``: override it to use your own server.

    By default the marker's ``distant=``, else ``--vaurien-distant``, else the
    ``vaurien_distant`` ini option. To point every test at a server the suite
    starts itself, define a fixture of this name in ``conftest.py`` (any
    scope) that returns ``"HOST:PORT"`` or a ``(host, port)`` tuple.
    """
    settings = _settings_for(request)
    if settings.distant is None:
        pytest.fail(NO_DISTANT, pytrace=False)
    return format_address(settings.distant)


@pytest.fixture
def vaurien_proxy_factory(request: pytest.FixtureRequest) -> Iterator[ProxyFactory]:
    """Make more proxies in one test: ``factory(distant, behavior=..., **options)``.

    Each call starts a proxy in front of ``distant`` (``"HOST:PORT"`` or a
    tuple) with the configured behavior and options, overridden by the call's
    ``behavior`` and ``NAME__OPTION=value`` arguments. All are stopped when
    the test ends; the test then fails if one's backend refused every
    connection, unless ``allow_refused=True`` (the call's, else the marker's).
    """
    item = request.node
    try:
        registry = _test_registry(request)
        base_layers = _layers(item)
        marker_allows = _marker_allows_refused(item)
    except VaurienError as error:
        _fail(error)
    proxies: list[tuple[Proxy, bool]] = []

    def factory(
        distant: str | tuple[str, int],
        behavior: str | None = None,
        *,
        allow_refused: bool | None = None,
        protocol: str | None = None,
        rules: list[Rule | str] | None = None,
        **options: Any,
    ) -> Proxy:
        where = "vaurien_proxy_factory()"
        allowed = (
            marker_allows if allow_refused is None else _check_allow_refused(allow_refused, where)
        )
        call = Layer.from_keywords(
            where, distant, behavior, options, protocol=protocol, rules=rules
        )
        proxy = _start(item, registry, resolve([*base_layers, call]))
        proxies.append((proxy, allowed))
        return proxy

    yield factory
    _stop_all(request.config, proxies)


def _start(item: pytest.Item, registry: Registry, settings: Settings) -> Proxy:
    index = item.stash.get(_PROXY_COUNT, 0)
    proxy = Proxy.from_settings(
        settings,
        registry=registry,
        seed=_proxy_seed(item, index),
        name=f"vaurien-proxy[{item.nodeid}]" + (f"#{index}" if index else ""),
    )
    item.stash[_PROXY_COUNT] = index + 1
    proxy.start()
    item.stash.setdefault(_ITEM_PROXIES, []).append(proxy)
    return proxy


def _stop_all(config: pytest.Config, proxies: list[tuple[Proxy, bool]]) -> None:
    """Stop every proxy, then fail the test for what it could not see:
    a proxy that did not stop, a handler that raised, a dead backend."""
    problems: list[str] = []
    for proxy, allow_refused in proxies:
        try:
            proxy.stop()
        except ProxyError as error:
            problems.append(str(error))
        stats = proxy.stats
        config.stash[_SESSION_STATS] = config.stash[_SESSION_STATS] + stats
        for record in proxy.errors:
            problems.append(f"handler error on {proxy.name}, connection {record.describe()}")
        if stats.connections and stats.refused == stats.connections and not allow_refused:
            # every client got a reset, which a test expecting a fault takes
            # for the fault: a dead backend must not pass (issue 11)
            problems.append(
                REFUSED_EVERY_CONNECTION.format(distant=proxy.distant, count=stats.refused)
            )
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def vaurien_proxy(request: pytest.FixtureRequest, vaurien_proxy_factory: ProxyFactory) -> Proxy:
    """A running chaos proxy in front of ``vaurien_distant``, stopped after the test.

    Connect to ``vaurien_proxy.address``. The behavior and handler options come
    from the ``vaurien`` marker, the command line or the ini file;
    ``set_behavior()`` changes them live, ``connections`` tells what happened.
    """
    try:
        markers = _marker_layers(request.node)
    except VaurienError as error:
        _fail(error)
    marked = [layer.distant for layer in markers if layer.distant is not None]
    distant = marked[-1] if marked else request.getfixturevalue("vaurien_distant")
    try:
        return vaurien_proxy_factory(distant)
    except VaurienError as error:
        _fail(error)
