"""What a call to the control API costs while the proxy carries 1000 open connections.

    python benchmarks/control.py [--connections 1000] [--calls 300]

Everything on 127.0.0.1: the benchmark backend (benchmarks/backend.py, echo
mode), the ``vaurien`` command with ``--control``, a proxy created through the
API, ``--connections`` clients connected through it and each echoing a byte
(so every connection is open and relayed), then ``--calls`` sequential calls
on one kept-alive HTTP connection: ``PATCH`` of the behavior (the call the
target is about: p50 under 5 ms), ``POST`` + ``DELETE`` of a rule, and a
``GET`` of the proxy. Prints a JSON object of milliseconds.
"""

from __future__ import annotations

import argparse
import http.client
import json
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

Address = tuple[str, int]


def _wait_file(path: Path, timeout: float = 15.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if text.endswith("\n"):
            return int(text)
        time.sleep(0.02)
    raise TimeoutError(f"{path} was not written within {timeout}s")


def start_backend() -> tuple[subprocess.Popen[str], Address]:
    process = subprocess.Popen(
        [sys.executable, str(HERE / "backend.py")], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    port = int(process.stdout.readline())
    return process, ("127.0.0.1", port)


def start_vaurien(work: Path) -> tuple[subprocess.Popen[bytes], Address]:
    port_file = work / "control.port"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest_vaurien",
            "--control",
            "127.0.0.1:0",
            "--control-port-file",
            str(port_file),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
    )
    return process, ("127.0.0.1", _wait_file(port_file))


def call(conn: http.client.HTTPConnection, method: str, path: str, body: object = None) -> float:
    """One call; returns how long it took, in milliseconds."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    started = time.perf_counter()
    conn.request(method, path, body=data, headers=headers)
    response = conn.getresponse()
    response.read()
    took = (time.perf_counter() - started) * 1e3
    if response.status >= 300:
        raise RuntimeError(f"{method} {path}: HTTP {response.status}")
    return took


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1], 3),
    }


def measure(connections: int = 1000, calls: int = 300) -> dict[str, object]:
    """The figures, with ``connections`` open through the proxy."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, 4 * connections))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    backend, backend_address = start_backend()
    work = Path(tempfile.mkdtemp(prefix="vaurien-bench-control-"))
    vaurien, control = start_vaurien(work)
    clients: list[socket.socket] = []
    try:
        conn = http.client.HTTPConnection(*control, timeout=30)
        created = {
            "name": "bench",
            "upstream": f"{backend_address[0]}:{backend_address[1]}",
            "listen": "127.0.0.1:0",
        }
        call(conn, "POST", "/v1/proxies", created)
        conn.request("GET", "/v1/proxies/bench")
        listen = json.loads(conn.getresponse().read())["listen"]
        host, _, port = listen.rpartition(":")
        for _ in range(connections):
            sock = socket.create_connection((host, int(port)), timeout=30)
            sock.sendall(b"Ex")
            clients.append(sock)
        for sock in clients:  # every connection relayed both ways before measuring
            if sock.recv(1) != b"x":
                raise RuntimeError("a connection did not echo")
        patch = [
            call(
                conn,
                "PATCH",
                "/v1/proxies/bench",
                {"behavior": "100:delay" if i % 2 else "100:dummy", "options": {}},
            )
            for i in range(calls)
        ]
        rules = []
        for i in range(calls):
            rules.append(
                call(conn, "POST", "/v1/proxies/bench/rules", {"fault": "abort", "name": f"r{i}"})
            )
            rules.append(call(conn, "DELETE", f"/v1/proxies/bench/rules/r{i}"))
        reads = [call(conn, "GET", "/v1/proxies/bench") for _ in range(calls)]
        conn.request("GET", "/v1/proxies/bench")
        still_open = json.loads(conn.getresponse().read())["open_connections"]
        return {
            "open_connections": still_open,
            "patch_behavior": summary(patch),
            "add_or_remove_rule": summary(rules),
            "get_proxy": summary(reads),
        }
    finally:
        for sock in clients:
            sock.close()
        vaurien.terminate()
        backend.terminate()
        vaurien.wait(10)
        backend.wait(10)


def table(result: dict[str, object]) -> str:
    """The figures as lines, for benchmarks/run.py."""
    lines = [f"control API, {result['open_connections']} connections open (target: p50 < 5 ms)"]
    for key in ("patch_behavior", "add_or_remove_rule", "get_proxy"):
        figures = result[key]
        assert isinstance(figures, dict)
        lines.append(
            f"  {key.replace('_', ' '):20} p50 {figures['p50_ms']:.2f} ms, "
            f"p99 {figures['p99_ms']:.2f} ms"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    print(json.dumps(measure(args.connections, args.calls), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
