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
import os
import random
import sys
import time
import weakref
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import pytest

if TYPE_CHECKING:
    from pytest_vaurien.client import Client

from pytest_vaurien.address import format_address, parse_address
from pytest_vaurien.behavior import parse_behavior
from pytest_vaurien.config_file import ConfigFile, read_config_file
from pytest_vaurien.engine.proxy import Proxy
from pytest_vaurien.errors import ConfigError, HandlerError, VaurienError
from pytest_vaurien.plan import check_settings
from pytest_vaurien.protocols import check_protocol
from pytest_vaurien.records import (
    ConnectionRecord,
    Reported,
    Stats,
    render_fault_report,
)
from pytest_vaurien.registry import Registry, make_plugin_manager, registry_from_plugins
from pytest_vaurien.rules import Rule
from pytest_vaurien.session import SessionProxy, Window
from pytest_vaurien.settings import (
    Layer,
    Settings,
    parse_handler_assignment,
    parse_handler_lines,
    resolve,
)

__all__ = ["ProxyFactory", "SessionProxy"]

ProxyFactory = Callable[..., Proxy]


class _Tested(Reported, Protocol):
    """What a test's report and totals read of one of its proxies: a
    ``Proxy``, or a session proxy's view of that test."""

    @property
    def stats(self) -> Stats: ...


_BASE_REGISTRY = pytest.StashKey[Registry]()
_LAYERS = pytest.StashKey[list[Layer]]()
_SEED = pytest.StashKey[int]()
_DISTANTS = pytest.StashKey[dict[str, str]]()
#: ``vaurien_protocols``: the protocol of the proxies of some names.
_PROTOCOLS = pytest.StashKey[dict[str, Layer]]()
_PROXY_COUNT = pytest.StashKey[int]()
#: The test's proxies (fixture and factory ones) and their one teardown.
_TEST_PROXIES = pytest.StashKey["_TestProxies"]()
#: ``--vaurien-control``: the control API the tests' proxies are made on.
_CONTROL = pytest.StashKey["Client | None"]()
_ITEM_PROXIES = pytest.StashKey[list["_Tested"]]()
_SESSION_STATS = pytest.StashKey[Stats]()
#: Proxies asked to stop with no connection open, not yet seen stopped.
_STOPPING = pytest.StashKey[deque[tuple[weakref.ref[Proxy], float]]]()
#: How long, and how many, proxies may stop on their own before one is waited for.
STOP_GRACE = 1.0
MAX_STOPPING = 64
_MARKER_READ = pytest.StashKey[bool]()
#: The names of a test's proxies (fixture, factory and session ones), for ``target=``.
_PROXY_NAMES = pytest.StashKey[set[str]]()
#: The names the test's markers' ``target=`` give.
_TARGETS = pytest.StashKey[set[str]]()
#: Set once a test has failed for a ``target=`` that names no proxy: said once.
_TARGETS_REPORTED = pytest.StashKey[bool]()
#: What a test keeps of its own until its last report is made; dropped then,
#: since pytest keeps every item (and its stash) until the session ends.
_PER_TEST_KEYS: tuple[pytest.StashKey[Any], ...] = (
    _PROXY_COUNT,
    _TEST_PROXIES,
    _ITEM_PROXIES,
    _MARKER_READ,
    _PROXY_NAMES,
    _TARGETS,
    _TARGETS_REPORTED,
)
#: The fixtures that outlive a test; each test that uses one configures it for itself.
SESSION_FIXTURES = ("vaurien_session_proxy", "vaurien_session_proxies")
#: The fixtures that read the ``vaurien`` marker (or depend on one that does).
MARKER_FIXTURES = (
    "vaurien_proxy",
    "vaurien_proxies",
    "vaurien_proxy_factory",
    "vaurien_distant",
    *SESSION_FIXTURES,
)
#: The name of the proxy ``vaurien_proxy`` is, and of a lone distant's.
DEFAULT = "default"

DISTANT_HELP = "Backend the proxy relays to, as HOST:PORT or [IPV6]:PORT"
BEHAVIOR_HELP = "Which faults connections get, e.g. '20:delay,10:error' (the rest: dummy)"
HANDLERS_HELP = "Handler options, one NAME.OPTION = VALUE a line (e.g. delay.sleep = 2)"
DISTANTS_HELP = (
    "Several backends, one NAME = HOST:PORT a line: vaurien_proxies has a proxy for each, "
    "vaurien_proxy is the one named default"
)
MARKER_DOC = (
    "vaurien(behavior=None, *, distant=None, protocol=None, rules=None, allow_refused=False, "
    "target=None, **NAME__OPTION): run the vaurien_proxy fixture of this test with this "
    "behavior (e.g. '20:delay,10:error'), backend HOST:PORT, protocol ('tcp', 'http': faults "
    "per request), rules (pytest_vaurien.Rule objects or strings such as 'error; status=503; "
    "schedule=first:2') and handler options (e.g. delay__sleep=2); allow_refused=True lets the "
    "test pass when the backend refused every connection; target='NAME' (or a list) limits "
    "the marker to the proxies of those names (vaurien_proxies, factory name=)."
)
PROTOCOL_HELP = (
    "What the proxy frames: tcp (faults per connection, the default) or http (per request)"
)
RULE_HELP = (
    "A rule: the fault, then '; key=value' pairs, e.g. "
    "'error; status=503; match=POST /payments/*; schedule=first:2'"
)
CONTROL_HELP = (
    "Make the tests' proxies on the vaurien control API at URL (e.g. http://127.0.0.1:8474) "
    "instead of in this process; its token comes from $VAURIEN_CONTROL_TOKEN"
)
#: Where the control API's token comes from.
TOKEN_VARIABLE = "VAURIEN_CONTROL_TOKEN"
REFUSED_EVERY_CONNECTION = "backend {distant} refused every connection ({count}); is it running?"
NO_DISTANT = (
    "vaurien_proxy needs a backend address and none is configured; set it one of four ways: "
    '@pytest.mark.vaurien(distant="HOST:PORT") on the test, --vaurien-distant HOST:PORT on '
    "the command line, vaurien_distant = HOST:PORT in the ini file, or a vaurien_distant "
    'fixture in conftest.py that returns "HOST:PORT"'
)
NO_SESSION_DISTANT = (
    "vaurien_session_proxy needs a backend address and none is configured; set it one of "
    "three ways: --vaurien-distant HOST:PORT on the command line, vaurien_distant = HOST:PORT "
    '(or vaurien_distants) in the ini file, or a vaurien_distant fixture with scope="session" '
    'in conftest.py that returns "HOST:PORT" (or a dict of them); a marker\'s distant= does '
    "not move a session proxy"
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
    group.addoption("--vaurien-control", dest="vaurien_control", metavar="URL", help=CONTROL_HELP)
    parser.addini("vaurien_control", CONTROL_HELP)
    parser.addini("vaurien_distant", DISTANT_HELP)
    parser.addini("vaurien_distants", DISTANTS_HELP, type="linelist")
    parser.addini("vaurien_protocol", PROTOCOL_HELP)
    parser.addini(
        "vaurien_protocols",
        "The protocol of the proxy of each backend, one NAME = PROTOCOL a line "
        "(e.g. cache = redis); above vaurien_protocol, below --vaurien-protocol and markers",
        type="linelist",
    )
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
        distants = _parse_distants(
            config.getini("vaurien_distants"), f"vaurien_distants ({ini_name})"
        )
        if distants and ini.distant is not None:
            raise ConfigError(
                f"vaurien_distant and vaurien_distants ({ini_name}) are both set; keep one "
                f"(a lone backend is vaurien_distants' entry {DEFAULT} = HOST:PORT)"
            )
        where = f"vaurien_protocols ({ini_name})"
        protocols = {
            name: Layer(
                source=f"{where}: {name}",
                protocol=check_protocol(value, f"{where}: {name}"),
                protocol_source=f"{where}: {name}",
            )
            for name, value in _parse_lines(
                config.getini("vaurien_protocols"), where, "PROTOCOL"
            ).items()
        }
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
    config.stash[_CONTROL] = _control_client(config)
    config.stash[_LAYERS] = layers
    config.stash[_DISTANTS] = distants
    config.stash[_PROTOCOLS] = protocols
    config.stash[_SEED] = _session_seed(config, resolve(layers).seed)
    config.stash[_SESSION_STATS] = Stats()
    config.stash[_STOPPING] = deque()
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(), "vaurien-xdist")


def _control_client(config: pytest.Config) -> Client | None:
    """``--vaurien-control``, else ``vaurien_control``: the client of that API."""
    flag = config.getoption("vaurien_control")
    url = flag or config.getini("vaurien_control")
    if not url:
        return None
    from pytest_vaurien.client import Client

    where = "--vaurien-control" if flag else "vaurien_control"
    try:
        return Client(url, token=os.environ.get(TOKEN_VARIABLE) or None)
    except VaurienError as error:
        raise pytest.UsageError(f"{where}: {error}") from None


def _rule_lines(lines: list[str]) -> list[str]:
    """The ini file's rule lines, blank ones and ``#`` comments left out."""
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _parse_lines(lines: list[str], where: str, what: str) -> dict[str, str]:
    """One ``NAME = VALUE`` a line (blank ones and ``#`` comments left out)."""
    values: dict[str, str] = {}
    for line in _rule_lines(lines):
        name, sep, value = (part.strip() for part in line.partition("="))
        if not sep or not name or not value:
            raise ConfigError(f"{where}: {line!r} is not NAME = {what}")
        if name in values:
            raise ConfigError(f"{where}: {name!r} is given twice; names must differ")
        values[name] = value
    return values


def _parse_distants(lines: list[str], where: str) -> dict[str, str]:
    """``vaurien_distants``: one ``NAME = HOST:PORT`` a line, each address checked now."""
    return {
        name: format_address(parse_address(value, f"{where}: {name}"))
        for name, value in _parse_lines(lines, where, "HOST:PORT").items()
    }


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
    if _STOPPING in session.config.stash:
        try:
            _confirm_stopped(session.config, wait=True)
        except VaurienError as error:  # a handler blocks the hub: say so, end anyway
            reporter = session.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(f"vaurien: {error}", red=True)
            else:
                print(f"vaurien: {error}", file=sys.stderr)
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
            stats = (
                proxies[0].stats
                if len(proxies) == 1
                else sum((proxy.stats for proxy in proxies), Stats())
            )
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


def fault_report(item: pytest.Item, proxies: Sequence[Reported]) -> str:
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


def _marker_targets(item: pytest.Item, marker: pytest.Mark) -> tuple[str, ...] | None:
    """The proxy names a marker's ``target=`` limits it to; ``None``: every proxy."""
    target = marker.kwargs.get("target")
    if target is None:
        return None
    names = (target,) if isinstance(target, str) else target
    if (
        not isinstance(names, (list, tuple))
        or not names
        or not all(isinstance(name, str) and name for name in names)
    ):
        item.stash[_TARGETS_REPORTED] = True  # failed once; not again at teardown
        raise ConfigError(
            f"vaurien marker on {item.name}: target={target!r} is not a proxy name or a list "
            "of them; expected e.g. target='db' or target=['db', 'cache']"
        )
    return tuple(names)


def _markers_for(item: pytest.Item, name: str | None) -> list[pytest.Mark]:
    """The ``vaurien`` markers that apply to the proxy called ``name``, closest
    first: those without ``target=``, and those whose target names it."""
    markers = []
    for marker in item.iter_markers("vaurien"):
        targets = _marker_targets(item, marker)
        if targets is None or (name is not None and name in targets):
            markers.append(marker)
    return markers


def _marker_layers(item: pytest.Item, name: str | None = DEFAULT) -> list[Layer]:
    """A layer per ``vaurien`` marker that applies to the proxy ``name``, from the
    farthest (module) to the closest (function): a module may set the distant
    and each test its behavior."""
    item.stash[_MARKER_READ] = True
    return [_marker_layer(item, marker) for marker in reversed(_markers_for(item, name))]


def _check_allow_refused(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: allow_refused={value!r} is not a bool; expected True or False")
    return value


def _marker_allows_refused(item: pytest.Item, name: str | None = DEFAULT) -> bool:
    """The ``allow_refused`` of the closest marker that applies to ``name`` and
    says it; False when none does."""
    for marker in _markers_for(item, name):  # closest first
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
    kwargs.pop("target", None)  # read by _markers_for
    if "allow_refused" in kwargs:
        _check_allow_refused(kwargs.pop("allow_refused"), where)
    if behavior is not None and not isinstance(behavior, str):
        raise VaurienError(
            f"{where}: behavior={behavior!r} is not a string; expected e.g. '20:delay,10:error'"
        )
    return Layer.from_keywords(where, distant, behavior, kwargs, protocol=protocol, rules=rules)


def _layers(item: pytest.Item, name: str | None = DEFAULT) -> list[Layer]:
    """The command line's, ini file's and config file's layers, then the markers
    that apply to the proxy ``name``."""
    return [*_configured_layers(item.config, name), *_marker_layers(item, name)]


def _configured_layers(config: pytest.Config, name: str | None) -> list[Layer]:
    """The config file's, ini file's and command line's layers, with the
    ``vaurien_protocols`` line of the proxy ``name`` under the command line's."""
    layers: list[Layer] = config.stash[_LAYERS]
    named = config.stash[_PROTOCOLS].get(name) if name is not None else None
    return layers if named is None else [*layers[:-1], named, layers[-1]]


def _marked_distant(item: pytest.Item, name: str | None) -> str | tuple[str, int] | None:
    """The ``distant=`` of the closest marker that applies to ``name`` and gives one."""
    marked = [layer.distant for layer in _marker_layers(item, name) if layer.distant is not None]
    return marked[-1] if marked else None


def _check_targets(item: pytest.Item, known: Iterable[str]) -> None:
    """Fail the test when a marker's ``target=`` names no proxy it has (once)."""
    if item.stash.get(_TARGETS_REPORTED, False):
        return
    wanted = item.stash.get(_TARGETS, None)
    if wanted is None:  # read once: the check runs at setup and at teardown
        wanted = item.stash[_TARGETS] = set()
        for marker in item.iter_markers("vaurien"):
            wanted.update(_marker_targets(item, marker) or ())
    if not wanted:
        return
    names = set(known)
    missing = sorted(wanted - names)
    if missing:
        item.stash[_TARGETS_REPORTED] = True
        _fail(
            ConfigError(
                f"vaurien marker on {item.name}: target {', '.join(map(repr, missing))} names "
                f"no proxy of this test; its proxies: {', '.join(sorted(names)) or 'none'}"
            )
        )


def _names_so_far(item: pytest.Item) -> set[str]:
    return item.stash.setdefault(_PROXY_NAMES, set())


def _proxy_seed(item: pytest.Item, index: int | str) -> int:
    """Same session seed, test and proxy index (or session proxy name) -> same
    seed, whatever the order."""
    text = f"{item.config.stash[_SEED]}:{item.nodeid}:{index}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _as_distants(value: object, where: str) -> dict[str, str | tuple[str, int]]:
    """``vaurien_distant``'s value as name -> address: a lone address is ``default``."""
    if not isinstance(value, Mapping):
        return {DEFAULT: value}  # type: ignore[dict-item]  # checked when the proxy starts
    if not value:
        raise ConfigError(f"{where}: the dict of backends is empty; expected name -> HOST:PORT")
    for name in value:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: {name!r} is not a proxy name; expected a string")
    return dict(value)


def _names_error(fixture: str, names: Iterable[str], plural: str) -> ConfigError:
    return ConfigError(
        f"{fixture} is the proxy named {DEFAULT!r}, and vaurien_distant names none: its "
        f"backends are {', '.join(sorted(names))}; use {plural}[NAME], or name one {DEFAULT!r}"
    )


class _TestProxies:
    """The function-scoped proxies of one test: started here, stopped and
    checked when the test ends."""

    def __init__(self, item: pytest.Item, registry: Registry) -> None:
        self.item = item
        self.registry = registry
        self.proxies: list[tuple[Proxy, bool]] = []
        self.names: set[str] = set()

    def start(self, settings: Settings, name: str | None, allow_refused: bool) -> Proxy:
        """Start a proxy for ``settings``; ``name`` is what markers target.

        :raises ConfigError: for a name another proxy of this test already has.
        """
        if name is not None:
            if name in self.names:
                raise ConfigError(
                    f"a proxy named {name!r} already runs in this test; names must differ"
                )
            self.names.add(name)
            _names_so_far(self.item).add(name)
        proxy = _start(self.item, self.registry, settings, name)
        self.proxies.append((proxy, allow_refused))
        return proxy


def _test_proxies(request: pytest.FixtureRequest) -> _TestProxies:
    """What ``vaurien_proxy``, ``vaurien_proxies`` and the factory share: one
    list of a test's proxies, one teardown - that of the first of them the
    test sets up, which is torn down after the others. (A function, not a
    fixture: each fixture a test sets up costs it tens of microseconds.)"""
    item = request.node
    proxies: _TestProxies | None = item.stash.get(_TEST_PROXIES, None)
    if proxies is None:
        try:
            registry = _test_registry(request)
        except VaurienError as error:
            _fail(error)
        proxies = item.stash[_TEST_PROXIES] = _TestProxies(item, registry)
        request.addfinalizer(lambda: _finish(request.config, item, proxies))
    return proxies


def _finish(config: pytest.Config, item: pytest.Item, proxies: _TestProxies) -> None:
    """The test is over: stop its proxies, then say what it could not see."""
    problems = _stop_all(config, proxies.proxies)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
    _check_targets(item, _names_so_far(item))


@pytest.fixture
def vaurien_distant(request: pytest.FixtureRequest) -> str | tuple[str, int] | dict[str, str]:
    """Where the backend is, as ``"HOST:PORT"``: override it to use your own server.

    By default the marker's ``distant=``, else ``--vaurien-distant``, else the
    ``vaurien_distant`` ini option; with ``vaurien_distants`` in the ini file,
    a dict name -> ``"HOST:PORT"``. To point every test at servers the suite
    starts itself, define a fixture of this name in ``conftest.py`` (any
    scope; session scope for the session proxies) that returns ``"HOST:PORT"``,
    a ``(host, port)`` tuple, or a dict of them by name (several backends).
    """
    return _configured_distant(request.node)


def _configured_distant(item: pytest.Item) -> str | dict[str, str]:
    """What ``vaurien_distant`` returns unless a test suite overrides it."""
    try:
        distants = _configured_distants(item.config)
        if distants is not None:
            return {
                name: format_address(parse_address(_marked_distant(item, name) or address))
                for name, address in distants.items()
            }
        distant = _resolved_with_distant(item).distant
    except VaurienError as error:
        _fail(error)
    assert distant is not None
    return format_address(distant)


def _resolved_with_distant(item: pytest.Item) -> Settings:
    """The test's settings from its markers, command line and ini file; the
    test fails when they name no backend."""
    settings = resolve(_layers(item))
    if settings.distant is None:
        pytest.fail(NO_DISTANT, pytrace=False)
    return settings


def _distant_is_ours(request: pytest.FixtureRequest) -> bool:
    """Whether this test's ``vaurien_distant`` is this module's, overridden by
    no conftest, module, class or ``parametrize``."""
    item = request.node
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "vaurien_distant" in callspec.params:
        return False
    manager = getattr(item.session, "_fixturemanager", None)
    try:
        visible = manager.getfixturedefs("vaurien_distant", item)  # type: ignore[union-attr]
    except Exception:  # another pytest's internals: ask pytest itself
        return False
    return bool(visible) and _is_ours(visible[-1].func)


def _is_ours(func: object) -> bool:
    """Whether a fixture function is this module's ``vaurien_distant``."""
    return getattr(func, "__module__", None) == __name__ and (
        getattr(func, "__name__", None) == "vaurien_distant"
    )


def _configured_distants(config: pytest.Config) -> dict[str, str] | None:
    """``vaurien_distants``, with ``--vaurien-distant`` as its ``default`` entry;
    ``None`` when the ini file names no several backends."""
    distants = config.stash[_DISTANTS]
    if not distants:
        return None
    flag = config.getoption("vaurien_distant")
    if flag:
        return {**distants, DEFAULT: format_address(parse_address(flag, "--vaurien-distant"))}
    return dict(distants)


@pytest.fixture
def vaurien_proxy_factory(request: pytest.FixtureRequest) -> ProxyFactory:
    """Make more proxies in one test: ``factory(distant, behavior=..., name=..., **options)``.

    Each call starts a proxy in front of ``distant`` (``"HOST:PORT"`` or a
    tuple) with the configured behavior and options, overridden by the call's
    ``behavior`` and ``NAME__OPTION=value`` arguments; ``name`` is what a
    marker's ``target=`` names. All are stopped when the test ends; the test
    then fails if one's backend refused every connection, unless
    ``allow_refused=True`` (the call's, else the marker's).
    """
    item = request.node
    try:
        _layers(item, None)  # a bad marker fails the test at its setup
    except VaurienError as error:
        _fail(error)
    test_proxies = _test_proxies(request)

    def factory(
        distant: str | tuple[str, int],
        behavior: str | None = None,
        *,
        name: str | None = None,
        allow_refused: bool | None = None,
        protocol: str | None = None,
        rules: list[Rule | str] | None = None,
        **options: Any,
    ) -> Proxy:
        where = "vaurien_proxy_factory()"
        if name is not None and (not isinstance(name, str) or not name):
            raise ConfigError(f"{where}: name={name!r} is not a proxy name; expected a string")
        allowed = (
            _marker_allows_refused(item, name)
            if allow_refused is None
            else _check_allow_refused(allow_refused, where)
        )
        call = Layer.from_keywords(
            where, distant, behavior, options, protocol=protocol, rules=rules
        )
        settings = resolve([*_layers(item, name), call])
        return test_proxies.start(settings, name, allowed)

    return factory


def _confirm_stopped(config: pytest.Config, wait: bool = False) -> None:
    """Let go of the proxies earlier tests left to stop on their own, once
    stopped: the hub gets to them between tests. One still stopping after
    ``STOP_GRACE`` seconds, past ``MAX_STOPPING`` of them, or with ``wait``
    (the session's end), is waited for, bounded: only a handler blocking
    the hub keeps it, and that is then named. Weak references: a proxy the
    hub is done with is freed at once, as it was when teardown waited.

    :raises ProxyError: for one that did not stop in time.
    """
    stopping = config.stash[_STOPPING]
    if not stopping:
        return
    now = time.monotonic()
    while stopping:
        ref, asked = stopping[0]
        proxy = ref()
        if proxy is not None and not proxy.stopped:
            if not (wait or len(stopping) > MAX_STOPPING or now - asked > STOP_GRACE):
                return
            proxy.stop()
        stopping.popleft()


def _start(item: pytest.Item, registry: Registry, settings: Settings, name: str | None) -> Proxy:
    _confirm_stopped(item.config)
    index = item.stash.get(_PROXY_COUNT, 0)
    client = item.config.stash[_CONTROL]
    if client is not None:  # on the control API: the same settings, made there
        from pytest_vaurien.remote import RemoteTestProxy

        remote = RemoteTestProxy.create(
            client, settings, _proxy_seed(item, index), name or "vaurien_proxy"
        )
        item.stash[_PROXY_COUNT] = index + 1
        item.stash.setdefault(_ITEM_PROXIES, []).append(remote)
        return remote  # type: ignore[return-value]  # reads as a Proxy
    proxy = Proxy.from_settings(
        settings,
        registry=registry,
        seed=_proxy_seed(item, index),
        name=f"vaurien-proxy[{item.nodeid}]"
        + (f"#{index}" if index else "")
        + (f":{name}" if name else ""),
    )
    item.stash[_PROXY_COUNT] = index + 1
    proxy.start()
    item.stash.setdefault(_ITEM_PROXIES, []).append(proxy)
    return proxy


def _stop_all(config: pytest.Config, proxies: list[tuple[Proxy, bool]]) -> list[str]:
    """Stop every proxy, and say what the test could not see: a proxy that
    did not stop, a handler that raised, a dead backend."""
    problems: list[str] = []
    for proxy, allow_refused in proxies:
        try:
            if isinstance(proxy, Proxy) and proxy.stop_if_idle():
                config.stash[_STOPPING].append((weakref.ref(proxy), time.monotonic()))
            else:
                proxy.stop()
        except VaurienError as error:  # did not stop, or the control API said no
            problems.append(str(error))
        stats = proxy.stats
        config.stash[_SESSION_STATS] = config.stash[_SESSION_STATS] + stats
        problems.extend(_handler_errors(proxy.name, proxy.errors))
        if not allow_refused:
            problems.extend(_refused_problem(proxy.distant, stats))
    return problems


def _handler_errors(name: str, errors: list[ConnectionRecord]) -> list[str]:
    return [f"handler error on {name}, connection {record.describe()}" for record in errors]


def _refused_problem(distant: str, stats: Stats) -> list[str]:
    if stats.connections and stats.refused == stats.connections:
        # every client got a reset, which a test expecting a fault takes
        # for the fault: a dead backend must not pass (issue 11)
        return [REFUSED_EVERY_CONNECTION.format(distant=distant, count=stats.refused)]
    return []


@pytest.fixture
def vaurien_proxies(request: pytest.FixtureRequest) -> dict[str, Proxy]:
    """A running proxy for each backend of ``vaurien_distant``, by name.

    With a dict distant (or ``vaurien_distants`` in the ini file), one proxy
    per entry; with a lone address, ``{"default": proxy}``. A marker's
    ``target="NAME"`` (or a list) limits it to the proxies of those names.
    """
    return _start_proxies(request)


def _start_proxies(request: pytest.FixtureRequest) -> dict[str, Proxy]:
    """A proxy for each backend of ``vaurien_distant``, by name."""
    item = request.node
    test_proxies = _test_proxies(request)
    ours = _distant_is_ours(request)
    if ours and _configured_distants(item.config) is None:
        return {DEFAULT: _start_configured_proxy(item, test_proxies)}
    # computed here unless overridden: one more fixture would cost each test
    # tens of microseconds
    value = _configured_distant(item) if ours else request.getfixturevalue("vaurien_distant")
    try:
        distants = _as_distants(value, "vaurien_distant")
        _check_targets_at_setup(item, distants)
        proxies = {}
        for name, distant in distants.items():
            where = f"vaurien_distant ({name})" if name != DEFAULT else "vaurien_distant"
            fixture = Layer(source=where, distant=distant)
            settings = resolve(
                [*_configured_layers(item.config, name), fixture, *_marker_layers(item, name)]
            )
            allowed = _marker_allows_refused(item, name)
            proxies[name] = test_proxies.start(settings, name, allowed)
    except VaurienError as error:
        _fail(error)
    return proxies


def _start_configured_proxy(item: pytest.Item, test_proxies: _TestProxies) -> Proxy:
    """The one proxy of a test whose backend the markers, command line or ini
    file name (the common case): its settings resolved once, not once for
    ``vaurien_distant`` and again for the proxy."""
    try:
        _check_targets_at_setup(item, (DEFAULT,))
        settings = _resolved_with_distant(item)
        return test_proxies.start(settings, DEFAULT, _marker_allows_refused(item))
    except VaurienError as error:
        _fail(error)


def _check_targets_at_setup(item: pytest.Item, names: Iterable[str]) -> None:
    """Check the markers' ``target=`` against the test's proxies at setup,
    unless the test uses the factory, whose calls may add a name later (then
    teardown checks)."""
    if "vaurien_proxy_factory" not in getattr(item, "fixturenames", ()):
        _check_targets(item, {*names, *_names_so_far(item)})


@pytest.fixture
def vaurien_proxy(request: pytest.FixtureRequest) -> Proxy:
    """A running chaos proxy in front of ``vaurien_distant``, stopped after the test.

    Connect to ``vaurien_proxy.address``. The behavior and handler options come
    from the ``vaurien`` marker, the command line or the ini file;
    ``set_behavior()`` changes them live, ``connections`` tells what happened.
    With several backends, it is the one named ``default``.
    """
    if "vaurien_proxies" in request.fixturenames:  # the same proxy as there
        proxies: dict[str, Proxy] = request.getfixturevalue("vaurien_proxies")
    else:  # one fixture, not two: each costs a test tens of microseconds
        proxies = _start_proxies(request)
    if DEFAULT not in proxies:
        _fail(_names_error("vaurien_proxy", proxies, "vaurien_proxies"))
    return proxies[DEFAULT]


# -- proxies that outlive a test -------------------------------------------


def _session_distant(request: pytest.FixtureRequest) -> object:
    """``vaurien_distant`` if it is session-scoped (a conftest override), else
    what the command line and ini file say (markers are per test)."""
    try:
        return request.getfixturevalue("vaurien_distant")
    except pytest.fail.Exception as error:
        text = str(error)
        if "ScopeMismatch" not in text:
            raise
        requested = text.rpartition("Requested fixture:")[2].replace("\\", "/")
        if "pytest_vaurien/plugin.py" not in requested:  # not the default: an override
            pytest.fail(
                "vaurien_session_proxies needs vaurien_distant at session scope: declare "
                'the override with @pytest.fixture(scope="session")',
                pytrace=False,
            )
    config = request.config
    distants = _configured_distants(config)
    if distants is not None:
        return distants
    layers: list[Layer] = config.stash[_LAYERS]
    settings = resolve(layers)
    if settings.distant is None:
        pytest.fail(
            NO_SESSION_DISTANT,
            pytrace=False,
        )
    return format_address(settings.distant)


@pytest.fixture(scope="session")
def vaurien_session_proxies(request: pytest.FixtureRequest) -> Iterator[dict[str, SessionProxy]]:
    """A proxy per backend of ``vaurien_distant`` for the whole session (per
    xdist worker), by name, for pools an application makes once.

    Each test that uses it gets its own behavior, options and rules from its
    setup to its teardown (its markers, else the command line and ini file),
    and its own records and report; between tests, transparent relay. The
    protocol is the session's (``--vaurien-protocol``, ``vaurien_protocols``,
    ``vaurien_protocol``).
    Connections stay open across tests.
    """
    config = request.config
    value = _session_distant(request)
    sessions: dict[str, SessionProxy] = {}
    try:
        try:
            distants = _as_distants(value, "vaurien_distant")
            for name, distant in distants.items():
                fixture = Layer(source=f"vaurien_distant ({name})", distant=distant)
                settings = dataclasses.replace(
                    resolve([*_configured_layers(config, name), fixture]),
                    behavior=parse_behavior("100:dummy"),
                    behavior_source="between tests",
                    options={},
                    rules=(),
                )
                text = f"{config.stash[_SEED]}:session:{name}"
                seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
                client = config.stash[_CONTROL]
                if client is not None:  # on the control API, lent to each test as here
                    from pytest_vaurien.remote import RemoteTestProxy

                    remote = RemoteTestProxy.create(client, settings, seed, f"session:{name}")
                    sessions[name] = SessionProxy(remote, name)  # type: ignore[arg-type]
                    continue
                proxy = Proxy.from_settings(
                    settings,
                    registry=config.stash[_BASE_REGISTRY],
                    seed=seed,
                    name=f"vaurien-proxy[session]:{name}",
                )
                proxy.start()
                sessions[name] = SessionProxy(proxy, name)
        except VaurienError as error:
            _fail(error)
        yield sessions
    finally:
        problems = []
        for session in sessions.values():
            try:
                session.proxy.stop()
            except VaurienError as error:  # did not stop, or the control API said no
                problems.append(str(error))
            config.stash[_SESSION_STATS] = config.stash[_SESSION_STATS] + session.proxy.stats
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture(scope="session")
def vaurien_session_proxy(vaurien_session_proxies: dict[str, SessionProxy]) -> SessionProxy:
    """The session proxy named ``default`` (a lone ``vaurien_distant`` is):
    a proxy for the whole session that each test configures for itself."""
    if DEFAULT not in vaurien_session_proxies:
        _fail(
            _names_error(
                "vaurien_session_proxy", vaurien_session_proxies, "vaurien_session_proxies"
            )
        )
    return vaurien_session_proxies[DEFAULT]


@pytest.fixture(autouse=True)
def _vaurien_session_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Give the session proxies this test's configuration from its setup to
    its teardown, when it uses them (an autouse fixture: set up first, torn
    down last, so its other fixtures see the same faults)."""
    item = request.node
    fixtures = getattr(item, "fixturenames", ())
    if not any(name in fixtures for name in SESSION_FIXTURES):
        yield
        return
    sessions: dict[str, SessionProxy] = request.getfixturevalue("vaurien_session_proxies")
    begun: list[tuple[SessionProxy, Window, bool]] = []
    try:
        registry = _test_registry(request)
        for name, session in sessions.items():
            settings = resolve(_layers(item, name))
            if settings.protocol != session.protocol:
                raise ConfigError(
                    f"{settings.protocol_source}: protocol={settings.protocol!r} for the "
                    f"session proxy {name!r}, which relays {session.protocol!r} for the whole "
                    "session; set a session proxy's protocol with --vaurien-protocol, or "
                    "vaurien_protocols (one NAME = PROTOCOL a line) or vaurien_protocol in the "
                    "ini file"
                )
            window = session.begin(settings, registry, _proxy_seed(item, f"session:{name}"))
            begun.append((session, window, _marker_allows_refused(item, name)))
            _names_so_far(item).add(name)
            item.stash.setdefault(_ITEM_PROXIES, []).append(window)
        if not any(name in fixtures for name in ("vaurien_proxies", "vaurien_proxy_factory")):
            _check_targets(item, _names_so_far(item))
    except VaurienError as error:
        for session, _, _ in begun:
            session.end()
        _fail(error)
    except BaseException:
        for session, _, _ in begun:
            session.end()
        raise
    yield
    problems: list[str] = []
    for session, window, allow_refused in begun:
        session.end()
        problems.extend(_handler_errors(session.proxy.name, window.errors))
        if not allow_refused:
            problems.extend(_refused_problem(session.distant, window.stats))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
