"""Redis rules and replies: what a command names, the ``match`` forms, the ``error`` reply.

Kept apart from the framers: the command table says where a command's first
key is (what ``match`` globs on); the rest runs when a rule is configured or
fires, not on every byte.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from typing import Any

from pytest_vaurien.echo import echo
from pytest_vaurien.errors import ConfigError
from pytest_vaurien.protocols.base import Matcher, MessageInfo

__all__ = [
    "CONTAINERS",
    "DEFAULT_REPLY",
    "RedisMatcher",
    "check_error_options",
    "command_name",
    "error_reply",
    "first_key",
    "parse_match",
]

#: The error line of an ``error`` reply when the rule gives none.
DEFAULT_REPLY = "ERR injected by vaurien"

# Command names: core ones, and modules' (JSON.SET, FT.SEARCH).
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.:\-]*").fullmatch
_FORMS = (
    'expected "COMMAND" or "COMMAND KEY-GLOB", several commands joined with |, '
    'e.g. "SET", "SET|INCR", "GET user:*"'
)
_KEYS = ("command", "key")

#: Commands whose second word is a subcommand, part of the summary (``CLIENT SETNAME``).
CONTAINERS = frozenset(
    {
        "ACL", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "DEBUG", "FUNCTION", "LATENCY",
        "MEMORY", "MODULE", "OBJECT", "PUBSUB", "SCRIPT", "SLOWLOG", "XGROUP", "XINFO",
    }
)  # fmt: skip
_KEYLESS = CONTAINERS.union(
    {
        "ASKING", "AUTH", "BGREWRITEAOF", "BGSAVE", "DBSIZE", "DISCARD", "ECHO", "EXEC",
        "FAILOVER", "FLUSHALL", "FLUSHDB", "HELLO", "INFO", "KEYS", "LASTSAVE", "LOLWUT",
        "MONITOR", "MULTI", "PING", "PSUBSCRIBE", "PSYNC", "PUBLISH", "PUNSUBSCRIBE", "QUIT",
        "RANDOMKEY", "READONLY", "READWRITE", "REPLCONF", "REPLICAOF", "RESET", "ROLE", "SAVE",
        "SCAN", "SELECT", "SHUTDOWN", "SLAVEOF", "SPUBLISH", "SSUBSCRIBE", "SUBSCRIBE",
        "SUNSUBSCRIBE", "SWAPDB", "SYNC", "TIME", "UNSUBSCRIBE", "UNWATCH", "WAIT", "WAITAOF",
    }
) - {"MEMORY", "OBJECT", "XGROUP", "XINFO"}  # fmt: skip
# Where the first key is, when not right after the name: an index, or
# -(index of a numkeys argument), the keys following it.
_KEY_AT = {
    "BITOP": 2, "MEMORY": 2, "MIGRATE": 3, "OBJECT": 2, "XGROUP": 2, "XINFO": 2,
    "EVAL": -2, "EVALSHA": -2, "EVAL_RO": -2, "EVALSHA_RO": -2, "FCALL": -2, "FCALL_RO": -2,
    "ZUNION": -1, "ZINTER": -1, "ZDIFF": -1, "ZINTERCARD": -1, "SINTERCARD": -1,
    "LMPOP": -1, "ZMPOP": -1, "BLMPOP": -2, "BZMPOP": -2,
}  # fmt: skip
_NAMES: dict[bytes, str] = {}  # command name as sent -> upper-case str


def command_name(raw: bytes) -> str:
    """A command name, upper-case, remembered: a client sends the same few again and again."""
    name = _NAMES.get(raw)
    if name is None:
        name = raw.decode("latin-1").upper()
        if len(raw) <= 32:
            if len(_NAMES) >= 512:
                _NAMES.clear()
            _NAMES[raw] = name
    return name


def first_key(command: str, args: list[bytes]) -> str | None:
    """The first key of a command (``args`` starts with its name), if it has one."""
    if command in _KEYLESS:
        return None
    at = _KEY_AT.get(command, 1)
    if at < 0:
        count = args[-at] if len(args) > -at else b""
        at = -at + 1 if count.isdigit() and int(count) > 0 else len(args)
    elif command in ("XREAD", "XREADGROUP"):
        upper = [arg.upper() for arg in args]
        at = upper.index(b"STREAMS") + 1 if b"STREAMS" in upper else len(args)
    return args[at].decode("latin-1") if len(args) > at else None


class RedisMatcher:
    """A parsed Redis ``match``: command names and a glob on the first key.

    A name matches the command (``CLIENT``) or, for commands with
    subcommands, the command and its subcommand (``CLIENT SETNAME``, in the
    dict form): the request's summary.
    """

    __slots__ = ("_commands", "_key", "text")

    def __init__(
        self, commands: frozenset[str] | None = None, key: str | None = None, text: str = "*"
    ) -> None:
        self._commands = commands
        self._key: Callable[[str], object] | None = (
            re.compile(fnmatch.translate(key)).match if key is not None else None
        )
        self.text = text

    def __call__(self, request: MessageInfo) -> bool:
        fields = request.fields
        commands = self._commands
        if (
            commands is not None
            and fields.get("command") not in commands
            and request.summary not in commands
        ):
            return False
        if self._key is not None:
            key = fields.get("key")
            return key is not None and bool(self._key(key))
        return True

    def __repr__(self) -> str:
        return f"RedisMatcher({self.text!r})"


def parse_match(match: object, where: str) -> Matcher:
    """A rule's ``match`` for Redis (design.md, Protocols), checked.

    Strings: ``"SET"``, ``"SET|INCR"``, then optionally a space and a glob on
    the first key, ``"SET user:*"``. Dicts: ``command`` (a name or a list;
    ``"CLIENT SETNAME"`` names a subcommand) and ``key`` (a glob). Command
    names compare case-insensitively, keys case-sensitively (as Redis does).

    :raises ConfigError: starting with ``where``, naming the bad piece and the form.
    """
    if match is None:
        return RedisMatcher()
    if isinstance(match, str):
        words = match.split()
        if not words:
            raise ConfigError(f"{where}: the string is empty; {_FORMS}")
        if len(words) > 2:
            raise ConfigError(f"{where}: {echo(match)} has {len(words)} words; {_FORMS}")
        key = words[1] if len(words) == 2 else None
        return RedisMatcher(_commands(words[0].split("|"), where), key, " ".join(words))
    if isinstance(match, Mapping):
        return _parse_dict(match, where)
    raise ConfigError(
        f"{where}: {echo(match)} is a {type(match).__name__}; expected a string ({_FORMS}) "
        f"or a dict with keys {', '.join(_KEYS)}"
    )


def _commands(names: list[str], where: str) -> frozenset[str]:
    commands = set()
    for name in names:
        words = name.split()
        if not 1 <= len(words) <= 2 or not all(_NAME(word) for word in words):
            raise ConfigError(
                f"{where}: command {echo(name)} is not a Redis command name; "
                "expected a name such as SET or CLIENT SETNAME, several joined with |"
            )
        commands.add(" ".join(words).upper())
    return frozenset(commands)


def _parse_dict(match: Mapping[Any, Any], where: str) -> RedisMatcher:
    unknown = [key for key in match if key not in _KEYS]
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(echo(k) for k in unknown)}; "
            f"known: {', '.join(_KEYS)}"
        )
    commands = None
    if "command" in match:
        value = match["command"]
        values = [value] if isinstance(value, str) else value
        if (
            not isinstance(values, (list, tuple))
            or not values
            or not all(isinstance(v, str) for v in values)
        ):
            raise ConfigError(
                f"{where}: command {echo(value)} is not a command; expected a string "
                "such as 'SET' or a list such as ['SET', 'INCR']"
            )
        commands = _commands([n for v in values for n in v.split("|")], where)
    key = match.get("key")
    if key is not None and (not isinstance(key, str) or not key):
        raise ConfigError(
            f"{where}: key {echo(key)} is not a key glob; expected a string such as 'user:*'"
        )
    text = ", ".join(f"{name}={match[name]!r}" for name in _KEYS if name in match)
    return RedisMatcher(commands, key, text or "*")


def check_error_options(options: Mapping[str, Any], where: str) -> None:
    """Check the ``error`` fault's Redis option (``reply``) when the rule is configured.

    :raises ConfigError: starting with ``where``, naming the bad option.
    """
    _line(options, where)


def error_reply(options: Mapping[str, Any], request: MessageInfo) -> tuple[bytes, str]:
    """The error ``error`` sends instead of the backend's reply, and its summary.

    ``reply`` is the error line without its ``-`` (one is tolerated): its
    first word is the error code clients map to exceptions (``READONLY`` is
    redis-py's ``ReadOnlyError``). Other options are ignored.
    """
    text = _line(options, "error")
    return f"-{text}\r\n".encode(), "-" + text.split(" ", 1)[0]


def _line(options: Mapping[str, Any], where: str) -> str:
    reply = options.get("reply")
    if reply is None or reply == "":
        return DEFAULT_REPLY
    if not isinstance(reply, str):
        raise ConfigError(f"{where}: reply={echo(reply)}: expected one line of text")
    text = reply.strip(" \t").removeprefix("-").lstrip(" \t")
    if not text or "\r" in text or "\n" in text:
        raise ConfigError(
            f"{where}: reply={echo(reply)}: expected one error line such as "
            "'READONLY You can't write against a read only replica.' (no CR or LF)"
        )
    return text
