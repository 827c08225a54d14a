"""``HOST:PORT`` and ``[::1]:PORT`` parsing and formatting."""

from __future__ import annotations

import ipaddress

from pytest_vaurien.echo import echo
from pytest_vaurien.errors import ConfigError

__all__ = ["format_address", "is_loopback", "parse_address"]

Address = tuple[str, int]


def parse_address(
    value: str | tuple[str, int], where: str = "address", *, listen: bool = False
) -> Address:
    """Turn ``"HOST:PORT"``, ``"[::1]:PORT"`` or a ``(host, port)`` tuple into a tuple.

    :param where: names the source of the value in error messages.
    :param listen: the address is one to listen on, where port 0 means "any
        free port"; an address to connect to (the distant) needs a real port,
        else the mistake would only show as every connection refused.
    :raises ConfigError: naming ``where`` and the value when it does not parse.
    """
    if isinstance(value, tuple):
        if len(value) != 2 or not isinstance(value[0], str) or not value[0]:
            raise ConfigError(f"{where}: {echo(value)} is not a (host, port) tuple")
        return value[0], _port(value[1], value, where, listen)
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {echo(value)} is not an address; expected HOST:PORT")
    text = value.strip()
    if not text:
        raise ConfigError(f"{where}: the address is empty; expected HOST:PORT")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ConfigError(f"{where}: {echo(value)} is not an address; expected [IPV6]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ConfigError(f"{where}: {echo(value)} has no port; expected HOST:PORT")
        if ":" in host:
            raise ConfigError(
                f"{where}: {echo(value)} is ambiguous; write an IPv6 address as [HOST]:PORT"
            )
    if not host:
        raise ConfigError(f"{where}: {echo(value)} has no host; expected HOST:PORT")
    return host, _port(port_text, value, where, listen)


def _port(port: object, value: object, where: str, listen: bool) -> int:
    lowest = 0 if listen else 1
    expected = f"expected a number from {lowest} to 65535"
    text = port.strip() if isinstance(port, str) else ""
    if text.isascii() and text.isdigit() and len(text) <= 5:
        number = int(text)
    elif isinstance(port, int) and not isinstance(port, bool):
        number = port
    else:
        raise ConfigError(f"{where}: {echo(value)} has port {echo(port)}; {expected}")
    if not lowest <= number <= 65535:
        raise ConfigError(f"{where}: {echo(value)} has port {echo(number)}; {expected}")
    return number


def format_address(address: Address) -> str:
    """Format a ``(host, port)`` tuple as ``HOST:PORT`` (``[HOST]:PORT`` for IPv6)."""
    host, port = address
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def is_loopback(host: str) -> bool:
    """True for a loopback address (127.0.0.0/8, ::1, either mapped into
    IPv6) or ``localhost``; a name that may resolve anywhere else is not."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
