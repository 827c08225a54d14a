"""``vaurienctl``: drive the proxies of a ``vaurien --control`` process from a shell.

One subcommand a call of the native API (:mod:`pytest_vaurien.client`);
readable lines on stdout (``--json``: the API's JSON instead); every failure
is one line on stderr, ``vaurienctl: error: ...``, and exit status 2 for a
usage error, 1 for an error of the API or no answer from it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from pytest_vaurien import __version__
from pytest_vaurien.client import DEFAULT_URL, Client, ControlClientError, RemoteProxy
from pytest_vaurien.errors import ConfigError

__all__ = ["main"]

PROG = "vaurienctl"
URL_VARIABLE = "VAURIEN_CONTROL_URL"
TOKEN_VARIABLE = "VAURIEN_CONTROL_TOKEN"
#: Exit statuses.
OK, API_ERROR, USAGE_ERROR = 0, 1, 2


class UsageError(Exception):
    """A command line that cannot be run (exit 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, with every error one line naming ``vaurienctl`` (exit 2)."""

    def error(self, message: str) -> NoReturn:
        hint = f"; see {self.prog} --help"
        raise UsageError(f"{message}{hint}")


def _epilog(*examples: str) -> str:
    return "examples:\n" + "\n".join(f"  {example}" for example in examples)


def _options(pairs: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["delay.sleep=2"]`` -> ``{"delay": {"sleep": 2}}``; values as JSON if
    they parse, else strings (the server converts them as from an ini file)."""
    options: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        handler, dot, option = key.strip().partition(".")
        if not sep or not dot or not handler or not option:
            raise UsageError(
                f"--option {pair!r}: expected HANDLER.OPTION=VALUE such as delay.sleep=2"
            )
        try:
            value: Any = json.loads(text)
        except ValueError:
            value = text
        options.setdefault(handler, {})[option] = value
    return options


def _rule_argument(text: str) -> Any:
    """A rule as given: its string form, or a JSON object (starting with ``{``)."""
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except ValueError as error:
            raise UsageError(f"rule {text!r} is not valid JSON: {error}") from None
    return text


def _columns(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _rule_text(rule: dict[str, Any]) -> str:
    """A rule's string form from its JSON (as ``Rule.__str__`` writes it)."""
    parts = [str(rule.get("fault", ""))]
    parts += [f"{key}={value}" for key, value in (rule.get("options") or {}).items()]
    if rule.get("match") is not None:
        parts.append(f"match={rule['match']}")
    if rule.get("schedule"):
        parts.append(f"schedule={rule['schedule']}")
    if rule.get("percent", 100) != 100:
        parts.append(f"percent={rule['percent']:g}")
    if rule.get("per", "rule") != "rule":
        parts.append(f"per={rule['per']}")
    return "; ".join(parts)


def _rule_rows(rules: Sequence[dict[str, Any]]) -> list[tuple[str, ...]]:
    return [
        (str(r["name"]), _rule_text(r), f"matched {r['matched']}", f"fired {r['fired']}")
        for r in rules
    ]


def _proxy_line(data: dict[str, Any]) -> str:
    state = "up" if data["enabled"] else "down"
    return (
        f"{data['name']}: {data['listen']} -> {data['upstream']} ({data['protocol']}, "
        f"{data['behavior']}, {len(data['rules'])} rules, {state})"
    )


class _Output:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def show(self, data: Any, text: str | None) -> None:
        if self.as_json:
            if data is not None:
                print(json.dumps(data, indent=2))
        elif text:
            print(text)


# -- the subcommands -----------------------------------------------------------


def _list(client: Client, args: argparse.Namespace, out: _Output) -> None:
    proxies = client.proxies()
    data = [proxy.data for proxy in proxies]
    header = ("NAME", "LISTEN", "UPSTREAM", "PROTOCOL", "STATE", "ACCEPTED", "OPEN", "RULES")
    rows: list[tuple[str, ...]] = [(*header, "BEHAVIOR")] + [
        (
            p["name"],
            p["listen"],
            p["upstream"],
            p["protocol"],
            "up" if p["enabled"] else "down",
            str(p["accepted"]),
            str(p["open_connections"]),
            str(len(p["rules"])),
            p["behavior"],
        )
        for p in data
    ]
    out.show({"proxies": data}, _columns(rows) if data else "no proxies")


def _create(client: Client, args: argparse.Namespace, out: _Output) -> None:
    proxy = client.create(
        args.name,
        listen=args.listen,
        upstream=args.upstream,
        protocol=args.protocol,
        behavior=args.behavior,
        options=_options(args.option),
        rules=[_rule_argument(rule) for rule in args.rule],
        enabled=not args.down,
    )
    out.show(proxy.data, f"created {_proxy_line(proxy.data)}")


def _delete(client: Client, args: argparse.Namespace, out: _Output) -> None:
    client.delete(args.name)
    out.show(None, f"deleted {args.name}")


def _show(client: Client, args: argparse.Namespace, out: _Output) -> None:
    proxy = client.proxy(args.name)
    text = _proxy_line(proxy.data)
    if proxy.data["rules"]:
        text += "\n" + _columns(_rule_rows(proxy.data["rules"]))
    out.show(proxy.data, text)


def _behavior(client: Client, args: argparse.Namespace, out: _Output) -> None:
    body: dict[str, Any] = {"behavior": args.spec}
    options = _options(args.option)
    if options:
        body["options"] = options
    proxy = _remote(client, args.name).patch(**body)
    options_text = json.dumps(proxy.data["options"]) if proxy.data["options"] else "none"
    out.show(proxy.data, f"{args.name}: behavior {proxy.data['behavior']}, options {options_text}")


def _remote(client: Client, name: str) -> RemoteProxy:
    """A handle on ``name`` without reading it (the call itself says 404)."""
    return RemoteProxy(client, {"name": name, "listen": "127.0.0.1:0"})


def _rule_add(client: Client, args: argparse.Namespace, out: _Output) -> None:
    rule = _remote(client, args.name).add_rule(_rule_argument(args.rule))
    out.show(rule.data, f"added to {args.name}: " + "  ".join(_rule_rows([rule.data])[0]))


def _rule_list(client: Client, args: argparse.Namespace, out: _Output) -> None:
    rules = [rule.data for rule in _remote(client, args.name).rules]
    out.show({"rules": rules}, _columns(_rule_rows(rules)) if rules else f"{args.name}: no rules")


def _rule_remove(client: Client, args: argparse.Namespace, out: _Output) -> None:
    _remote(client, args.name).remove_rule(args.rule_name)
    out.show(None, f"removed rule {args.rule_name} from {args.name}")


def _down(client: Client, args: argparse.Namespace, out: _Output) -> None:
    proxy = _remote(client, args.name).patch(enabled=False)
    out.show(proxy.data, f"{args.name} is down: connects to {proxy.data['listen']} are refused")


def _up(client: Client, args: argparse.Namespace, out: _Output) -> None:
    proxy = _remote(client, args.name).patch(enabled=True)
    out.show(proxy.data, f"{args.name} is up on {proxy.data['listen']}")


def _wait(client: Client, args: argparse.Namespace, out: _Output) -> None:
    if args.rule is None and args.connections is None:
        raise UsageError("wait: give --rule R [--fired N] or --connections N")
    if args.fired is not None and args.rule is None:
        raise UsageError("wait: --fired needs --rule")
    counts = _remote(client, args.name).wait(
        args.rule, args.fired, connections=args.connections, timeout=args.timeout
    )
    if "connections" in counts:
        text = f"{args.name}: {counts['connections']} connections accepted"
    else:
        text = (
            f"{args.name}: rule {counts['rule']} fired {counts['fired']} times "
            f"(matched {counts['matched']})"
        )
    out.show(counts, text)


def _reset(client: Client, args: argparse.Namespace, out: _Output) -> None:
    client.reset()
    out.show(
        None, "reset: every proxy up, behavior 100:dummy, no rules, records and counters zeroed"
    )


Command = Callable[[Client, argparse.Namespace, _Output], None]


def _common() -> _Parser:
    """--url, --token, --json: accepted before or after the subcommand."""
    common = _Parser(add_help=False)
    common.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help=f"the control API (default ${URL_VARIABLE}, else {DEFAULT_URL})",
    )
    common.add_argument(
        "--token",
        default=argparse.SUPPRESS,
        help=f"sent as Authorization: Bearer TOKEN (default ${TOKEN_VARIABLE})",
    )
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the API's JSON instead of lines",
    )
    return common


def _subcommand(
    parsers: Any,
    common: argparse.ArgumentParser,
    name: str,
    func: Command,
    help: str,
    examples: Sequence[str],
) -> argparse.ArgumentParser:
    """A command (or a verb of ``rule``) with the common options and its examples."""
    sub: argparse.ArgumentParser = parsers.add_parser(
        name,
        help=help,
        description=help,
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_epilog(*examples),
    )
    sub.set_defaults(func=func)
    return sub


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = _Parser(
        prog=PROG,
        description="Drive the proxies of a running `vaurien --control` process.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
        epilog=_epilog(
            "vaurien --control 127.0.0.1:8474 &",
            "vaurienctl create db --listen 127.0.0.1:15432 --upstream 127.0.0.1:5432",
            "vaurienctl rule add db 'abort; schedule=first:2; name=flaky'",
            "vaurienctl wait db --rule flaky --fired 2 --timeout 30",
            "vaurienctl list",
            "vaurienctl --url http://10.0.0.5:8474 --token s3cret reset",
        ),
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    commands.required = True

    def command(name: str, func: Command, help: str, *examples: str) -> argparse.ArgumentParser:
        return _subcommand(commands, common, name, func, help, examples)

    command(
        "list", _list, "list the proxies, one a line", "vaurienctl list", "vaurienctl list --json"
    )

    create = command(
        "create",
        _create,
        "create a proxy and start it",
        "vaurienctl create db --listen 127.0.0.1:15432 --upstream 127.0.0.1:5432",
        "vaurienctl create web --listen 0.0.0.0:8080 --upstream app:80 --protocol http \\\n"
        "      --behavior 10:error --option error.status=503",
        "vaurienctl create db --upstream 127.0.0.1:5432 --rule 'abort; schedule=first:1'",
    )
    create.add_argument("name", metavar="NAME")
    create.add_argument(
        "--listen", default="127.0.0.1:0", help="HOST:PORT to listen on (default 127.0.0.1:0)"
    )
    create.add_argument("--upstream", required=True, help="HOST:PORT of the backend")
    create.add_argument("--protocol", default="tcp", help="tcp (default), http, redis, ...")
    create.add_argument("--behavior", default="100:dummy", metavar="SPEC", help="e.g. 20:delay")
    create.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="HANDLER.OPTION=VALUE",
        help="a handler option, e.g. delay.sleep=2 (repeatable)",
    )
    create.add_argument(
        "--rule", action="append", default=[], metavar="RULE", help="a rule (repeatable)"
    )
    create.add_argument("--down", action="store_true", help="create it down (disabled)")

    delete = command("delete", _delete, "stop a proxy and forget it", "vaurienctl delete db")
    delete.add_argument("name", metavar="NAME")

    show = command("show", _show, "one proxy and its rules", "vaurienctl show db")
    show.add_argument("name", metavar="NAME")

    behavior = command(
        "behavior",
        _behavior,
        "change a proxy's behavior (and options)",
        "vaurienctl behavior db 20:delay,10:abort",
        "vaurienctl behavior db 100:delay --option delay.sleep=0.5",
        "vaurienctl behavior db 100:dummy",
    )
    behavior.add_argument("name", metavar="NAME")
    behavior.add_argument("spec", metavar="SPEC")
    behavior.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="HANDLER.OPTION=VALUE",
        help="a handler option laid over the proxy's (repeatable)",
    )

    rule = command(
        "rule",
        _rule_list,  # never called: a verb is required
        "add, list or remove a proxy's rules",
        "vaurienctl rule add db 'abort; schedule=first:2; name=flaky'",
        'vaurienctl rule add db \'{"fault": "delay", "options": {"sleep": 1}}\'',
        "vaurienctl rule list db",
        "vaurienctl rule remove db flaky",
    )
    verbs = rule.add_subparsers(dest="verb", metavar="VERB", title="verbs")
    verbs.required = True

    def verb(name: str, func: Command, help: str, *examples: str) -> argparse.ArgumentParser:
        sub = _subcommand(verbs, common, name, func, help, examples)
        sub.add_argument("name", metavar="NAME", help="the proxy")
        return sub

    add = verb(
        "add",
        _rule_add,
        "append a rule: its string form, or a JSON object",
        "vaurienctl rule add db 'abort; schedule=first:2; name=flaky'",
        "vaurienctl rule add web 'error; status=503; match=POST /pay/*; percent=50'",
        'vaurienctl rule add db \'{"fault": "delay", "options": {"sleep": 1}}\'',
    )
    add.add_argument("rule", metavar="RULE")
    verb("list", _rule_list, "list the rules and their counters", "vaurienctl rule list db")
    remove = verb(
        "remove", _rule_remove, "remove a rule by name", "vaurienctl rule remove db flaky"
    )
    remove.add_argument("rule_name", metavar="RULE_NAME")

    down = command(
        "down",
        _down,
        "take a proxy down: connects refused, open connections closed",
        "vaurienctl down db",
    )
    down.add_argument("name", metavar="NAME")
    up = command("up", _up, "bring a proxy back up on the same port", "vaurienctl up db")
    up.add_argument("name", metavar="NAME")

    wait = command(
        "wait",
        _wait,
        "wait until a rule fired N times, or N connections were accepted",
        "vaurienctl wait db --rule flaky --fired 2",
        "vaurienctl wait db --connections 10 --timeout 60",
    )
    wait.add_argument("name", metavar="NAME")
    goal = wait.add_mutually_exclusive_group()
    goal.add_argument("--rule", metavar="R", help="the rule's name")
    goal.add_argument("--connections", type=int, metavar="N", help="connections accepted")
    wait.add_argument("--fired", type=int, metavar="N", help="times the rule fired (default 1)")
    wait.add_argument(
        "--timeout", type=float, default=5.0, metavar="S", help="seconds (default 5); exit 1 after"
    )

    command(
        "reset",
        _reset,
        "every proxy up, behavior 100:dummy, rules removed, records and counters zeroed",
        "vaurienctl reset",
    )
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    """Run ``vaurienctl`` with ``argv``; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        url = getattr(args, "url", None) or os.environ.get(URL_VARIABLE) or DEFAULT_URL
        token = getattr(args, "token", None) or os.environ.get(TOKEN_VARIABLE) or None
        try:
            client = Client(url, token=token)
        except ConfigError as error:
            raise UsageError(f"--url: {error}") from None
        args.func(client, args, _Output(getattr(args, "json", False)))
    except UsageError as error:
        _fail(str(error))
        return USAGE_ERROR
    except ControlClientError as error:
        _fail(str(error))
        return API_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # stdout closed early (| head): no traceback
        _quiet_stdout()
        return API_ERROR
    return OK


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit raises nothing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _fail(message: str) -> None:
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)


def main() -> NoReturn:
    """The console script."""
    sys.exit(run())


if __name__ == "__main__":
    main()
