"""toxiproxy 2.x's HTTP API, on the control server's port, over vaurien's proxies.

So that toxiproxy's own clients (the Go, Ruby and Python ones, and
``toxiproxy-cli``) drive vaurien unchanged: the same calls, JSON shapes,
status codes, defaults and units, and errors as ``{"error": TEXT, "status": N}``.
A proxy made here is an ordinary vaurien proxy (protocol ``tcp``), seen under
``/v1`` too.

Toxics become the proxy's behavior
----------------------------------

toxiproxy applies *every* toxic of a proxy to a connection, each drawn on its
own against its ``toxicity``; vaurien draws *one* entry of the behavior mix per
connection (after the rules), and an entry may be a ``+`` chain. The mapping
makes the behavior's entries the combinations of toxics, each with the
probability toxiproxy gives it:

- a toxic with toxicity 1 is in every entry; one with toxicity 0 (or a
  ``noop``) in none;
- for the toxics with 0 < toxicity < 1, each subset S of them is one entry,
  with the percentage ``100 * prod(t in S) * prod(1 - t not in S)``; the
  empty combination is what the entries leave, ``dummy``.

So a latency toxic and a bandwidth toxic, both at 1.0, are
``100:latency+bandwidth``; latency at 0.5 with bandwidth at 1.0 is
``50:latency+bandwidth,50:bandwidth``; two toxics at 0.5 give three entries of
25 % and leave 25 % to ``dummy``. The chance of each combination, the
independence of the toxics and the chain order (the order they were added)
are toxiproxy's. Why not rules, one per toxic with its percent? A rule that
fires ends the search, so two toxics could never act on one connection; the
behavior is where vaurien chains handlers, and rules the user adds through the
native API stay theirs (they come first, as they always do).

A behavior gives one set of options per handler *name*, and two toxics of one
type (latency upstream and latency downstream, with different delays) need two
instances: a type's first toxic is its handler's name (``latency``), its
second ``latency_2``, an alias of the same handler class that the dialect
registers, a name with options of its own (``100:latency+latency_2``). A third
toxic of one type (with a toxicity above 0) on a proxy is refused (400). At
most ``MAX_UNCERTAIN`` toxics of a proxy may have a toxicity strictly between
0 and 1 (the entries double with each).

Units: toxiproxy's milliseconds become seconds (``latency``, ``jitter``,
``slow_close``'s ``delay``, ``timeout``, ``reset_peer``'s ``timeout``);
``slicer``'s ``delay`` is in microseconds; ``bandwidth``'s ``rate`` is KB/s
(1000 bytes) on both sides; sizes are bytes. ``stream`` becomes the handler's
``direction`` (``timeout`` and ``reset_peer`` act on the whole connection).

What the dialect keeps
----------------------

The toxics as set (names, streams, toxicities, attributes) are kept per
proxy, with the behavior and options they made, so that ``GET`` answers
exactly what was set. When the proxy's behavior or those options change
through another door (the native API, ``/v1/reset``), the toxics are read back
from the behavior where it says toxics (one chain for 100 %, or one handler
for less), else the proxy shows none.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import math
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pytest_vaurien import __version__
from pytest_vaurien.address import format_address, parse_address
from pytest_vaurien.control import Control, ControlError
from pytest_vaurien.engine.native import allocate_lock
from pytest_vaurien.engine.proxy import Proxy
from pytest_vaurien.errors import ConfigError
from pytest_vaurien.registry import Registry
from pytest_vaurien.routes import Dialect, Request, Response, Route

__all__ = [
    "MAX_UNCERTAIN",
    "TOXIC_TYPES",
    "Toxic",
    "ToxicType",
    "behavior_of",
    "parse_toxic",
    "toxics_from_behavior",
    "toxiproxy_dialect",
    "update_toxic",
]

#: Runs a function that may block (start, stop, down) off the API's hub.
Offload = Callable[[Callable[[], Any]], Any]

#: The most toxics of one proxy with 0 < toxicity < 1 (2**N behavior entries).
MAX_UNCERTAIN = 8
#: toxiproxy's attributes are Go int64s.
INT64_MAX = 2**63 - 1
STREAMS = ("upstream", "downstream")
DEFAULT_LISTEN = "127.0.0.1:0"
TRANSPARENT = "dummy"
#: The second toxic of a type on one proxy runs as ``latency_2``, ...
SECOND_SUFFIX = "_2"

# toxiproxy's own error texts
BAD_BODY = "bad request body"
MISSING = "missing required field"
PROXY_NOT_FOUND = "proxy not found"
PROXY_EXISTS = "proxy already exists"
INVALID_STREAM = "stream was invalid, can be either upstream or downstream"
INVALID_TYPE = "invalid toxic type"
TOXIC_EXISTS = "toxic already exists"
TOXIC_NOT_FOUND = "toxic not found"


def _bad_body(detail: str) -> ControlError:
    return ControlError(400, f"{BAD_BODY}: {detail}")


# -- toxic types -------------------------------------------------------------


def _ms(value: int) -> float:
    return value / 1000


def _to_ms(value: float) -> int:
    return round(value * 1000)


@dataclass(frozen=True)
class ToxicType:
    """A toxiproxy toxic type and the vaurien handler it maps onto.

    ``attributes`` are its attribute names (each defaults to 0, as in
    toxiproxy); ``to_options`` turns attributes in toxiproxy's units into
    the handler's options in vaurien's, ``from_options`` the other way
    (from an ``option(NAME)`` getter).
    """

    handler: str | None
    attributes: tuple[str, ...]
    units: str
    directional: bool
    to_options: Callable[[Mapping[str, int]], dict[str, object]]
    from_options: Callable[[Callable[[str], Any]], dict[str, int]]


TOXIC_TYPES: dict[str, ToxicType] = {
    "latency": ToxicType(
        "latency",
        ("latency", "jitter"),
        "milliseconds",
        True,
        lambda a: {"latency": _ms(a["latency"]), "jitter": _ms(a["jitter"])},
        lambda o: {"latency": _to_ms(o("latency")), "jitter": _to_ms(o("jitter"))},
    ),
    "bandwidth": ToxicType(
        "bandwidth",
        ("rate",),
        "KB/s",
        True,
        lambda a: {"rate": float(a["rate"])},
        lambda o: {"rate": round(o("rate"))},
    ),
    "slow_close": ToxicType(
        "slow_close",
        ("delay",),
        "milliseconds",
        True,
        lambda a: {"delay": _ms(a["delay"])},
        lambda o: {"delay": _to_ms(o("delay"))},
    ),
    "timeout": ToxicType(
        "timeout",
        ("timeout",),
        "milliseconds",
        False,
        lambda a: {"timeout": _ms(a["timeout"])},
        lambda o: {"timeout": _to_ms(o("timeout"))},
    ),
    "reset_peer": ToxicType(
        "reset_peer",
        ("timeout",),
        "milliseconds",
        False,
        lambda a: {"timeout": _ms(a["timeout"])},
        lambda o: {"timeout": _to_ms(o("timeout"))},
    ),
    "slicer": ToxicType(
        "slicer",
        ("average_size", "size_variation", "delay"),
        "bytes; delay in microseconds",
        True,
        lambda a: {
            "average_size": a["average_size"],
            "size_variation": a["size_variation"],
            "delay": a["delay"] / 1_000_000,
        },
        lambda o: {
            "average_size": int(o("average_size")),
            "size_variation": int(o("size_variation")),
            "delay": round(o("delay") * 1_000_000),
        },
    ),
    "limit_data": ToxicType(
        "limit_data",
        ("bytes",),
        "bytes",
        True,
        lambda a: {"bytes": a["bytes"]},
        lambda o: {"bytes": int(o("bytes"))},
    ),
    "noop": ToxicType(None, (), "", False, lambda a: {}, lambda o: {}),
}
#: Handler name -> toxic type, for reading toxics back from a behavior.
_BY_HANDLER = {kind.handler: name for name, kind in TOXIC_TYPES.items() if kind.handler}


@dataclass(frozen=True)
class Toxic:
    """One toxic as toxiproxy shows it."""

    name: str
    type: str
    stream: str = "downstream"
    toxicity: float = 1.0
    attributes: Mapping[str, int] = field(default_factory=dict)

    @property
    def direction(self) -> str:
        """``upstream`` or ``downstream`` (toxiproxy reads ``stream`` in any case)."""
        return self.stream.lower()

    @property
    def kind(self) -> ToxicType:
        return TOXIC_TYPES[self.type]

    @property
    def blocks(self) -> bool:
        """A bandwidth of 0: toxiproxy lets nothing through (a partition, as
        its users write it), where vaurien's ``bandwidth`` would not limit."""
        return self.type == "bandwidth" and self.attributes.get("rate", 0) == 0

    @property
    def handler(self) -> str | None:
        """The vaurien handler it runs as (a blocking bandwidth: ``timeout`` 0)."""
        return "timeout" if self.blocks else self.kind.handler

    def options(self) -> dict[str, object]:
        """Every option of its handler, in vaurien's units."""
        if self.blocks:
            return {"timeout": 0.0}
        kind = self.kind
        options = kind.to_options(self.attributes)
        if kind.directional:
            options["direction"] = self.direction
        return options

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
            "attributes": dict(self.attributes),
        }


def _string(body: Mapping[str, Any], key: str, default: str) -> str:
    """A string field; ``null`` or absent is ``default`` (Go leaves it unset)."""
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise _bad_body(f"{key}={json.dumps(value)[:80]} is not a string")
    return value


def _toxicity(value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 <= value <= 1
    ):
        raise _bad_body(
            f"toxicity={json.dumps(value)[:80]} is not valid; expected a number from 0 to 1"
        )
    return float(value)


def _attributes(
    type_name: str, value: object, base: Mapping[str, int] | None = None
) -> dict[str, int]:
    """The type's attributes: ``base`` (or zeros) with the given ones laid over.

    Unknown keys are ignored, as toxiproxy's JSON decoding does; a value
    must be a whole number from 0 (toxiproxy takes negative ones and does
    nothing with them; vaurien's handlers refuse them).
    """
    kind = TOXIC_TYPES[type_name]
    attributes = dict(base) if base is not None else dict.fromkeys(kind.attributes, 0)
    if value is None:
        return attributes
    if not isinstance(value, dict):
        raise _bad_body(f"attributes={json.dumps(value)[:80]} is not an object")
    for key in kind.attributes:
        if key not in value:
            continue
        given = value[key]
        number: int | None = None
        if isinstance(given, int) and not isinstance(given, bool):
            number = given
        elif isinstance(given, float) and given.is_integer():
            number = int(given)
        if number is None or not 0 <= number <= INT64_MAX:
            raise _bad_body(
                f"attributes.{key}={json.dumps(given)[:80]} is not valid for a {type_name} "
                f"toxic; expected a whole number from 0 ({kind.units})"
            )
        attributes[key] = number
    return attributes


def parse_toxic(body: object, taken: Sequence[str] = ()) -> Toxic:
    """A new toxic from toxiproxy's ``POST /proxies/NAME/toxics`` body.

    Defaults: stream ``downstream``, toxicity 1.0, name ``TYPE_STREAM``,
    attributes 0. Checked in toxiproxy's order: the body, the stream, the
    type, the name (``taken``: the names on the proxy), the attributes.

    :raises ControlError: toxiproxy's 400s and 409.
    """
    if not isinstance(body, dict):
        raise _bad_body("expected a JSON object: {name, type, stream, toxicity, attributes}")
    name = _string(body, "name", "")
    type_name = _string(body, "type", "")
    stream = _string(body, "stream", "downstream")
    toxicity = 1.0 if body.get("toxicity") is None else _toxicity(body["toxicity"])
    if stream.lower() not in STREAMS:
        raise ControlError(400, INVALID_STREAM, "stream", stream)
    name = name or f"{type_name}_{stream}"
    if type_name not in TOXIC_TYPES:
        raise ControlError(400, INVALID_TYPE, "type", type_name)
    if name in taken:
        raise ControlError(409, TOXIC_EXISTS, "toxic", name)
    attributes = _attributes(type_name, body.get("attributes"))
    return Toxic(name, type_name, stream, toxicity, attributes)


def update_toxic(toxic: Toxic, body: object) -> Toxic:
    """``toxic`` changed by toxiproxy's ``PATCH .../toxics/TOXIC`` body: the
    given attributes laid over its own, and its toxicity if given; its name,
    type and stream stay.

    :raises ControlError: 400 for a bad body.
    """
    if not isinstance(body, dict):
        raise _bad_body("expected a JSON object: {toxicity, attributes}")
    toxicity = toxic.toxicity if body.get("toxicity") is None else _toxicity(body["toxicity"])
    attributes = _attributes(toxic.type, body.get("attributes"), toxic.attributes)
    return replace(toxic, toxicity=toxicity, attributes=attributes)


def listed(toxics: Sequence[Toxic]) -> list[Toxic]:
    """In toxiproxy's order: the upstream ones, then the downstream ones,
    each in the order they were added."""
    return sorted(toxics, key=lambda toxic: toxic.direction != "upstream")


# -- toxics <-> behavior -----------------------------------------------------


def _percent(value: float) -> str:
    return f"{value:.15g}"


def behavior_of(
    toxics: Sequence[Toxic], second_names: Mapping[str, str]
) -> tuple[str, dict[str, dict[str, object]]]:
    """The behavior spec and handler options that apply ``toxics`` as toxiproxy does.

    :param second_names: handler name -> another name of the same handler
        (``latency_2``), for a second toxic of one type.
    :raises ControlError: 400 for a third toxic of one type, or more than
        ``MAX_UNCERTAIN`` toxics with a toxicity strictly between 0 and 1.
    """
    names: list[str] = []
    active: list[Toxic] = []
    options: dict[str, dict[str, object]] = {}
    used: dict[str, int] = {}
    for toxic in toxics:
        handler = toxic.handler
        if handler is None or toxic.toxicity <= 0:
            continue
        count = used[handler] = used.get(handler, 0) + 1
        if count > 2 or (count == 2 and handler not in second_names):
            raise ControlError(
                400,
                f"a proxy may hold at most two toxics of type {toxic.type} with a toxicity "
                f"above 0 in vaurien (one as {handler!r}, one as "
                f"{second_names.get(handler, handler)!r}); {toxic.name!r} would be the third",
                "toxic",
                toxic.name,
            )
        name = handler if count == 1 else second_names[handler]
        names.append(name)
        active.append(toxic)
        options[name] = toxic.options()
    certain = [index for index, toxic in enumerate(active) if toxic.toxicity >= 1]
    uncertain = [index for index, toxic in enumerate(active) if toxic.toxicity < 1]
    if len(uncertain) > MAX_UNCERTAIN:
        raise ControlError(
            400,
            f"at most {MAX_UNCERTAIN} toxics of a proxy may have a toxicity between 0 and 1 "
            "in vaurien (each doubles the behavior's entries)",
            "toxicity",
        )
    entries: list[tuple[float, int, str]] = []
    for mask in range(1 << len(uncertain)):
        chance = 100.0
        chosen = set(certain)
        for bit, index in enumerate(uncertain):
            toxicity = active[index].toxicity
            if mask >> bit & 1:
                chance *= toxicity
                chosen.add(index)
            else:
                chance *= 1 - toxicity
        if chosen and chance > 0:
            chain = "+".join(names[index] for index in sorted(chosen))
            entries.append((chance, len(chosen), chain))
    if not entries:
        return f"100:{TRANSPARENT}", {}
    entries.sort(key=lambda entry: (-entry[0], -entry[1]))  # likeliest, then longest first
    texts = [_percent(chance) for chance, _, _ in entries]
    excess = sum(float(text) for text in texts) - 100.0
    if excess > 0:  # rounding: take it from the largest entry
        texts[0] = _percent(max(0.0, float(texts[0]) - excess))
    spec = ",".join(f"{text}:{chain}" for text, (_, _, chain) in zip(texts, entries, strict=True))
    return spec, options


def toxics_from_behavior(
    entries: Sequence[tuple[float, Sequence[str]]],
    handler_of: Callable[[str], str | None],
    option: Callable[[str, str], Any],
) -> list[Toxic]:
    """The toxics a behavior set elsewhere amounts to, when it says toxics.

    One entry only: a chain at 100 % (every handler a toxic at 1.0) or one
    handler at less (a toxic at that toxicity); each handler one of the
    toxic types (``dummy`` is skipped); ``direction="both"`` is a toxic per
    stream, at 100 % only. Anything else (a mix of exclusive entries, a
    handler toxiproxy has no type for) is not expressible: no toxics.

    :param handler_of: a behavior name -> its handler's own name (``None``
        if unknown).
    :param option: ``(name, option)`` -> the converted option value.
    """
    if len(entries) != 1:
        return []
    percent, chain = entries[0]
    chain = [name for name in chain if name != TRANSPARENT]
    if percent < 100 and len(chain) > 1:
        return []
    toxicity = min(percent, 100.0) / 100
    toxics: list[Toxic] = []
    for name in chain:
        type_name = _BY_HANDLER.get(handler_of(name) or "")
        if type_name is None:
            return []
        kind = TOXIC_TYPES[type_name]
        attributes = kind.from_options(functools.partial(option, name))
        if kind.directional:
            direction = str(option(name, "direction"))
            streams = list(STREAMS) if direction == "both" else [direction]
            if len(streams) > 1 and toxicity < 1:
                return []
        else:
            streams = ["downstream"]
        for stream in streams:
            toxics.append(Toxic(f"{type_name}_{stream}", type_name, stream, toxicity, attributes))
    if len({toxic.name for toxic in toxics}) != len(toxics):
        return []
    return toxics


# -- the dialect -------------------------------------------------------------


@dataclass
class _State:
    """What the dialect set on one proxy: its toxics, and the behavior and
    options they made (a change through another door shows as a difference)."""

    toxics: list[Toxic]
    behavior: str
    options: dict[str, dict[str, object]]


def _plain_options(proxy: Proxy) -> dict[str, dict[str, object]]:
    return {
        handler: {option: sourced.value for option, sourced in values.items()}
        for handler, values in proxy.plan.options.items()
    }


def _host(host: str) -> str:
    if host.lower() == "localhost":
        return "127.0.0.1"
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host.lower()


def _same_listen(listen: str, proxy: Proxy) -> bool:
    """toxiproxy's ``Differs`` for ``listen``: port 0 always differs (a new
    ephemeral port); ``localhost`` is 127.0.0.1."""
    try:
        host, port = parse_address(listen, "listen", listen=True)
    except ConfigError:
        return False
    current_host, current_port = proxy.address
    return port != 0 and port == current_port and _host(host) == _host(current_host)


def _same_upstream(upstream: str, proxy: Proxy) -> bool:
    try:
        return format_address(parse_address(upstream, "upstream")) == proxy.distant
    except ConfigError:
        return False


def _second_names(registry: Registry) -> dict[str, str]:
    """Handler name -> the name its second instance goes by (``latency_2``),
    registered as an alias of the same class in ``registry`` if need be.

    A registered name rather than the class's dotted path: options given for
    a dotted path the behavior no longer names are an error when the behavior
    changes through another door (``/v1/reset``), those of a registered name
    are not. A name some other handler already has is left alone: that type
    then takes one toxic.
    """
    names: dict[str, str] = {}
    for kind in TOXIC_TYPES.values():
        if kind.handler is None or kind.handler not in registry.names:
            continue
        cls = registry.resolve(kind.handler)
        second = f"{kind.handler}{SECOND_SUFFIX}"
        if second not in registry.names:
            registry.alias(second, f"{cls.__module__}.{cls.__qualname__}", "toxiproxy dialect")
        if registry.resolve(second) is cls:
            names[kind.handler] = second
    return names


def _json(request: Request) -> object:
    try:
        return request.json()
    except (ValueError, RecursionError) as error:
        raise _bad_body(str(error)[:200]) from None


def toxiproxy_dialect(control: Control, offload: Offload) -> Dialect:
    """toxiproxy 2.x's API over ``control``'s proxies.

    Every change runs in ``offload`` (off the API's hub) under one lock, so
    that two clients adding toxics at once both land.
    """
    states: weakref.WeakKeyDictionary[Proxy, _State] = weakref.WeakKeyDictionary()
    lock = allocate_lock()
    second_names = _second_names(control.registry)

    def locked(func: Callable[[], Any]) -> Any:
        def run() -> Any:
            with lock:
                return func()

        return offload(run)

    def get(name: str) -> Proxy:
        try:
            return control.get(name)
        except ControlError:
            raise ControlError(404, PROXY_NOT_FOUND, "name", name) from None

    def handler_of(proxy: Proxy) -> Callable[[str], str | None]:
        def find(name: str) -> str | None:
            instance = proxy.plan.instances.get(name)
            return None if instance is None else type(instance).name

        return find

    def current(proxy: Proxy) -> list[Toxic]:
        """The proxy's toxics: as set here, unless changed since through another door."""
        state = states.get(proxy)
        if state is not None and proxy.behavior == state.behavior:
            options = _plain_options(proxy)
            if all(options.get(name) == values for name, values in state.options.items()):
                return list(state.toxics)
        plan = proxy.plan
        entries = [(entry.percent, entry.chain) for entry in plan.behavior.entries]
        return toxics_from_behavior(
            entries,
            handler_of(proxy),
            lambda name, option: plan.instances[name].option(option),
        )

    def apply(proxy: Proxy, toxics: list[Toxic]) -> Proxy:
        """Put ``toxics`` in force on ``proxy``, whole; remember them."""
        behavior, options = behavior_of(toxics, second_names)
        kept = {
            handler: values
            for handler, values in _plain_options(proxy).items()
            if "." not in handler and handler not in options
        }
        proxy = control.replace_behavior(proxy.name, behavior, {**kept, **options})
        states[proxy] = _State(list(toxics), behavior, options)
        return proxy

    def proxy_json(proxy: Proxy) -> dict[str, Any]:
        return {
            "name": proxy.name,
            "listen": format_address(proxy.address),
            "upstream": proxy.distant,
            "enabled": proxy.enabled,
            "toxics": [toxic.to_json() for toxic in listed(current(proxy))],
        }

    def fields(body: object, where: str = "") -> tuple[str, str, str | None, bool | None]:
        """``name``, ``upstream``, ``listen``, ``enabled`` of a proxy body, typed."""
        if not isinstance(body, dict):
            raise _bad_body(f"expected a JSON object: {{name, listen, upstream, enabled}}{where}")
        name = _string(body, "name", "")
        upstream = _string(body, "upstream", "")
        listen = _string(body, "listen", "") or None
        enabled = body.get("enabled")
        if enabled is not None and not isinstance(enabled, bool):
            raise _bad_body(f"enabled={json.dumps(enabled)[:80]} is not true or false{where}")
        return name, upstream, listen, enabled

    def create_one(name: str, upstream: str, listen: str | None, enabled: bool) -> Proxy:
        return control.create(
            {
                "name": name,
                "listen": listen or DEFAULT_LISTEN,
                "upstream": upstream,
                "enabled": enabled,
            }
        )

    # -- routes --------------------------------------------------------

    def version(request: Request) -> Response:
        return Response(200, {"version": __version__})

    def proxies(request: Request) -> Response:
        return Response(200, {proxy.name: proxy_json(proxy) for proxy in control.proxies()})

    def create(request: Request) -> Response:
        name, upstream, listen, enabled = fields(_json(request))
        if not name:
            raise ControlError(400, f"{MISSING}: name", "name")
        if not upstream:
            raise ControlError(400, f"{MISSING}: upstream", "upstream")

        def change() -> Proxy:
            if name in control.names():
                raise ControlError(409, PROXY_EXISTS, "name", name)
            return create_one(name, upstream, listen, True if enabled is None else enabled)

        return Response(201, proxy_json(locked(change)))

    def populate(request: Request) -> Response:
        body = _json(request)
        if not isinstance(body, list):
            raise _bad_body("expected a JSON list of proxies: [{name, listen, upstream}, ...]")
        items = [fields(item, f" (proxy {index})") for index, item in enumerate(body, start=1)]
        for index, (name, upstream, _, _) in enumerate(items, start=1):
            if not name:
                raise ControlError(400, f"{MISSING}: name at proxy {index}", "name")
            if not upstream:
                raise ControlError(400, f"{MISSING}: upstream at proxy {index}", "upstream")

        def change() -> tuple[list[Proxy], ControlError | None]:
            done: list[Proxy] = []
            for name, upstream, listen, enabled in items:
                try:
                    if name in control.names():
                        existing = control.get(name)
                        if _same_listen(listen or DEFAULT_LISTEN, existing) and _same_upstream(
                            upstream, existing
                        ):
                            done.append(existing)
                            continue
                        control.delete(name)
                    done.append(
                        create_one(name, upstream, listen, True if enabled is None else enabled)
                    )
                except ControlError as error:
                    return done, error
            return done, None

        done, error = locked(change)
        listing = [proxy_json(proxy) for proxy in done]
        if error is not None:
            return Response(
                error.status, {"error": error.message, "status": error.status, "proxies": listing}
            )
        return Response(201, {"proxies": listing})

    def show(request: Request, name: str) -> Response:
        return Response(200, proxy_json(get(name)))

    def update(request: Request, name: str) -> Response:
        get(name)
        _, upstream, listen, enabled = fields(_json(request))

        def change() -> Proxy:
            proxy = get(name)
            want = proxy.enabled if enabled is None else enabled
            new_listen = listen is not None and not _same_listen(listen, proxy)
            new_upstream = bool(upstream) and not _same_upstream(upstream, proxy)
            if new_listen:
                state = states.pop(proxy, None)
                proxy = control.relisten(name, listen, upstream if new_upstream else None)
                if state is not None:
                    states[proxy] = state
            elif new_upstream:
                control.patch(name, {"upstream": upstream})
                if proxy.enabled:  # toxiproxy restarts it: open connections are dropped
                    control.patch(name, {"enabled": False})
                    if want:
                        control.patch(name, {"enabled": True})
            if want != proxy.enabled:
                proxy = control.patch(name, {"enabled": want})
            return proxy

        return Response(200, proxy_json(locked(change)))

    def delete(request: Request, name: str) -> Response:
        get(name)

        def change() -> None:
            get(name)
            control.delete(name)

        locked(change)
        return Response(204)

    def toxics(request: Request, name: str) -> Response:
        return Response(200, [toxic.to_json() for toxic in listed(current(get(name)))])

    def add_toxic(request: Request, name: str) -> Response:
        get(name)
        body = _json(request)

        def change() -> Toxic:
            proxy = get(name)
            present = current(proxy)
            toxic = parse_toxic(body, [toxic.name for toxic in present])
            apply(proxy, [*present, toxic])
            return toxic

        return Response(200, locked(change).to_json())

    def find(toxics: Sequence[Toxic], toxic_name: str) -> int:
        for index, toxic in enumerate(toxics):
            if toxic.name == toxic_name:
                return index
        raise ControlError(404, TOXIC_NOT_FOUND, "toxic", toxic_name)

    def show_toxic(request: Request, name: str, toxic: str) -> Response:
        present = current(get(name))
        return Response(200, present[find(present, toxic)].to_json())

    def update_one(request: Request, name: str, toxic: str) -> Response:
        get(name)
        body = _json(request)

        def change() -> Toxic:
            proxy = get(name)
            present = current(proxy)
            index = find(present, toxic)
            present[index] = update_toxic(present[index], body)
            apply(proxy, present)
            return present[index]

        return Response(200, locked(change).to_json())

    def remove_toxic(request: Request, name: str, toxic: str) -> Response:
        get(name)

        def change() -> None:
            proxy = get(name)
            present = current(proxy)
            del present[find(present, toxic)]
            apply(proxy, present)

        locked(change)
        return Response(204)

    def reset(request: Request) -> Response:
        def change() -> None:
            control.reset()
            states.clear()

        locked(change)
        return Response(204)

    def error(status: int, message: str, field: str | None, value: object) -> Response:
        if field == "name" and status == 404:
            message = PROXY_NOT_FOUND
        elif field == "name" and status == 409 and "exists" in message:
            message = PROXY_EXISTS
        return Response(status, {"error": message, "status": status})

    named = "/proxies/{name}"
    toxic = f"{named}/toxics/{{toxic}}"
    return Dialect(
        "toxiproxy",
        [
            Route("GET", "/version", version),
            Route("POST", "/reset", reset),
            Route("GET", "/proxies", proxies),
            Route("POST", "/proxies", create),
            Route("POST", "/populate", populate),
            Route("GET", named, show),
            Route("POST", named, update),
            Route("PATCH", named, update),
            Route("DELETE", named, delete),
            Route("GET", f"{named}/toxics", toxics),
            Route("POST", f"{named}/toxics", add_toxic),
            Route("GET", toxic, show_toxic),
            Route("POST", toxic, update_one),
            Route("PATCH", toxic, update_one),
            Route("DELETE", toxic, remove_toxic),
        ],
        error,
    )
