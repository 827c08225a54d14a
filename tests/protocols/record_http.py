"""Record real HTTP/1.1 traffic for the framer tests (a script, not a test).

Runs the standard library's HTTP server behind a recording tap on localhost,
drives real clients through it (``http.client``, ``urllib``, ``requests``, ``curl`` when
installed) and writes what each connection carried, both ways, to
``http_traffic.py`` beside this file:

    python -m tests.protocols.record_http

The tests read that module; they never need a network or these clients.
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from shutil import which


class Handler(BaseHTTPRequestHandler):
    """A small API: JSON, uploads (Content-Length or chunked), a chunked
    stream, 204, 304, 404 and, through ``Expect``, 100 Continue."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        if status not in (204, 304):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if not size:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def do_GET(self) -> None:
        if self.path == "/stream":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"first ", b"second ", b"third"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/cached" and self.headers.get("If-None-Match") == '"v1"':
            self._send(304, ETag='"v1"')
        elif self.path.startswith("/json"):
            self._send(200, b'{"ok": true}', Content_Type="application/json", ETag='"v1"')
        else:
            self.send_error(404)

    do_HEAD = do_GET

    def do_POST(self) -> None:
        body = self._body()
        self._send(201, b"got %d bytes" % len(body), Location="/uploads/1")

    do_PUT = do_POST

    def do_DELETE(self) -> None:
        self._send(204)


def tap(listener: socket.socket, backend: tuple[str, int], log: list[tuple[bytes, bytes]]) -> None:
    """Accept connections and relay each to ``backend``, recording both ways."""
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        server = socket.create_connection(backend)
        record = [bytearray(), bytearray()]

        def pump(src: socket.socket, dst: socket.socket, out: bytearray) -> None:
            while data := src.recv(65536):
                out += data
                dst.sendall(data)
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

        pumps = [
            threading.Thread(target=pump, args=(client, server, record[0])),
            threading.Thread(target=pump, args=(server, client, record[1])),
        ]
        for thread in pumps:
            thread.start()
        for thread in pumps:
            thread.join()
        client.close()
        server.close()
        log.append((bytes(record[0]), bytes(record[1])))


def with_http_client(port: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port)
    for method, path, body, headers in [
        ("GET", "/json?id=1", None, {}),
        ("HEAD", "/json", None, {}),
        ("POST", "/uploads", iter([b"abc", b"defgh", b"ij"]), {"Transfer-Encoding": "chunked"}),
        ("GET", "/stream", None, {}),
        ("DELETE", "/uploads/1", None, {}),
        ("GET", "/cached", None, {"If-None-Match": '"v1"'}),
        ("PUT", "/uploads/2", b"x" * 300, {"Content-Type": "application/octet-stream"}),
    ]:
        connection.request(
            method, path, body=body, headers=headers, encode_chunked=method == "POST"
        )
        connection.getresponse().read()
    connection.close()


def with_requests(port: int) -> None:
    """A pooled client's kept-alive connection: the same heads again and again."""
    import requests  # a test dependency; imported here as only this driver needs it

    base = f"http://127.0.0.1:{port}"
    with requests.Session() as session:
        for _ in range(2):
            session.get(f"{base}/json?id=1", timeout=10).raise_for_status()
            session.post(f"{base}/uploads", data=b"payload", timeout=10).raise_for_status()
            session.head(f"{base}/json", timeout=10).raise_for_status()
            session.get(f"{base}/stream", timeout=10).raise_for_status()
            session.delete(f"{base}/uploads/1", timeout=10).raise_for_status()


def with_urllib(port: int) -> None:
    urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=10).read()
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/missing", timeout=10)
    except urllib.error.HTTPError as error:
        error.read()


def with_curl(port: int) -> list[str]:
    base = f"http://127.0.0.1:{port}"
    runs = [
        [
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            "payload",
            f"{base}/uploads",
            f"{base}/json",
        ],
        ["-T", "-", f"{base}/uploads/3"],
        ["--http2", f"{base}/json"],
    ]
    names = []
    for args in runs:
        subprocess.run(["curl", "-s", "-o", "/dev/null", *args], input=b"streamed body", check=True)
        names.append("curl " + " ".join(args).replace(base, ""))
    return names


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    log: list[tuple[bytes, bytes]] = []
    threading.Thread(target=tap, args=(listener, server.server_address, log), daemon=True).start()
    names = []
    drivers = [
        ("http.client", with_http_client),
        ("urllib", with_urllib),
        ("requests", with_requests),
    ]
    for name, drive in drivers:
        before = len(log)
        drive(port)
        while len(log) == before or (name == "urllib" and len(log) < before + 2):
            threading.Event().wait(0.05)
        names += [name] * (len(log) - before)
    if which("curl"):
        for name in with_curl(port):
            while len(log) < len(names) + 1:
                threading.Event().wait(0.05)
            names.append(name)
    listener.close()
    server.shutdown()
    lines = [
        '"""Real traffic, recorded by ``python -m tests.protocols.record_http``: do not edit."""',
        "",
        "from __future__ import annotations",
        "",
        "#: (what the client sent, what the backend answered, who talked), one per connection.",
        "CONNECTIONS: list[tuple[bytes, bytes, str]] = [",
    ]
    for (sent, answered), name in zip(log, names, strict=True):
        lines += [f"    ({sent!r}, {answered!r}, {name!r}),"]
    lines += [
        "]",
        "",
        "#: The connections that stay HTTP to the end, to splice into longer streams.",
        "RECORDED = [(sent, answered) for sent, answered, _ in CONNECTIONS if b'Upgrade' not in sent]",
        "",
    ]
    Path(__file__).with_name("http_traffic.py").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
