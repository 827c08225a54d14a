"""A real HTTP/1.1 server for the HTTP tests, on 127.0.0.1, in threads.

It keeps what it was asked (``calls``: method and path, in order) so that a
test can tell whether a request reached the backend - the "did my POST
happen?" question.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real services

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(self, status: int, body: bytes, **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        if "Transfer_Encoding" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _note(self, body: bytes = b"") -> None:
        server: HttpBackend = self.server  # type: ignore[assignment]
        with server.lock:
            server.calls.append((self.command, self.path, body))

    def do_GET(self) -> None:
        self._note()
        if self.path.startswith("/chunked"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (b"hello ", b"chunked ", b"world"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
            return
        if self.path.startswith("/big"):
            self._reply(200, bytes(range(256)) * 4096)
            return
        if self.path.startswith("/empty"):
            self.send_response(204)
            self.end_headers()
            return
        self._reply(200, f"hello {self.path}".encode(), Content_Type="text/plain")

    def do_HEAD(self) -> None:
        self._note()
        self._reply(200, b"x" * 42)

    def do_POST(self) -> None:
        body = self._body()
        self._note(body)
        self._reply(201, b"created " + body)

    def do_PUT(self) -> None:
        self.do_POST()

    def log_message(self, format: str, *args: object) -> None:
        pass


class HttpBackend(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.calls: list[tuple[str, str, bytes]] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve_forever, name="http-backend", daemon=True)
        self.thread.start()

    @property
    def distant(self) -> str:
        host, port = self.server_address[:2]
        return f"{host}:{port}"

    def posts(self) -> list[str]:
        with self.lock:
            return [path for method, path, _ in self.calls if method == "POST"]

    def close(self) -> None:
        self.shutdown()
        self.server_close()
