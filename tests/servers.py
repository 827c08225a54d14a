"""Small real backends on 127.0.0.1 for the tests: plain threads, no gevent."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable

# The client helpers live in tests/client.py; these names stay importable from
# here for the modules that still do (tests/test_engine.py, tests/test_context.py).
from tests.client import read_exactly, roundtrip, wait_until

__all__ = [
    "BackendClosesFirst",
    "BackendResets",
    "EchoServer",
    "FullBacklog",
    "ScriptedServer",
    "read_exactly",
    "refused_address",
    "roundtrip",
    "wait_until",
]


class _Server:
    """A listener on 127.0.0.1 that serves each connection on a thread of its own."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, 0))
        self.listener.listen(2048)
        self.address: tuple[str, int] = self.listener.getsockname()[:2]
        self.accepted = 0
        self._lock = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._accept, name="test-backend", daemon=True)
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
                index = self.accepted
                self.accepted += 1
                self._opened(index)
            threading.Thread(target=self._run, args=(conn, index), daemon=True).start()

    def _opened(self, index: int) -> None:
        """Called under the lock as connection ``index`` is accepted."""

    def _run(self, conn: socket.socket, index: int) -> None:
        with conn:
            try:
                self.serve(conn, index)
            except OSError:
                return

    def serve(self, conn: socket.socket, index: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stopped = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()

    def __enter__(self) -> _Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class EchoServer(_Server):
    """Echoes every byte back; half-closes after the client does.

    Per accepted connection: ``received`` holds every byte the server got
    (what reached the backend), ``reads`` the size of each ``recv()`` (how
    the bytes were cut on the way) and ``eof_at`` when the client's EOF
    arrived (``time.monotonic()``, ``None`` before).
    """

    def __init__(self, host: str = "127.0.0.1", greeting: bytes = b"") -> None:
        self.greeting = greeting
        self.received: list[bytearray] = []
        self.reads: list[list[int]] = []
        self.eof_at: list[float | None] = []
        super().__init__(host)

    def _opened(self, index: int) -> None:
        self.received.append(bytearray())
        self.reads.append([])
        self.eof_at.append(None)

    def serve(self, conn: socket.socket, index: int) -> None:
        if self.greeting:
            conn.sendall(self.greeting)
        while True:
            data = conn.recv(65536)
            if not data:
                self.eof_at[index] = time.monotonic()
                conn.shutdown(socket.SHUT_WR)
                return
            self.received[index] += data
            self.reads[index].append(len(data))
            conn.sendall(data)

    def total_received(self) -> int:
        with self._lock:
            return sum(len(buffer) for buffer in self.received)


class ScriptedServer(_Server):
    """Runs ``script(conn)`` for each connection, then closes it: a backend
    that behaves in one particular way."""

    def __init__(self, script: Callable[[socket.socket], object]) -> None:
        self.script = script
        super().__init__()

    def serve(self, conn: socket.socket, index: int) -> None:
        self.script(conn)


def _say_bye_and_close(conn: socket.socket) -> None:
    conn.sendall(b"bye")


class BackendClosesFirst(ScriptedServer):
    """Sends ``b"bye"`` and closes at once, before the client is done."""

    def __init__(self) -> None:
        super().__init__(_say_bye_and_close)


def _reset_after_the_request(conn: socket.socket) -> None:
    conn.recv(65536)
    # SO_LINGER on with a zero timeout: close() sends an RST, not a FIN
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class BackendResets(ScriptedServer):
    """Reads the request, then resets the connection (an RST, as a crashed server)."""

    def __init__(self) -> None:
        super().__init__(_reset_after_the_request)


class FullBacklog:
    """A loopback listener whose connect never completes.

    Backlog 0 admits one pending connection; ours fills it and nobody ever
    accepts, so the kernel drops later SYNs and a connect waits until its
    own timeout, as with a backend that is overloaded or unreachable.
    """

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.address: tuple[str, int] = self.listener.getsockname()
        self.filler = socket.create_connection(self.address, timeout=5)

    @property
    def distant(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    def close(self) -> None:
        self.filler.close()
        self.listener.close()

    def __enter__(self) -> FullBacklog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def refused_address() -> tuple[str, int]:
    """A loopback port nobody listens on (bound, then closed)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    address = sock.getsockname()
    sock.close()
    return address
