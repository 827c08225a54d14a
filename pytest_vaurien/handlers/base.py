"""The handler API: ``BaseHandler`` and typed option conversion.

A handler is a plain class: a ``name``, an ``options`` table and
``__call__(client_sock, backend_sock, to_backend)``. This module knows nothing
of sockets beyond calling ``recv`` on the side that has data, so that what a
handler does to bytes stays apart from the relay's plumbing.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, ClassVar

from pytest_vaurien.errors import ConfigError, HandlerError
from pytest_vaurien.handlers.context import ConnectionView, ProxyInfo, SocketView

__all__ = ["BaseHandler", "ConvertedOptions", "OptionSpec", "convert_value", "option_names"]

#: ``(description, type, default)`` or ``(description, type, default, choices)``.
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


class ConvertedOptions(dict[str, Any]):
    """Option values already converted to their declared types (by the fault
    plan, which names the source of a bad one): ``BaseHandler`` takes them
    as they are instead of converting them a second time."""


def convert_value(value: Any, kind: type, choices: Any = None) -> Any:
    """Convert ``value`` (often a string from an ini file) to ``kind``.

    :raises ValueError: with a phrase saying what is expected.
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
        try:
            converted = kind(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            raise ValueError(f"expected {expected}") from None
        if kind is float and converted != converted:  # NaN never makes sense here
            raise ValueError(f"expected {expected}")
    else:
        try:
            converted = kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected {expected}") from None
    if choices is not None and converted not in choices:
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
                f"handler {cls.name!r} has no option {option!r}; known options: {known}"
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
                f"handler {cls.name!r}: option {option!r} = {value!r} is not valid; {error}"
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
