"""Protocols the proxy frames: one sans-IO module each, pure (no sockets, no gevent).

``protocol="tcp"`` (the default) frames nothing: the unit is the connection.
Every other protocol cuts the byte stream into exchanges, one request and the
reply that answers it, so that faults are decided per request.
"""

from __future__ import annotations

import importlib

from pytest_vaurien.errors import ConfigError
from pytest_vaurien.protocols.base import WireProtocol

__all__ = ["PROTOCOLS", "TCP", "check_protocol", "wire_protocol"]

TCP = "tcp"

#: Protocol name -> the module that frames it (``tcp`` frames nothing).
PROTOCOLS: dict[str, str | None] = {
    TCP: None,
    "http": "pytest_vaurien.protocols.http",
    "redis": "pytest_vaurien.protocols.redis",
    "postgresql": "pytest_vaurien.protocols.postgresql",
    "memcache": "pytest_vaurien.protocols.memcache",
    "mysql": "pytest_vaurien.protocols.mysql",
    "smtp": "pytest_vaurien.protocols.smtp",
}


def check_protocol(name: object, where: str) -> str:
    """``name`` if it is a known protocol.

    :raises ConfigError: naming ``where`` and listing the known protocols.
    """
    if not isinstance(name, str) or name.strip().lower() not in PROTOCOLS:
        raise ConfigError(
            f"{where}: unknown protocol {name!r}; known: {', '.join(sorted(PROTOCOLS))}"
        )
    return name.strip().lower()


def wire_protocol(name: str) -> WireProtocol | None:
    """The protocol object for ``name``; ``None`` for ``tcp``."""
    module = PROTOCOLS[check_protocol(name, "protocol")]
    if module is None:
        return None
    protocol: WireProtocol = importlib.import_module(module).PROTOCOL
    return protocol
