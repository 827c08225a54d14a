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
    """Answers every GET with a small JSON document."""

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
    thread = threading.Thread(target=server.serve_forever, name="example-backend", daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def vaurien_distant(http_backend: ThreadingHTTPServer) -> tuple[str, int]:
    host, port = http_backend.server_address[:2]
    return str(host), int(port)
