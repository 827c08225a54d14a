"""The handler API: ``BaseHandler`` and typed option conversion.

A handler is a plain class: a ``name``, an ``options`` table and
``__call__(client_sock, backend_sock, to_backend)``. This module knows nothing
of sockets beyond calling ``recv`` on the side that has data, so that what a
handler does to bytes stays apart from the relay's plumbing.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ClassVar

from pytest_vaurien.echo import echo
from pytest_vaurien.errors import ConfigError, HandlerError
from pytest_vaurien.handlers.context import ConnectionView, ExchangeFault, ProxyInfo, SocketView

__all__ = [
    "BaseHandler",
    "ConvertedOptions",
    "OptionSpec",
    "Range",
    "convert_value",
    "option_names",
]

#: ``(description, type, default)`` or ``(description, type, default, choices)``;
#: for a number, ``choices`` may be a :class:`Range`.
OptionSpec = tuple[Any, ...]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_TYPE_WORDS = {
    bool: "a boolean (yes/no, true/false, on/off, 1/0)",
    int: "an integer",
    float: "a number",
    str: "a string",
}

DEFAULT_READ_SIZE = 65536

#: The connection (and its stream: ``"draw"``, ``"up"``, ``"down"``) the
#: current greenlet relays; the relay sets it, so that ``BaseHandler.random``
#: is reproducible per connection whatever other connections do.
CONNECTION_RANDOM: ContextVar[tuple[ConnectionView, str] | None] = ContextVar(
    "vaurien_connection_random", default=None
)


@dataclass(frozen=True)
class Range:
    """The values a numeric option allows, declared where choices go:
    ``("Delay in seconds", float, 1.0, Range(0))``.

    A sleep of -1 or a rate of -5 would otherwise surface deep in the relay
    (or, worse, mean something odd without a word); declaring the bound next
    to the type lets the one conversion reject it with a message naming the
    source, like any other bad value. ``None`` leaves that side open.
    """

    minimum: float | None = None
    maximum: float | None = None

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, (int, float)):
            return False
        if self.minimum is not None and value < self.minimum:
            return False
        return self.maximum is None or value <= self.maximum

    def __str__(self) -> str:
        low, high = self.minimum, self.maximum
        if low is not None and high is not None:
            return f"from {_number(low)} to {_number(high)}"
        if low is not None:
            return f">= {_number(low)}"
        if high is not None:
            return f"<= {_number(high)}"
        return "any"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


class ConvertedOptions(dict[str, Any]):
    """Option values already converted to their declared types (by the fault
    plan, which names the source of a bad one): ``BaseHandler`` takes them
    as they are instead of converting them a second time."""


def convert_value(value: Any, kind: type, choices: Any = None) -> Any:
    """Convert ``value`` (often a string from an ini file) to ``kind``.

    A float must be finite: no option means anything sensible by ``inf`` or
    ``nan`` (a sleep of ``inf`` is a hang, which has its own handler), and
    gevent's timers fail on them far from where they were written.
    ``choices`` is a collection of allowed values or a :class:`Range`.

    :raises ValueError: with a phrase saying what is expected: the type
        first (``expected a number``), then the range or the choices.
    """
    expected = _TYPE_WORDS.get(kind, f"a {kind.__name__}")
    if kind is bool:
        if isinstance(value, bool):
            converted: Any = value
        elif isinstance(value, int) and value in (0, 1):
            converted = bool(value)
        elif isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            converted = value.strip().lower() in _TRUE
        else:
            raise ValueError(f"expected {expected}")
    elif kind in (int, float):
        if isinstance(value, bool) or (
            kind is int and isinstance(value, float) and not value.is_integer()
        ):
            raise ValueError(f"expected {expected}")
        bound = f" {choices}" if isinstance(choices, Range) else ""
        try:
            converted = kind(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            raise ValueError(f"expected {expected}") from None
        except OverflowError:  # float(10**400)
            raise ValueError(f"expected a finite number{bound}") from None
        if kind is float and not math.isfinite(converted):
            raise ValueError(f"expected a finite number{bound}")
    else:
        try:
            converted = kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected {expected}") from None
    if choices is not None and converted not in choices:
        if isinstance(choices, Range):
            raise ValueError(f"expected {expected} {choices}")
        listed = ", ".join(sorted(str(choice) for choice in choices))
        raise ValueError(f"expected one of {listed}")
    return converted


def option_names(handler_class: type[BaseHandler]) -> list[str]:
    """The sorted option names a handler class declares."""
    return sorted(handler_class.options)


class BaseHandler:
    """Base class of every fault: subclass it, set ``name`` and ``options``.

    An instance is made once per handler name per proxy, with ``settings`` (the
    option values configured for it) and ``proxy`` (the proxy it runs in), so
    state such as a connection counter spans the connections of one proxy.
    """

    #: The name used in behaviors (``"20:delay"``) and options (``delay__sleep``).
    name: ClassVar[str] = ""
    #: Option name -> ``(description, type, default[, choices])``.
    options: ClassVar[Mapping[str, OptionSpec]] = {}

    def __init__(
        self, settings: Mapping[str, Any] | None = None, proxy: ProxyInfo | None = None
    ) -> None:
        self.proxy = proxy
        self.settings: dict[str, Any] = {}
        if isinstance(settings, ConvertedOptions):
            self.settings.update(settings)
        else:
            for option, value in (settings or {}).items():
                self.settings[option] = self.convert_option(option, value)

    @classmethod
    def describe(cls) -> str:
        """The first line of the class docstring: what the fault does."""
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    @classmethod
    def convert_option(cls, option: str, value: Any) -> Any:
        """Convert one option value to its declared type.

        :raises ConfigError: naming the handler, the option, the value and
            what is expected, when the option is unknown or does not convert.
        """
        spec = cls.options.get(option)
        if spec is None:
            known = ", ".join(option_names(cls)) or "none"
            raise ConfigError(
                f"handler {cls.name!r} has no option {echo(option)}; known options: {known}"
            )
        if len(spec) not in (3, 4):
            raise HandlerError(
                f"handler {cls.name!r}: option {option!r} must be declared as "
                "(description, type, default) or (description, type, default, choices)"
            )
        kind, choices = spec[1], spec[3] if len(spec) == 4 else None
        try:
            return convert_value(value, kind, choices)
        except ValueError as error:
            raise ConfigError(
                f"handler {cls.name!r}: option {option!r} = {echo(value)} is not valid; {error}"
            ) from None

    def effective_options(self) -> dict[str, Any]:
        """Every option's value in force, defaults included."""
        return {name: self.option(name) for name in sorted(self.options)}

    def option(self, name: str) -> Any:
        """The option's value: configured if set, else the declared default."""
        if name in self.settings:
            return self.settings[name]
        try:
            return self.options[name][2]
        except KeyError:
            known = ", ".join(option_names(type(self))) or "none"
            raise HandlerError(
                f"handler {self.name!r} has no option {name!r}; known options: {known}"
            ) from None

    @property
    def random(self) -> random.Random:
        """The seeded random source to use for every random choice.

        While relaying, it belongs to the connection and direction at hand
        (derived from the proxy's seed and the connection's index), so the
        same seed replays the same faults. Elsewhere it is the proxy's.
        """
        current = CONNECTION_RANDOM.get()
        if current is not None:
            connection, stream = current
            return connection.random(stream)
        if self.proxy is not None:
            return self.proxy.random
        own: random.Random = self.__dict__.setdefault("_random", random.Random())
        return own

    def on_connection(self, connection: ConnectionView) -> None:
        """Called once for each connection this handler is given.

        Override to count connections (``warmup``) or to set up state kept
        in ``connection.state_for(self)``; the default does nothing.
        """

    def spares(self, connection: ConnectionView) -> bool:
        """Whether this handler leaves ``connection`` untouched after all.

        ``transient`` past its ``agitate`` relays connections: they are not
        counted as faults. Called after ``on_connection``; False by default.
        """
        return False

    def exchange_fault(self) -> ExchangeFault | None:
        """What this fault does to the next exchange, under a protocol.

        Called once per exchange (request and reply) the handler is given.
        ``None`` (the default) runs ``__call__`` over the exchange's bytes,
        direction by direction, as toxiproxy's toxics act on a stream.
        """
        return None

    def _get_data(
        self, client_sock: SocketView, backend_sock: SocketView, to_backend: bool
    ) -> bytes:
        """Read what is waiting on the source side; ``b""`` means it closed."""
        source = client_sock if to_backend else backend_sock
        size = self.proxy.read_size if self.proxy is not None else DEFAULT_READ_SIZE
        return source.recv(size)

    def __call__(self, client_sock: SocketView, backend_sock: SocketView, to_backend: bool) -> bool:
        """Relay one chunk unchanged; return falsy to end this direction."""
        data = self._get_data(client_sock, backend_sock, to_backend)
        if data:
            dest = backend_sock if to_backend else client_sock
            dest.sendall(data)
        return bool(data)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.settings!r}>"
