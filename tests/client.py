"""The socket client of every test, stdlib only.

In-process tests import it as ``tests.client``. pytester's inner test files
import the very same source as ``client``: the ``pytester`` fixture of
``tests/conftest.py`` writes it beside them (``source()``), so there is one
client, not a copy per test module.
"""

from __future__ import annotations

import inspect
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

Address = tuple[str, int]


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 5.0,
    interval: float = 0.005,
    message: str = "condition",
) -> Any:
    """Poll ``predicate`` until it is truthy (and return it); fail after ``timeout`` seconds.

    A bounded poll instead of a sleep: tests wait for what they need, no longer.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not reached within {timeout}s")
        time.sleep(interval)


def read_exactly(sock: socket.socket, size: int) -> bytes:
    """Read ``size`` bytes, or fewer if the peer closes first."""
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def read_chunks(sock: socket.socket) -> list[bytes]:
    """Every ``recv()`` result until EOF; a reset ends the stream too.

    The pieces, not just the bytes: fragmentation (``slicer``) shows in them.
    """
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return chunks


def read_until_eof(sock: socket.socket) -> bytes:
    """Everything until EOF, or until a reset (a fault may end a stream with one)."""
    return b"".join(read_chunks(sock))


def roundtrip(address: Address, payload: bytes = b"ping", timeout: float = 10.0) -> bytes:
    """Send ``payload``, half-close, read until EOF; a reset at the end counts as the end."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        return read_until_eof(sock)


def timed_roundtrip(address: Address, payload: bytes = b"ping") -> tuple[bytes, float]:
    """``roundtrip`` and how many seconds it took."""
    started = time.monotonic()
    reply = roundtrip(address, payload)
    return reply, time.monotonic() - started


def settled(proxy: Any, timeout: float = 10.0) -> list[Any]:
    """The proxy's connection records once none is open any more.

    A client sees its EOF a moment before the proxy records the ending.
    """
    wait_until(
        lambda: not any(record.open for record in proxy.connections),
        timeout=timeout,
        message="every connection recorded as ended",
    )
    return list(proxy.connections)


def source() -> str:
    """This module's source, to write beside pytester's inner test files."""
    return inspect.getsource(sys.modules[__name__])
