"""The ``vaurien`` command: the same engine, outside pytest.

```
vaurien --local localhost:8000 --distant example.org:80 \\
    --behavior 20:path.to.the.callable --handlers.delay.sleep 2
vaurien --config config.ini
```

Errors are one line on stderr and exit status 2; SIGINT and SIGTERM stop
the proxy cleanly (exit 0). Never imports the pytest plugin.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any, NoReturn

from pytest_vaurien import __version__
from pytest_vaurien.address import format_address, parse_address
from pytest_vaurien.config_file import ConfigFile, read_config_file
from pytest_vaurien.engine.proxy import Proxy
from pytest_vaurien.errors import VaurienError
from pytest_vaurien.plan import check_settings
from pytest_vaurien.records import ConnectionRecord
from pytest_vaurien.registry import Registry, make_plugin_manager, registry_from_plugins
from pytest_vaurien.settings import Layer, resolve

__all__ = ["main"]

DEFAULT_LOCAL = "127.0.0.1:8000"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
HANDLER_FLAG = "--handlers."

log = logging.getLogger("vaurien")


class UsageError(Exception):
    """A command-line mistake: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line and never exit by themselves."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser(registry: Registry) -> argparse.ArgumentParser:
    """The command's options; the epilog lists every handler option of ``registry``."""
    parser = _Parser(
        prog="vaurien",
        description="A chaos TCP proxy: relays --local to --distant and injects faults.",
        epilog=_handler_help(registry),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--local", metavar="HOST:PORT", help=f"where to listen (default {DEFAULT_LOCAL})"
    )
    parser.add_argument("--distant", metavar="HOST:PORT", help="the backend to relay to")
    parser.add_argument(
        "--behavior", metavar="SPEC", help="which faults connections get, e.g. 20:delay,10:error"
    )
    parser.add_argument("--config", metavar="FILE", help="a vaurien ini file")
    parser.add_argument("--seed", metavar="N", type=int, help="seed every random choice")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=LOG_LEVELS,
        help="log level on stderr (default info: a line per connection)",
    )
    parser.add_argument(
        "--list-handlers",
        action="store_true",
        help="list the handlers, their options and origins, and exit",
    )
    parser.add_argument("--version", action="version", version=f"vaurien {__version__}")
    return parser


def _handler_help(registry: Registry) -> str:
    lines = ["handler options (--handlers.NAME.OPTION VALUE):"]
    for name, registration in registry.registrations():
        for option, spec in sorted(registration.handler.options.items()):
            lines.append(f"  {HANDLER_FLAG}{name}.{option} {spec[1].__name__.upper()}")
            lines.append(f"      {spec[0]} (default {spec[2]!r})")
    return "\n".join(lines)


def list_handlers(registry: Registry) -> str:
    """``--list-handlers``: name, origin, description, then one line per option."""
    out = []
    for name, registration in registry.registrations():
        handler = registration.handler
        out.append(f"{name} ({registration.origin}): {handler.describe()}")
        for option, spec in sorted(handler.options.items()):
            out.append(f"    {option} ({spec[1].__name__}, default {spec[2]!r}): {spec[0]}")
    return "\n".join(out)


def parse_handler_flags(extras: Sequence[str]) -> dict[tuple[str, str], str]:
    """``["--handlers.delay.sleep", "2"]`` (or ``--handlers.delay.sleep=2``) -> options.

    :raises UsageError: for anything else left over, or a flag without a value.
    """
    options: dict[tuple[str, str], str] = {}
    tokens = list(extras)
    while tokens:
        token = tokens.pop(0)
        if not token.startswith(HANDLER_FLAG):
            raise UsageError(f"unrecognized argument {token!r}")
        key, sep, value = token[len(HANDLER_FLAG) :].partition("=")
        name, dot, option = key.rpartition(".")
        if not dot or not name or not option:
            raise UsageError(f"{token!r}: expected --handlers.NAME.OPTION VALUE")
        if not sep:
            if not tokens:
                raise UsageError(f"{token}: expected a value")
            value = tokens.pop(0)
        options[(name, option)] = value
    return options


def _registry(config: ConfigFile | None) -> Registry:
    registry = registry_from_plugins(make_plugin_manager())
    if config is not None:
        config.register_aliases(registry)
    return registry


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit status."""
    try:
        return _main(sys.argv[1:] if argv is None else list(argv))
    except (UsageError, VaurienError) as error:
        print(f"vaurien: error: {error}", file=sys.stderr)
        return 2


def _main(argv: list[str]) -> int:
    base = registry_from_plugins(make_plugin_manager())
    args, extras = build_parser(base).parse_known_args(argv)
    config = read_config_file(args.config) if args.config else None
    registry = _registry(config)
    if args.list_handlers:
        print(list_handlers(registry))
        return 0
    command_line = Layer(
        source="command line",
        distant=args.distant,
        behavior=args.behavior,
        options=parse_handler_flags(extras),
        seed=args.seed,
        distant_source="--distant",
        behavior_source="--behavior",
    )
    settings = resolve([config.layer, command_line] if config else [command_line])
    if settings.distant is None:
        check_settings(settings, registry)  # a bad behavior is the first thing to say
        raise UsageError(
            "no backend: give --distant HOST:PORT or 'distant' in the [vaurien] section of --config"
        )
    local_text = args.local or (config.local if config else None) or DEFAULT_LOCAL
    local = parse_address(local_text, "--local" if args.local else "local", listen=True)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s vaurien %(levelname)s %(message)s",
    )
    proxy = Proxy.from_settings(
        settings,
        registry=registry,
        host=local[0],
        port=local[1],
        name="vaurien-proxy",
        on_record=_log_record,
        keep_records=False,  # logged one by one; a long run must not keep them all
    )
    return _serve(proxy)


def _log_record(record: ConnectionRecord) -> None:
    if log.isEnabledFor(logging.INFO):  # describe() is not free: skip it when unseen
        log.info("%s", record.describe())


def _serve(proxy: Proxy) -> int:
    stopping = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        proxy.start()
        log.warning(
            "proxying %s -> %s, behavior %s, seed %s",
            format_address(proxy.address),
            proxy.distant,
            proxy.behavior,
            proxy.seed,
        )
        stopping.wait()
        open_connections = proxy.open_connections
        proxy.stop()
        log.warning(
            "stopped; %d connections relayed, %d were open",
            proxy.accepted,
            open_connections,
        )
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        proxy.stop()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
