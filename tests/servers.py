"""Small real backends on 127.0.0.1 for the tests: plain threads, no gevent."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 5.0,
    interval: float = 0.005,
    message: str = "condition",
) -> Any:
    """Poll ``predicate`` until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not reached within {timeout}s")
        time.sleep(interval)


class EchoServer:
    """Echoes every byte back; half-closes after the client does.

    ``received`` holds, per accepted connection, every byte the server got,
    so tests can tell what reached the backend.
    """

    def __init__(self, host: str = "127.0.0.1", greeting: bytes = b"") -> None:
        self.greeting = greeting
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, 0))
        self.listener.listen(2048)
        self.address: tuple[str, int] = self.listener.getsockname()[:2]
        self.received: list[bytearray] = []
        self.accepted = 0
        self._lock = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._accept, name="echo-server", daemon=True)
        self._thread.start()

    @property
    def distant(self) -> str:
        host, port = self.address
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def _accept(self) -> None:
        while not self._stopped:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                buffer = bytearray()
                self.received.append(buffer)
                self.accepted += 1
            threading.Thread(target=self._echo, args=(conn, buffer), daemon=True).start()

    def _echo(self, conn: socket.socket, buffer: bytearray) -> None:
        with conn:
            try:
                if self.greeting:
                    conn.sendall(self.greeting)
                while True:
                    data = conn.recv(65536)
                    if not data:
                        conn.shutdown(socket.SHUT_WR)
                        return
                    buffer += data
                    conn.sendall(data)
            except OSError:
                return

    def total_received(self) -> int:
        with self._lock:
            return sum(len(buffer) for buffer in self.received)

    def close(self) -> None:
        self._stopped = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()


def refused_address() -> tuple[str, int]:
    """A loopback port nobody listens on (bound, then closed)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    address = sock.getsockname()
    sock.close()
    return address


def read_exactly(sock: socket.socket, size: int) -> bytes:
    """Read ``size`` bytes, or fewer if the peer closes first."""
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def roundtrip(address: tuple[str, int], payload: bytes, timeout: float = 5.0) -> bytes:
    """Send ``payload``, half-close, read until EOF."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)
