"""Operations on running proxies by name: what the control API (and anything
else that drives proxies from outside) does, in plain Python.

``Control`` holds the proxies of one process. Each operation takes the JSON
body a client sent (already decoded), checks it whole before changing
anything, and answers plain data; a mistake raises ``ControlError`` naming the
field, the value and what is expected, with the HTTP status it means. Calls
may come from several threads at once: changes of the set of proxies, and of
one proxy's lifecycle, are serialised by one lock; reads take none.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from pytest_vaurien import __version__
from pytest_vaurien.address import Address, format_address, parse_address
from pytest_vaurien.behavior import parse_behavior
from pytest_vaurien.echo import echo
from pytest_vaurien.engine.native import allocate_lock
from pytest_vaurien.engine.proxy import Proxy
from pytest_vaurien.errors import ConfigError, ProxyError, VaurienError
from pytest_vaurien.plan import rebuilt
from pytest_vaurien.protocols import PROTOCOLS, TCP, check_protocol
from pytest_vaurien.records import ConnectionRecord, ExchangeRecord
from pytest_vaurien.registry import Registry
from pytest_vaurien.rules import RULE_KEYS, Rule, parse_rule
from pytest_vaurien.settings import Layer, Settings, Sourced, resolve
from pytest_vaurien.waits import Goal, wait_for

__all__ = ["Control", "ControlError", "rule_from_json"]

#: How many connection (and exchange) records a proxy of the API keeps.
MAX_RECORDS = 10_000
#: The longest a ``wait`` may be asked to take, in seconds.
MAX_WAIT = 3600.0
DEFAULT_LISTEN = "127.0.0.1:0"
CREATE_FIELDS = (
    "name",
    "listen",
    "upstream",
    "protocol",
    "behavior",
    "options",
    "rules",
    "enabled",
    "seed",
)
PATCH_FIELDS = ("behavior", "options", "protocol", "upstream", "enabled")
REPLACE_FIELDS = ("behavior", "options", "rules", "seed", "enabled", "upstream", "protocol")
_NAME = re.compile(r"[A-Za-z0-9_.~-][A-Za-z0-9_.~:@-]{0,199}")


class ControlError(Exception):
    """A call the control cannot do: ``status`` is its HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        field: str | None = None,
        value: object = None,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        #: More top-level keys of the error body (a wait's counts).
        self.extra = dict(extra or {})
        self.status = status
        self.message = message
        self.field = field
        self.value = value

    def to_json(self) -> dict[str, Any]:
        """The native API's error body."""
        value = self.value if _is_json(self.value) else repr(self.value)
        return {
            "error": {"message": self.message, "field": self.field, "value": value},
            "status": self.status,
            **self.extra,
        }


def _is_json(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool | list | dict)


def _invalid(field: str, value: object, expected: str) -> ControlError:
    return ControlError(
        400, f"{field}={echo(value)} is not valid; expected {expected}", field, value
    )


@contextmanager
def _field(name: str, value: object) -> Iterator[None]:
    """Turn a ``ConfigError`` raised while reading ``name`` into a 400 naming it."""
    try:
        yield
    except ConfigError as error:
        raise ControlError(400, str(error), name, value) from None


def _object(body: object, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ControlError(400, f"the body is not a JSON object; expected {what}", None, body)
    return body


def _known(body: Mapping[str, Any], fields: Sequence[str]) -> None:
    for key in body:
        if key not in fields:
            raise ControlError(
                400, f"unknown field {echo(key)}; expected any of {', '.join(fields)}", key, None
            )


def rule_from_json(value: object, where: str) -> Rule:
    """A rule given as its string form or as an object
    (``{"fault": "error", "schedule": "first:2", "options": {"status": 503}}``).

    :raises ControlError: naming ``where``.
    """
    if isinstance(value, str):
        with _field(where, value):
            return parse_rule(value, where)
    if not isinstance(value, dict):
        raise _invalid(where, value, "a rule: its string form or an object with 'fault'")
    keys = ("fault", "options", *RULE_KEYS)
    for key in value:
        if key not in keys:
            raise ControlError(
                400,
                f"{where}: unknown key {echo(key)}; expected any of {', '.join(keys)}",
                f"{where}.{key}",
                value[key],
            )
    if "fault" not in value:
        raise ControlError(400, f'{where}: no fault; expected e.g. "fault": "error"', where)
    options = value.get("options") or {}
    if not isinstance(options, dict):
        raise _invalid(f"{where}.options", options, "an object of the fault's options")
    keywords = {key: value[key] for key in RULE_KEYS if value.get(key) is not None}
    with _field(where, value):
        try:
            return Rule(value["fault"], **keywords, **options)
        except TypeError as error:  # an option named as a rule key twice
            raise ConfigError(f"{where}: {error}") from None


def _rules(value: object, where: str = "rules") -> list[Rule]:
    if isinstance(value, dict) and set(value) == {"rules"}:
        value = value["rules"]
    if not isinstance(value, list):
        raise _invalid(where, value, "a JSON list of rules")
    return [rule_from_json(item, f"{where}[{index}]") for index, item in enumerate(value)]


def _options(value: object) -> dict[tuple[str, str], object]:
    """``{"delay": {"sleep": 2}}`` -> ``{("delay", "sleep"): 2}``."""
    if not isinstance(value, dict):
        raise _invalid("options", value, 'an object such as {"delay": {"sleep": 2}}')
    options: dict[tuple[str, str], object] = {}
    for handler, values in value.items():
        if not isinstance(values, dict):
            raise _invalid(f"options.{handler}", values, 'an object such as {"sleep": 2}')
        for option, option_value in values.items():
            options[(handler, option)] = option_value
    return options


def _current_options(proxy: Proxy) -> dict[str, dict[str, object]]:
    """The options in force on ``proxy``, as the API shows them."""
    return {
        handler: {option: sourced.value for option, sourced in values.items()}
        for handler, values in proxy.plan.options.items()
    }


def _unset(
    current: dict[str, dict[str, object]], changes: Mapping[tuple[str, str], object]
) -> dict[str, dict[str, object]]:
    """``current`` with ``changes`` laid over it; a ``None`` removes the option."""
    merged = {handler: dict(values) for handler, values in current.items()}
    for (handler, option), value in changes.items():
        if value is None:
            merged.get(handler, {}).pop(option, None)
        else:
            merged.setdefault(handler, {})[option] = value
    return {handler: values for handler, values in merged.items() if values}


def _seed(seed: object) -> int | None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise _invalid("seed", seed, "a whole number >= 0 (every random choice draws from it)")
    return seed


def _bool(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise _invalid(field, value, "true or false")
    return value


def connection_json(record: ConnectionRecord) -> dict[str, Any]:
    """A connection record as the API answers it."""
    data = dataclasses.asdict(record)
    data["ending"] = None if record.ending is None else str(record.ending)
    data["open"] = record.open
    return data


def exchange_json(record: ExchangeRecord) -> dict[str, Any]:
    """An exchange record as the API answers it."""
    return dataclasses.asdict(record)


class Control:
    """The proxies of one process, by name, and what can be done to them.

    :param registry: where behaviors and rules look up handler names.
    :param keep: how many records each proxy keeps for ``connections`` and
        ``exchanges``.
    :param on_record: called with each ended connection's record (a log).
    """

    def __init__(
        self,
        registry: Registry,
        *,
        keep: int = MAX_RECORDS,
        on_record: Callable[[ConnectionRecord], None] | None = None,
    ) -> None:
        self.registry = registry
        self.keep = keep
        self.on_record = on_record
        self._proxies: dict[str, Proxy] = {}
        self._lock = allocate_lock()

    # -- the set of proxies -----------------------------------------------

    def info(self) -> dict[str, Any]:
        """``GET /v1``: what this server is and can do."""
        return {
            "version": __version__,
            "protocols": sorted(PROTOCOLS),
            "handlers": self.registry.names,
        }

    def names(self) -> list[str]:
        return sorted(self._proxies.copy())  # a copy is atomic; iterating is not

    def get(self, name: str) -> Proxy:
        """The proxy called ``name``.

        :raises ControlError: 404 naming the known proxies.
        """
        proxy = self._proxies.get(name)
        if proxy is None:
            known = ", ".join(sorted(self._proxies.copy())) or "none"
            raise ControlError(404, f"no proxy named {echo(name)}; known: {known}", "name", name)
        return proxy

    def proxies(self) -> list[Proxy]:
        proxies = self._proxies.copy()  # reads take no lock: a copy is atomic
        return [proxies[name] for name in sorted(proxies)]

    def add(self, proxy: Proxy) -> Proxy:
        """Start ``proxy`` (made elsewhere, e.g. from a config file) and hold it by name.

        :raises ControlError: 409 if the name is taken or it cannot listen.
        """
        with self._lock:
            if proxy.name in self._proxies:
                raise ControlError(
                    409, f"a proxy named {echo(proxy.name)} exists", "name", proxy.name
                )
            try:
                proxy.start()
            except ProxyError as error:
                listen = format_address(proxy.address)
                raise ControlError(409, str(error), "listen", listen) from None
            self._proxies[proxy.name] = proxy
        return proxy

    def create(self, body: object) -> Proxy:
        """``POST /v1/proxies``: a proxy from ``{name, listen, upstream, ...}``, started.

        :raises ControlError: 400 naming the bad field, 409 for a name taken
            or an address in use.
        """
        body = _object(body, "a proxy: {name, listen, upstream, ...}")
        _known(body, CREATE_FIELDS)
        name = body.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise _invalid(
                "name", name, "1 to 200 letters, digits and _.~-:@ (not starting with : or @)"
            )
        if "upstream" not in body:
            raise ControlError(400, "no upstream; expected HOST:PORT of the backend", "upstream")
        listen_value = body.get("listen", DEFAULT_LISTEN)
        with _field("listen", listen_value):
            listen = parse_address(listen_value, "listen", listen=True)
        settings = self._settings(
            upstream=body["upstream"],
            protocol=body.get("protocol", TCP),
            behavior=body.get("behavior", "100:dummy"),
            options=body.get("options", {}),
            rules=body.get("rules", []),
        )
        enabled = _bool(body.get("enabled", True), "enabled")
        proxy = self._make(settings, name, listen, _seed(body.get("seed")))
        self.add(proxy)
        if not enabled:
            proxy.disable()
        return proxy

    def _settings(
        self,
        *,
        upstream: object,
        protocol: object,
        behavior: object,
        options: object,
        rules: object,
    ) -> Settings:
        """Check each field on its own (an error names it), then all together."""
        with _field("upstream", upstream):
            address: Address = parse_address(upstream, "upstream")  # type: ignore[arg-type]
        with _field("protocol", protocol):
            protocol_name = check_protocol(protocol, "protocol")
        if not isinstance(behavior, str):
            raise _invalid("behavior", behavior, "a behavior such as '20:delay,10:abort'")
        with _field("behavior", behavior):
            parse_behavior(behavior, "behavior")
        parsed_options = _options(options)
        parsed_rules = _rules(rules)
        layer = Layer(
            source="options",
            distant=address,
            behavior=behavior,
            options=parsed_options,
            distant_source="upstream",
            behavior_source="behavior",
            protocol=protocol_name,
            protocol_source="protocol",
            rules=parsed_rules,
            rules_source="rules",
        )
        with _field("behavior", behavior):
            return resolve([layer])

    def _settings_of(
        self,
        proxy: Proxy,
        *,
        upstream: object = None,
        protocol: str | None = None,
        behavior: str | None = None,
        options: object = None,
    ) -> Settings:
        """``proxy``'s settings as they stand (upstream, protocol, behavior,
        options, rules), with the given ones instead: for a proxy made anew."""
        return self._settings(
            upstream=proxy.distant_address if upstream is None else upstream,
            protocol=protocol or proxy.plan.protocol,
            behavior=proxy.behavior if behavior is None else behavior,
            options=_current_options(proxy) if options is None else options,
            rules=[str(rule) for rule in proxy.rules],
        )

    def _make(
        self, settings: Settings, name: str, listen: Address, seed: int | None = None
    ) -> Proxy:
        try:
            return Proxy.from_settings(
                settings,
                registry=self.registry,
                seed=seed,
                host=listen[0],
                port=listen[1],
                name=name,
                on_record=self.on_record,
                max_records=self.keep,
            )
        except ConfigError as error:
            message = str(error)
            field = next(
                (key for key in ("rules", "options", "protocol", "behavior") if key in message),
                None,
            )
            raise ControlError(400, message, field) from None

    def delete(self, name: str) -> None:
        """``DELETE /v1/proxies/NAME``: stop it and forget it."""
        with self._lock:
            proxy = self.get(name)
            del self._proxies[name]
        proxy.stop()

    def stop_all(self) -> None:
        with self._lock:
            proxies, self._proxies = list(self._proxies.values()), {}
        for proxy in proxies:
            proxy.stop()

    def reset(self) -> None:
        """``POST /v1/reset``: every proxy enabled, behavior ``100:dummy``,
        no rules, records and counters zeroed."""
        with self._lock:
            for proxy in self._proxies.values():
                if not proxy.enabled:
                    proxy.enable()
                proxy.set_rules([])
                proxy.set_behavior("100:dummy")
                proxy.clear_records()

    # -- one proxy --------------------------------------------------------

    def to_json(self, proxy: Proxy) -> dict[str, Any]:
        """A proxy as the API answers it."""
        return {
            "name": proxy.name,
            "listen": format_address(proxy.address),
            "upstream": proxy.distant,
            "protocol": proxy.plan.protocol,
            "behavior": proxy.behavior,
            "options": _current_options(proxy),
            "rules": [rule.describe() for rule in proxy.rules],
            "enabled": proxy.enabled,
            "seed": proxy.seed,
            "accepted": proxy.accepted,
            "open_connections": proxy.open_connections,
        }

    def patch(self, name: str, body: object) -> Proxy:
        """``PATCH /v1/proxies/NAME``: change any of ``behavior``, ``options``
        (laid over the ones in force; ``null`` puts one back to its default),
        ``protocol``, ``upstream``, ``enabled``.

        Everything is checked before anything changes. A new protocol
        makes a new proxy on the same port (open connections are closed);
        the others reach new connections at once and open ones from their
        next unit.
        """
        body = _object(body, f"some of {', '.join(PATCH_FIELDS)}")
        _known(body, PATCH_FIELDS)
        with self._lock:
            proxy = self.get(name)
            behavior = body.get("behavior", proxy.behavior)
            if not isinstance(behavior, str):
                raise _invalid("behavior", behavior, "a behavior such as '20:delay,10:abort'")
            options = _options(body.get("options", {}))
            enabled = _bool(body.get("enabled", proxy.enabled), "enabled")
            upstream: Address | None = None
            if "upstream" in body:
                with _field("upstream", body["upstream"]):
                    upstream = parse_address(body["upstream"], "upstream")
            protocol = proxy.plan.protocol
            if "protocol" in body:
                with _field("protocol", body["protocol"]):
                    protocol = check_protocol(body["protocol"], "protocol")
            if protocol != proxy.plan.protocol:
                proxy = self._reframe(proxy, protocol, upstream, behavior, options)
            else:
                if any(value is None for value in options.values()):
                    # null puts an option back to its default: the options whole
                    self._behave_whole(proxy, behavior, _unset(_current_options(proxy), options))
                elif "behavior" in body or options:
                    with _field(
                        "options" if options else "behavior", body.get("options", behavior)
                    ):
                        proxy.set_behavior(
                            behavior, **{f"{h}__{o}": value for (h, o), value in options.items()}
                        )
                if upstream is not None:
                    proxy.set_upstream(upstream)
            if enabled != proxy.enabled:
                (proxy.enable if enabled else proxy.disable)()
            return proxy

    def _reframe(
        self,
        proxy: Proxy,
        protocol: str,
        upstream: Address | None,
        behavior: str,
        options: dict[tuple[str, str], object],
    ) -> Proxy:
        """The same proxy under another protocol: a new one on the same port."""
        settings = self._settings_of(
            proxy,
            upstream=upstream,
            protocol=protocol,
            behavior=behavior,
            options=_unset(_current_options(proxy), options),
        )
        replacement = self._make(settings, proxy.name, proxy.address, proxy.seed)
        proxy.stop()
        try:
            replacement.start()
        except ProxyError as error:
            del self._proxies[proxy.name]
            raise ControlError(500, str(error), "protocol", protocol) from None
        self._proxies[proxy.name] = replacement
        return replacement

    def set_rules(self, name: str, body: object) -> list[Rule]:
        """``PUT /v1/proxies/NAME/rules``: every rule at once."""
        rules = _rules(body)
        with self._lock, _field("rules", body):
            return self.get(name).set_rules(list(rules))

    def add_rule(self, name: str, body: object) -> Rule:
        """``POST /v1/proxies/NAME/rules``: one more rule, last."""
        rule = rule_from_json(body, "rule")
        with self._lock:
            proxy = self.get(name)
            if any(kept.name == rule.name for kept in proxy.rules if rule.given_name):
                raise ControlError(409, f"a rule named {echo(rule.name)} exists", "name", rule.name)
            with _field("rule", body):
                return proxy.add_rule(rule)

    def remove_rule(self, name: str, rule: str) -> None:
        """``DELETE /v1/proxies/NAME/rules/RULE``."""
        with self._lock:
            proxy = self.get(name)
            try:
                proxy.remove_rule(rule)
            except KeyError as error:
                raise ControlError(404, error.args[0], "rule", rule) from None

    def connections(self, name: str, since: int | None) -> list[dict[str, Any]]:
        records = self.get(name).connections
        return [
            connection_json(record) for record in records if since is None or record.index > since
        ]

    def exchanges(self, name: str, since: int | None) -> list[dict[str, Any]]:
        records = self.get(name).exchanges
        return [
            exchange_json(record) for record in records if since is None or record.index > since
        ]

    def wait(
        self, name: str, body: object, sleep: Callable[[float], object] = time.sleep
    ) -> dict[str, object]:
        """``POST /v1/proxies/NAME/wait``: the counts once the goal is reached.

        :raises ControlError: 408 with the counts when ``timeout`` passes.
        """
        proxy = self.get(name)
        body = _object(body, '{"rule": NAME, "fired": N} or {"connections": N}')
        _known(body, ("rule", "fired", "connections", "timeout"))
        timeout = body.get("timeout", 5.0)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 <= timeout <= MAX_WAIT
        ):
            raise _invalid("timeout", timeout, f"seconds, from 0 to {MAX_WAIT:g}")
        try:
            goal = Goal.of(body.get("rule"), body.get("fired"), body.get("connections"))
        except ConfigError as error:
            field = "connections" if "connections" in str(error) else "rule"
            raise ControlError(400, str(error), field) from None
        try:
            return wait_for(proxy, goal, timeout, sleep)
        except KeyError as error:
            raise ControlError(404, error.args[0], "rule", goal.rule) from None
        except TimeoutError as error:
            raise ControlError(408, str(error), extra=goal.counts(proxy)) from None

    def replace(self, name: str, body: object) -> Proxy:
        """``PUT /v1/proxies/NAME``: the proxy's configuration whole, as ``create``
        takes it: ``behavior`` (``100:dummy`` if not given), ``options`` and
        ``rules`` (none), ``seed`` (kept), ``enabled`` (true), ``upstream``
        (kept), ``protocol`` (kept; another one makes the proxy anew on the
        same port). Rule counters start again. What a session proxy lent to
        one test after another needs: exactly that test's configuration.

        :raises ControlError: 400 naming the bad field; nothing changes then.
        """
        body = _object(body, "a proxy's configuration: {behavior, options, rules, ...}")
        _known(body, ("name", *REPLACE_FIELDS))
        if "name" in body and body["name"] != name:
            raise _invalid("name", body["name"], f"{echo(name)}, the proxy's own name")
        with self._lock:
            proxy = self.get(name)
            settings = self._settings(
                upstream=body.get("upstream", proxy.distant),
                protocol=body.get("protocol", proxy.plan.protocol),
                behavior=body.get("behavior", "100:dummy"),
                options=body.get("options", {}),
                rules=body.get("rules", []),
            )
            enabled = _bool(body.get("enabled", True), "enabled")
            seed = _seed(body.get("seed"))
            if settings.protocol != proxy.plan.protocol:
                proxy = self._reframe(proxy, settings.protocol, settings.distant, "100:dummy", {})
            try:
                proxy.configure(settings, registry=self.registry, seed=seed)
            except ConfigError as error:
                message = str(error)
                field = next((key for key in ("rules", "options") if key in message), "behavior")
                raise ControlError(400, message, field) from None
            if settings.distant is not None and settings.distant != proxy.distant_address:
                proxy.set_upstream(settings.distant)
            if enabled != proxy.enabled:
                (proxy.enable if enabled else proxy.disable)()
            return proxy

    # -- whole replacements (toxiproxy's dialect) -------------------------

    def replace_behavior(
        self, name: str, behavior: object, options: Mapping[str, Mapping[str, object]]
    ) -> Proxy:
        """Put ``behavior`` and ``options`` in force whole.

        Unlike ``patch``, the options are not laid over the ones in force:
        those of a handler the new behavior names are exactly these, and no
        option of a handler (or dotted path) that left the behavior is kept.
        A dialect that recomputes the behavior from its own state (toxiproxy's
        toxics) needs that. The rules, with their counters, and the seed are
        kept; the change reaches new connections at once and open ones from
        their next unit.

        :raises ControlError: 400 naming the bad behavior or option; nothing
            changes then.
        """
        with self._lock:
            return self._behave_whole(self.get(name), behavior, options)

    def _behave_whole(
        self, proxy: Proxy, behavior: object, options: Mapping[str, Mapping[str, object]]
    ) -> Proxy:
        """``replace_behavior`` on ``proxy``, the lock held."""
        if not isinstance(behavior, str):
            raise _invalid("behavior", behavior, "a behavior such as '20:delay,10:abort'")
        with _field("behavior", behavior):
            parsed = parse_behavior(behavior, "behavior")
        sourced: dict[str, dict[str, Sourced]] = {}
        for (handler, option), value in _options(dict(options)).items():
            sourced.setdefault(handler, {})[option] = Sourced(value, "options")
        try:
            new = rebuilt(proxy.plan, parsed, sourced, self.registry, where="behavior", proxy=proxy)
        except VaurienError as error:
            field = "options" if "option" in str(error) else "behavior"
            raise ControlError(400, str(error), field, behavior) from None
        proxy.restore(new, proxy.seed)
        return proxy

    def relisten(self, name: str, listen: object, upstream: object | None = None) -> Proxy:
        """The same proxy (behavior, options, rules, protocol, enabled or not)
        made anew on another address, and on ``upstream`` if given; its open
        connections are closed, as toxiproxy does when ``listen`` changes.

        The new one starts before the old one stops, so an address in use
        leaves the old one as it was.

        :raises ControlError: 400 for a bad address, 409 for one in use.
        """
        with _field("listen", listen):
            address = parse_address(listen, "listen", listen=True)  # type: ignore[arg-type]
        with self._lock:
            proxy = self.get(name)
            settings = self._settings_of(proxy, upstream=upstream)
            replacement = self._make(settings, proxy.name, address, proxy.seed)
            try:
                replacement.start()
            except ProxyError as error:
                raise ControlError(409, str(error), "listen", listen) from None
            self._proxies[proxy.name] = replacement
            enabled = proxy.enabled
        proxy.stop()
        if not enabled:
            replacement.disable()
        return replacement
