"""The vaurien ini file: ``[vaurien]``, ``[handler:NAME]``, ``[rule:NAME]`` and
``[proxy:NAME]`` sections.

```ini
[vaurien]
local = localhost:8000
distant = example.org:80
behavior = 20:foobar
protocol = http

[handler:foobar]
callable = path.to.the.callable
sleep = 2

[rule:pay]
fault = error
match = POST /payments/*
schedule = first:2
status = 503
```

Read by the ``vaurien`` command (``--config``) and by the pytest plugin
(``vaurien_config``, ``--vaurien-config``), into a settings layer plus the
aliases the file defines. ``${NAME}`` in a value is replaced by the
environment variable, as vaurien's reader did.
"""

from __future__ import annotations

import configparser
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from pytest_vaurien.echo import cut, echo
from pytest_vaurien.errors import ConfigError, VaurienError
from pytest_vaurien.registry import Registry
from pytest_vaurien.rules import Rule
from pytest_vaurien.settings import Layer

__all__ = ["ConfigFile", "ProxySection", "read_config_file"]

MAIN_SECTION = "vaurien"
HANDLER_PREFIX = "handler:"
RULE_PREFIX = "rule:"
PROXY_PREFIX = "proxy:"
MAIN_KEYS = ("behavior", "distant", "local", "protocol", "seed")
_ENV_VAR = re.compile(r"\$\{([^}]*)\}")


@dataclass(frozen=True)
class ProxySection:
    """``[proxy:NAME]``: one more proxy, with the keys of ``[vaurien]``."""

    name: str
    layer: Layer
    local: str | None = None


@dataclass(frozen=True)
class ConfigFile:
    """What one config file says."""

    path: Path
    layer: Layer
    #: ``[vaurien] local``, used by the command only (tests listen on free ports).
    local: str | None = None
    #: ``[handler:NAME] callable = dotted.path`` -> ``{NAME: dotted.path}``
    aliases: dict[str, str] = field(default_factory=dict)
    #: ``[proxy:NAME]`` sections (the command with ``--control``): each a
    #: layer over the file's own, and where it listens.
    proxies: dict[str, ProxySection] = field(default_factory=dict)

    def register_aliases(self, registry: Registry) -> None:
        """Make each ``[handler:NAME]`` with a ``callable`` a handler name in ``registry``.

        Importing the callable runs the user's module: that is the code the
        file chose to run. What goes wrong is said from the file's section,
        as every other mistake in the file is.

        :raises ConfigError: (or ``HandlerError``) naming the file and section.
        """
        for name, path in self.aliases.items():
            origin = f"[handler:{name}] in {str(self.path)!r}"
            try:
                registry.alias(name, path, origin)
            except VaurienError as error:
                where = f"config file {str(self.path)!r}, section [{HANDLER_PREFIX}{name}]"
                message = str(error).removeprefix(f"{origin}: ")
                raise type(error)(f"{where}: {message}") from error


def read_config_file(path: str | Path) -> ConfigFile:
    """Read and check a vaurien ini file.

    :raises ConfigError: naming the file (and the section and key) for an
        unreadable file, an unknown section or key, or an unset variable.
    """
    path = Path(path)
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep option case
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(
            f"config file {str(path)!r}: cannot read it: {error.strerror or error}"
        ) from None
    try:
        # utf-8-sig: a byte-order mark (as some Windows editors write) is not a key
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ConfigError(
            f"config file {str(path)!r}: line {line} is not UTF-8 text (byte "
            f"0x{data[error.start]:02x}); expected a UTF-8 encoded file"
        ) from None
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as error:
        message = str(error).splitlines()[0]
        raise ConfigError(f"config file {str(path)!r}: not a valid ini file: {message}") from None

    main: dict[str, str] = {}
    options: dict[tuple[str, str], str] = {}
    aliases: dict[str, str] = {}
    rules: list[Rule] = []
    proxies: dict[str, ProxySection] = {}
    for section in parser.sections():
        where = f"config file {str(path)!r}, section [{cut(section)}]"
        values = {
            key: _substitute(value, f"{where}, {key}") for key, value in parser.items(section)
        }
        if section == MAIN_SECTION:
            for key in values:
                if key not in MAIN_KEYS:
                    raise ConfigError(
                        f"{where}: unknown key {echo(key)}; expected one of {', '.join(MAIN_KEYS)}"
                    )
            main = values
        elif section.startswith(HANDLER_PREFIX):
            name = section[len(HANDLER_PREFIX) :].strip()
            if not name.isidentifier():
                raise ConfigError(
                    f"{where}: {echo(name)} is not a handler name; expected "
                    "[handler:NAME] with NAME an identifier"
                )
            if "callable" in values:
                target = values.pop("callable").strip()
                if not _is_dotted_path(target):
                    raise ConfigError(
                        f"{where}: callable = {echo(target)} is not a dotted path; expected "
                        "e.g. package.module.Handler"
                    )
                aliases[name] = target
            for option, value in values.items():
                options[(name, option)] = value
        elif section.startswith(RULE_PREFIX):
            rules.append(_rule(section[len(RULE_PREFIX) :].strip(), values, where))
        elif section.startswith(PROXY_PREFIX):
            name = section[len(PROXY_PREFIX) :].strip()
            proxies[name] = _proxy(name, values, where)
        else:
            raise ConfigError(
                f"config file {str(path)!r}: unknown section [{cut(section)}]; "
                f"expected [{MAIN_SECTION}], [{HANDLER_PREFIX}NAME], [{RULE_PREFIX}NAME] "
                f"or [{PROXY_PREFIX}NAME]"
            )
    seed = _seed(main, f"config file {str(path)!r}, section [{MAIN_SECTION}]")
    source = f"config file {str(path)!r}"
    layer = Layer(
        source=source,
        distant=main.get("distant"),
        behavior=main.get("behavior"),
        options=options,
        seed=seed,
        distant_source=f"{source}, distant",
        behavior_source=f"{source}, behavior",
        protocol=main.get("protocol"),
        protocol_source=f"{source}, protocol",
        rules=rules,
        rules_source=source,
    )
    return ConfigFile(path, layer, main.get("local"), aliases, proxies)


def _seed(values: dict[str, str], where: str) -> int | None:
    if "seed" not in values:
        return None
    try:
        return int(values["seed"])
    except ValueError:
        raise ConfigError(f"{where}: seed = {echo(values['seed'])} is not an integer") from None


def _proxy(name: str, values: dict[str, str], where: str) -> ProxySection:
    """``[proxy:NAME]``: ``distant`` and ``local``, ``behavior``, ``protocol``, ``seed``."""
    if not name:
        raise ConfigError(f"{where}: expected [{PROXY_PREFIX}NAME] with a name")
    for key in values:
        if key not in MAIN_KEYS:
            raise ConfigError(
                f"{where}: unknown key {echo(key)}; expected one of {', '.join(MAIN_KEYS)}"
            )
    if "distant" not in values:
        raise ConfigError(f"{where}: no distant; expected distant = HOST:PORT")
    layer = Layer(
        source=where,
        distant=values["distant"],
        behavior=values.get("behavior"),
        seed=_seed(values, where),
        distant_source=f"{where}, distant",
        behavior_source=f"{where}, behavior",
        protocol=values.get("protocol"),
        protocol_source=f"{where}, protocol",
    )
    return ProxySection(name, layer, values.get("local"))


def _rule(name: str, values: dict[str, str], where: str) -> Rule:
    """``[rule:NAME]``: ``fault``, the rule's keys, and the fault's options."""
    if not name:
        raise ConfigError(f"{where}: expected [{RULE_PREFIX}NAME] with a name")
    fault = values.pop("fault", None)
    if fault is None:
        raise ConfigError(f"{where}: no fault; expected e.g. fault = error")
    if "name" in values:
        raise ConfigError(f"{where}: name = ... is the section's: [{RULE_PREFIX}{name}]")
    keywords = {key: value.strip() for key, value in values.items()}
    try:
        return Rule(fault.strip(), name=name, **keywords)
    except ConfigError as error:
        message = str(error)
        head, sep, rest = message.partition(": ")
        raise ConfigError(
            f"{where}: {rest if sep and head.startswith('Rule(') else message}"
        ) from None


def _substitute(value: str, where: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(f"{where}: environment variable ${{{name}}} is not set")
        return os.environ[name]

    return _ENV_VAR.sub(replace, value)


def _is_dotted_path(text: str) -> bool:
    """``module.attribute`` at least: a bare name would never import as a handler class."""
    parts = text.split(".")
    return len(parts) >= 2 and all(part.isidentifier() for part in parts)
