"""SIGHUP for the ``vaurien`` command: read ``--config`` again, change what may change.

Behavior, handler options and rules reach new connections at once and open
ones from their next chunk (the proxy swaps its fault plan); the distant, the
local address, the seed and the protocol are fixed at start, and a file that
changes them is told so. A bad file changes nothing and is logged at ERROR.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from pytest_vaurien.config_file import ConfigFile, read_config_file
from pytest_vaurien.echo import echo
from pytest_vaurien.engine.proxy import Proxy
from pytest_vaurien.errors import ConfigError, VaurienError
from pytest_vaurien.plan import check_settings
from pytest_vaurien.registry import Registry
from pytest_vaurien.settings import Layer, Settings, resolve

__all__ = ["Reloader"]

log = logging.getLogger("vaurien")


class Reloader:
    """SIGHUP: read ``--config`` again and put its behavior and options in force.

    The command line still wins over the file. New connections get the new
    plan at once, open ones from their next chunk (``Proxy.set_behavior``).
    The distant, the local address and the seed are fixed at start; a file
    that changes them is told so. A bad file changes nothing.
    """

    def __init__(
        self,
        proxy: Proxy,
        registry: Registry,
        config: ConfigFile,
        command_line: Layer,
        settings: Settings,
        *,
        local_fixed: bool = False,
    ) -> None:
        self.proxy = proxy
        #: The proxy's own registry: aliases a reload adds must reach its plans.
        self.registry = registry
        self.config = config
        self.command_line = command_line
        self.settings = settings
        #: ``--local`` was given: the file's ``local`` does not matter.
        self.local_fixed = local_fixed
        #: Every alias registered so far, at start or by a reload (even one
        #: that failed later): a name keeps its class while the command runs.
        self.aliases = dict(config.aliases)

    @property
    def where(self) -> str:
        return f"config file {str(self.config.path)!r}"

    def reload(self) -> bool:
        """Apply the file as it is now; log what changed, or why nothing did."""
        try:
            config, settings, added = self._read()
            for name, path in added.items():
                self.registry.alias(name, path, f"[handler:{name}] in {str(config.path)!r}")
                self.aliases[name] = path
            self.proxy.set_behavior(
                settings.behavior.spec or str(settings.behavior),
                **self._option_keywords(settings),
            )
            if _rule_texts(settings) != _rule_texts(self.settings):
                self.proxy.set_rules(list(settings.rules))
        except VaurienError as error:
            log.error("reload failed, the configuration in force stays: %s", error)
            return False
        except Exception:  # a bug must not take a long-running proxy down
            log.exception("reload failed, the configuration in force stays")
            return False
        changes = _changes(self.settings, settings)
        self._warn_fixed(config, settings)
        self.config, self.settings = config, settings
        log.warning(
            "reloaded %s: %s", self.where, "; ".join(changes) if changes else "nothing changed"
        )
        return True

    def _read(self) -> tuple[ConfigFile, Settings, dict[str, str]]:
        """The file, the settings it gives and its new aliases, all checked."""
        config = read_config_file(self.config.path)
        for name, path in config.aliases.items():
            old = self.aliases.get(name)
            if old is not None and old != path:
                raise ConfigError(
                    f"{self.where}, section [handler:{name}]: callable changed from "
                    f"{echo(old)} to {echo(path)}; a handler name keeps its class until "
                    "the command restarts"
                )
        added = {name: path for name, path in config.aliases.items() if name not in self.aliases}
        trial = self.registry.copy()
        dataclasses.replace(config, aliases=added).register_aliases(trial)
        settings = resolve([config.layer, self.command_line])
        check_settings(settings, trial)
        return config, settings, added

    def _option_keywords(self, settings: Settings) -> dict[str, Any]:
        """``NAME__OPTION`` values for ``set_behavior``: the new ones, and the
        default of each option the file no longer sets (``set_behavior`` lays
        its options over the old ones, so a dropped line must be undone)."""
        keywords = {
            f"{name}__{option}": sourced.value
            for name, values in settings.options.items()
            for option, sourced in values.items()
        }
        targets = self.registry.option_targets(settings.behavior)
        for name, values in self.settings.options.items():
            handler = targets.get(name)
            for option in values:
                key = f"{name}__{option}"
                if key not in keywords and handler is not None and option in handler.options:
                    keywords[key] = handler.options[option][2]
        return keywords

    def _warn_fixed(self, config: ConfigFile, settings: Settings) -> None:
        fixed = {
            "distant": (self.settings.distant, settings.distant),
            "seed": (self.settings.seed, settings.seed),
            "protocol": (self.settings.protocol, settings.protocol),
            "local": (None, None) if self.local_fixed else (self.config.local, config.local),
        }
        for key, (old, new) in fixed.items():
            if old != new:
                log.warning(
                    "%s: %s changed; it takes effect only when the command restarts",
                    self.where,
                    key,
                )


def _changes(old: Settings, new: Settings) -> list[str]:
    """``behavior 100:dummy -> 20:delay``, ``delay.sleep '1' -> '2'``, ..."""
    changes = []
    if str(old.behavior) != str(new.behavior):
        before, after = (b.spec or str(b) for b in (old.behavior, new.behavior))
        changes.append(f"behavior {echo(before)} -> {echo(after)}")
    for name, option, before, after in _option_diff(old.options, new.options):
        changes.append(f"{name}.{option} {before} -> {after}")
    if _rule_texts(old) != _rule_texts(new):
        changes.append(f"rules {_rule_texts(old) or 'none'} -> {_rule_texts(new) or 'none'}")
    return changes


def _rule_texts(settings: Settings) -> str:
    """The rules in their string forms, one after the other, for comparing and logging."""
    return " | ".join(f"{rule.given_name or rule.fault}: {rule}" for rule in settings.rules)


def _option_diff(
    old: Mapping[str, Mapping[str, Any]], new: Mapping[str, Mapping[str, Any]]
) -> list[tuple[str, str, str, str]]:
    keys = sorted(
        {(name, option) for name, values in old.items() for option in values}
        | {(name, option) for name, values in new.items() for option in values}
    )
    diff = []
    for name, option in keys:
        before = old.get(name, {}).get(option)
        after = new.get(name, {}).get(option)
        shown = [echo(s.value) if s is not None else "(default)" for s in (before, after)]
        if shown[0] != shown[1]:
            diff.append((name, option, shown[0], shown[1]))
    return diff
