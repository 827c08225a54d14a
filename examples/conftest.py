"""The examples' backend: a real HTTP server on 127.0.0.1 that the run starts itself.

Overriding ``vaurien_distant`` points every ``vaurien_proxy`` at it, so the
tests need no command-line option and no ini setting.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class StatusHandler(BaseHTTPRequestHandler):
    """Answers every GET with a small JSON document; takes payments by POST.

    HTTP/1.1, so clients keep their connections alive as with real services.
    Each payment it receives is kept in ``server.payments``: a test can tell
    whether a POST reached the backend.
    """

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.payments.append((self.path, body))  # type: ignore[attr-defined]
        reply = json.dumps({"paid": self.path}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def do_GET(self) -> None:
        body = json.dumps({"status": "ok", "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the test output quiet


@pytest.fixture(scope="session")
def http_backend() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StatusHandler)
    server.daemon_threads = True
    server.payments = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, name="example-backend", daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def vaurien_distant(http_backend: ThreadingHTTPServer) -> tuple[str, int]:
    host, port = http_backend.server_address[:2]
    return str(host), int(port)
