"""The ``vaurien`` command: the same engine, outside pytest.

```
vaurien --local localhost:8000 --distant example.org:80 \\
    --behavior 20:path.to.the.callable --handlers.delay.sleep 2
vaurien --config config.ini
```

Errors are one line on stderr and exit status 2; SIGINT and SIGTERM stop
the proxy cleanly (exit 0); SIGHUP reloads ``--config``. Never imports the
pytest plugin.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from pytest_vaurien import __version__
from pytest_vaurien.address import Address, format_address, is_loopback, parse_address
from pytest_vaurien.config_file import ConfigFile, read_config_file
from pytest_vaurien.control import MAX_RECORDS, Control
from pytest_vaurien.echo import cut, echo
from pytest_vaurien.engine.proxy import Proxy
from pytest_vaurien.errors import VaurienError
from pytest_vaurien.handlers.base import OptionSpec, Range
from pytest_vaurien.plan import check_settings
from pytest_vaurien.registry import Registry, make_plugin_manager, registry_from_plugins
from pytest_vaurien.reload import Reloader
from pytest_vaurien.service import DEFAULT_PROXY, log_record, serve
from pytest_vaurien.settings import Layer, Settings, resolve

__all__ = ["main", "run"]

DEFAULT_LOCAL = "127.0.0.1:8000"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
HANDLER_FLAG = "--handlers."
#: The options that take a value: a value may start with '-' (``--behavior -5:delay``).
VALUE_FLAGS = (
    "--behavior",
    "--config",
    "--control",
    "--control-port-file",
    "--control-token",
    "--distant",
    "--local",
    "--log-level",
    "--port-file",
    "--seed",
)
#: Every long option, to expand an abbreviation as argparse would.
ALL_FLAGS = (*VALUE_FLAGS, "--help", "--list-handlers", "--version")
#: Where the control API's token comes from when --control-token is not given.
TOKEN_VARIABLE = "VAURIEN_CONTROL_TOKEN"

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
    parser.add_argument(
        "--protocol",
        metavar="NAME",
        help="what to frame: tcp (faults per connection, the default) or http (per request)",
    )
    parser.add_argument(
        "--rule",
        metavar="RULE",
        action="append",
        default=[],
        help="a rule, e.g. 'error; status=503; match=POST /payments/*; schedule=first:2' "
        "(repeatable; replaces the config file's rules)",
    )
    parser.add_argument(
        "--config", metavar="FILE", help="a vaurien ini file; SIGHUP reads it again"
    )
    parser.add_argument("--seed", metavar="N", type=int, help="seed every random choice")
    parser.add_argument(
        "--control",
        metavar="HOST:PORT",
        help="serve the control API (native /v1, toxiproxy's dialect) there, e.g. "
        "127.0.0.1:8474; then --distant is optional",
    )
    parser.add_argument(
        "--control-token",
        metavar="TOKEN",
        help="every API call must send 'Authorization: Bearer TOKEN' (default: "
        f"${TOKEN_VARIABLE}); needed for a --control address other than loopback",
    )
    parser.add_argument(
        "--control-port-file",
        metavar="PATH",
        help="once the control API listens, write its port number to PATH",
    )
    parser.add_argument(
        "--port-file",
        metavar="PATH",
        help="once listening, write the port number (and a newline) to PATH",
    )
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


def _values(spec: OptionSpec, upper: bool) -> str:
    """What an option takes: ``{both,downstream,upstream}``, ``FLOAT >= 0``, ``int``."""
    choices = spec[3] if len(spec) == 4 else None
    name: str = spec[1].__name__
    kind = name.upper() if upper else name
    if isinstance(choices, Range):
        return f"{kind} {choices}"
    if choices is not None:
        return "{" + ",".join(sorted(str(choice) for choice in choices)) + "}"
    return kind


def _handler_help(registry: Registry) -> str:
    lines = ["handler options (--handlers.NAME.OPTION VALUE):"]
    for name, registration in registry.registrations():
        for option, spec in sorted(registration.handler.options.items()):
            lines.append(f"  {HANDLER_FLAG}{name}.{option} {_values(spec, upper=True)}")
            lines.append(f"      {spec[0]} (default {spec[2]!r})")
    return "\n".join(lines)


def list_handlers(registry: Registry) -> str:
    """``--list-handlers``: name, origin, description, then one line per option."""
    out = []
    for name, registration in registry.registrations():
        handler = registration.handler
        out.append(f"{name} ({registration.origin}): {handler.describe()}")
        for option, spec in sorted(handler.options.items()):
            out.append(
                f"    {option} ({_values(spec, upper=False)}, default {spec[2]!r}): {spec[0]}"
            )
    return "\n".join(out)


def normalize_arguments(argv: Sequence[str]) -> list[str]:
    """Join a value that starts with '-' to its option: ``--behavior -5:delay``
    becomes ``--behavior=-5:delay``.

    argparse takes ``-5:delay`` for an option and says "expected one
    argument", hiding the real mistake (a negative percentage) that the
    behavior parser names. A value starting with ``--`` is left alone: that
    is a forgotten value followed by the next option.
    """
    out: list[str] = []
    tokens = list(argv)
    while tokens:
        token = tokens.pop(0)
        if token == "--":
            out += [token, *tokens]
            break
        if (
            tokens
            and tokens[0].startswith("-")
            and not tokens[0].startswith("--")
            and _takes_value(token)
        ):
            out.append(f"{token}={tokens.pop(0)}")
        else:
            out.append(token)
    return out


def _takes_value(token: str) -> bool:
    if not token.startswith("--") or "=" in token:
        return False
    if token.startswith(HANDLER_FLAG):
        return True
    matches = [flag for flag in ALL_FLAGS if flag.startswith(token)]
    return token in VALUE_FLAGS or (len(matches) == 1 and matches[0] in VALUE_FLAGS)


def parse_handler_flags(extras: Sequence[str]) -> dict[tuple[str, str], str]:
    """``["--handlers.delay.sleep", "2"]`` (or ``--handlers.delay.sleep=2``) -> options.

    :raises UsageError: for anything else left over, or a flag without a value.
    """
    options: dict[tuple[str, str], str] = {}
    tokens = list(extras)
    while tokens:
        token = tokens.pop(0)
        if not token.startswith(HANDLER_FLAG):
            raise UsageError(f"unrecognized argument {echo(token)}")
        key, sep, value = token[len(HANDLER_FLAG) :].partition("=")
        name, dot, option = key.rpartition(".")
        if not dot or not name or not option:
            raise UsageError(f"{echo(token)}: expected --handlers.NAME.OPTION VALUE")
        if not sep:
            if not tokens:
                raise UsageError(f"{cut(token)}: expected a value")
            value = tokens.pop(0)
        options[(name, option)] = value
    return options


def _registry(config: ConfigFile | None) -> Registry:
    registry = registry_from_plugins(make_plugin_manager())
    if config is not None:
        config.register_aliases(registry)
    return registry


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: the current directory comes first on ``sys.path``.

    ``python -m pytest_vaurien`` puts it there, the ``vaurien`` script (whose
    ``sys.path[0]`` is its own bin directory) does not: without this,
    ``--behavior 100:myhandlers.Upper`` would work one way and not the other.
    Python's ``-P`` (``PYTHONSAFEPATH``) turns it off, as it does for ``-m``.
    """
    if not getattr(sys.flags, "safe_path", False):
        cwd = os.getcwd()
        if not sys.path or sys.path[0] != cwd:
            sys.path.insert(0, cwd)
    return run(argv)


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit status."""
    try:
        return _main(sys.argv[1:] if argv is None else list(argv))
    except (UsageError, VaurienError) as error:
        print(f"vaurien: error: {error}", file=sys.stderr)
        return 2


def _main(argv: list[str]) -> int:
    base = registry_from_plugins(make_plugin_manager())
    args, extras = build_parser(base).parse_known_args(normalize_arguments(argv))
    config = read_config_file(args.config) if args.config is not None else None
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
        protocol=args.protocol,
        protocol_source="--protocol",
        rules=args.rule,
        rules_source="--rule",
    )
    settings = resolve([config.layer, command_line] if config else [command_line])
    control_address = (
        parse_address(args.control, "--control", listen=True) if args.control is not None else None
    )
    token = args.control_token or os.environ.get(TOKEN_VARIABLE) or None
    sections = config.proxies if config is not None else {}
    if settings.distant is None and control_address is None and not sections:
        check_settings(settings, registry)  # a bad behavior is the first thing to say
        raise UsageError(
            "no backend: give --distant HOST:PORT or 'distant' in the [vaurien] section of "
            "--config (or --control HOST:PORT to create proxies through the API)"
        )
    if control_address is not None and not is_loopback(control_address[0]) and not token:
        raise UsageError(
            f"--control {format_address(control_address)} is not a loopback address: give "
            f"--control-token TOKEN (or set {TOKEN_VARIABLE}) so that only callers with it "
            "can change the proxies"
        )
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s vaurien %(levelname)s %(message)s",
    )
    # logged one by one; a long run must not keep them all, unless the API serves them
    records: dict[str, Any] = (
        {"max_records": MAX_RECORDS} if control_address is not None else {"keep_records": False}
    )
    proxies = []
    proxy = None
    if settings.distant is not None:
        local = _local_address(args.local, config)
        proxy = Proxy.from_settings(
            settings,
            registry=registry,
            host=local[0],
            port=local[1],
            name=DEFAULT_PROXY,
            on_record=log_record,
            **records,
        )
        _warn_if_unresolved(settings)
        proxies.append(proxy)
    for name, section in sections.items():
        where = f"config file {str(config.path)!r}, section [proxy:{name}]" if config else name
        layers = [config.layer, section.layer] if config else [section.layer]
        section_settings = resolve(layers)
        local_text = section.local if section.local is not None else "127.0.0.1:0"
        host, port = parse_address(local_text, f"{where}, local", listen=True)
        proxies.append(
            Proxy.from_settings(
                section_settings,
                registry=registry,
                host=host,
                port=port,
                name=name,
                on_record=log_record,
                **records,
            )
        )
        _warn_if_unresolved(section_settings)
    reloader = (
        Reloader(
            proxy, registry, config, command_line, settings, local_fixed=args.local is not None
        )
        if config and proxy is not None
        else None
    )
    control = Control(registry, on_record=log_record)
    return serve(
        control,
        proxies,
        reloader,
        port_file=args.port_file,
        control_address=control_address,
        control_token=token,
        control_port_file=args.control_port_file,
    )


def _local_address(flag: str | None, config: ConfigFile | None) -> Address:
    """``--local``, else the file's ``local``, else the default; empty is an error."""
    if flag is not None:
        return parse_address(flag, "--local", listen=True)
    if config is not None and config.local is not None:
        return parse_address(config.local, f"config file {str(config.path)!r}, local", listen=True)
    return parse_address(DEFAULT_LOCAL, "default", listen=True)


def _warn_if_unresolved(settings: Settings) -> None:
    """Say so when the distant's name does not resolve now; go on all the same.

    A backend in a container often gets its name only once it is up: each
    connection tries the name again, so this is a warning, not an error.
    """
    assert settings.distant is not None
    host, port = settings.distant
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        log.warning(
            "distant %s: host %s does not resolve (%s); each connection will try again",
            format_address(settings.distant),
            echo(host),
            error.strerror or error,
        )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
