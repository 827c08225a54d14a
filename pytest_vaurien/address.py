"""``HOST:PORT`` and ``[::1]:PORT`` parsing and formatting."""

from __future__ import annotations

from pytest_vaurien.errors import ConfigError

__all__ = ["format_address", "parse_address"]

Address = tuple[str, int]


def parse_address(value: str | tuple[str, int], where: str = "address") -> Address:
    """Turn ``"HOST:PORT"``, ``"[::1]:PORT"`` or a ``(host, port)`` tuple into a tuple.

    :param where: names the source of the value in error messages.
    :raises ConfigError: naming ``where`` and the value when it does not parse.
    """
    if isinstance(value, tuple):
        if len(value) != 2 or not isinstance(value[0], str):
            raise ConfigError(f"{where}: {value!r} is not a (host, port) tuple")
        return value[0], _port(value[1], value, where)
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {value!r} is not an address; expected HOST:PORT")
    text = value.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ConfigError(f"{where}: {value!r} is not an address; expected [IPV6]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ConfigError(f"{where}: {value!r} has no port; expected HOST:PORT")
        if ":" in host:
            raise ConfigError(
                f"{where}: {value!r} is ambiguous; write an IPv6 address as [HOST]:PORT"
            )
    if not host:
        raise ConfigError(f"{where}: {value!r} has no host; expected HOST:PORT")
    return host, _port(port_text, value, where)


def _port(port: object, value: object, where: str) -> int:
    try:
        number = int(port)  # type: ignore[call-overload]
        assert isinstance(number, int)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{where}: {value!r} has port {port!r}; expected a number from 0 to 65535"
        ) from None
    if not 0 <= number <= 65535:
        raise ConfigError(f"{where}: {value!r} has port {number}; expected 0 to 65535")
    return number


def format_address(address: Address) -> str:
    """Format a ``(host, port)`` tuple as ``HOST:PORT`` (``[HOST]:PORT`` for IPv6)."""
    host, port = address
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"
