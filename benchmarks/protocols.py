"""What faults per request cost: keep-alive HTTP through ``--protocol http``
against ``--protocol tcp`` and direct, and a 100 MB chunked body.

    python benchmarks/protocols.py [--rounds 3] [--quick] [--json results.json]

Everything on 127.0.0.1: an HTTP/1.1 backend (selectors, one thread, a fixed
200 reply, keep-alive; ``/chunked/N`` streams N bytes chunked) in a process
of its own, the ``vaurien`` command in another at ``100:dummy``, the clients
here: 4 threads, each doing sequential GETs on one kept-alive connection, as
a pooled client does. Reported: requests per second and the p50/p99 of each
request, medians over the rounds; the proxy's CPU time per request (user +
system, from /proc on Linux), which this machine's noise moves far less than
the rates; the chunked body's time per MB at two sizes shows whether framing
stays linear in the bytes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import selectors
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
Address = tuple[str, int]
REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
REQUEST = b"GET /item/1 HTTP/1.1\r\nHost: bench\r\n\r\n"
CHUNK = 64 * 1024


def serve(listener: socket.socket) -> None:
    """The backend: answers each request head with REPLY, or streams /chunked/N."""
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    buffers: dict[socket.socket, bytes] = {}
    zeros = b"0" * CHUNK
    while True:
        for key, _ in selector.select():
            sock = key.fileobj
            if sock is listener:
                conn, _ = listener.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                selector.register(conn, selectors.EVENT_READ)
                buffers[conn] = b""
                continue
            assert isinstance(sock, socket.socket)
            data = sock.recv(65536)
            if not data:
                selector.unregister(sock)
                sock.close()
                del buffers[sock]
                continue
            buffered = buffers[sock] + data
            while b"\r\n\r\n" in buffered:
                head, buffered = buffered.split(b"\r\n\r\n", 1)
                target = head.split(b" ", 2)[1]
                if target.startswith(b"/chunked/"):
                    size = int(target.rsplit(b"/", 1)[1])
                    sock.setblocking(True)
                    sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    head_line = b"%x\r\n" % CHUNK
                    for _ in range(size // CHUNK):
                        sock.sendall(head_line + zeros + b"\r\n")
                    sock.sendall(b"0\r\n\r\n")
                else:
                    sock.sendall(REPLY)
            buffers[sock] = buffered


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def start_vaurien(backend: Address, protocol: str) -> tuple[subprocess.Popen[bytes], Address]:
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "pytest_vaurien",
        "--local",
        f"127.0.0.1:{port}",
        "--distant",
        f"{backend[0]}:{backend[1]}",
        "--behavior",
        "100:dummy",
        "--protocol",
        protocol,
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_port(port)
    return process, ("127.0.0.1", port)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time process ``pid`` used so far; NaN where /proc is not."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def requests_per_second(address: Address, count: int, clients: int = 4) -> dict[str, float]:
    """``clients`` threads, each ``count`` sequential GETs on one kept-alive connection."""
    latencies: list[float] = []
    lock = threading.Lock()

    def client() -> None:
        took = []
        with socket.create_connection(address, timeout=10) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(count):
                started = time.perf_counter()
                sock.sendall(REQUEST)
                got = b""
                while not got.endswith(b"ok"):
                    chunk = sock.recv(4096)
                    if not chunk:
                        raise ConnectionError("closed")
                    got += chunk
                took.append(time.perf_counter() - started)
        with lock:
            latencies.extend(took)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rate": clients * count / elapsed,
        "p50_us": latencies[len(latencies) // 2] * 1e6,
        "p99_us": latencies[int(len(latencies) * 0.99)] * 1e6,
    }


def chunked_seconds_per_mb(address: Address, megabytes: int) -> float:
    """Time to receive a chunked body of ``megabytes`` MB, per MB."""
    size = megabytes * CHUNK * 16  # a "MB" of 16 chunks of 64 KiB
    with socket.create_connection(address, timeout=60) as sock:
        started = time.perf_counter()
        sock.sendall(b"GET /chunked/%d HTTP/1.1\r\nHost: bench\r\n\r\n" % size)
        tail = b""
        received = 0
        while not tail.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("closed")
            received += len(chunk)
            tail = (tail + chunk)[-16:]
        return (time.perf_counter() - started) / megabytes


def measure(rounds: int, quick: bool) -> dict[str, dict[str, float]]:
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    backend: Address = ("127.0.0.1", int(server.stdout.readline()))
    try:
        return _measure(backend, rounds, quick)
    finally:
        server.terminate()
        server.wait(10)


def _measure(backend: Address, rounds: int, quick: bool) -> dict[str, dict[str, float]]:
    count = 2000 if quick else 10000
    sizes = (10, 100) if not quick else (10, 30)
    rows: dict[str, list[dict[str, float]]] = {"direct": [], "tcp": [], "http": []}
    for round_index in range(rounds):
        for name in rows:
            process = None
            address = backend
            if name != "direct":
                process, address = start_vaurien(backend, name)
            print(f"round {round_index + 1}: {name}", file=sys.stderr)
            try:
                used = cpu_seconds(process.pid) if process is not None else math.nan
                row = requests_per_second(address, count)
                if process is not None:  # 4 clients of `count` requests each
                    row["cpu_us"] = (cpu_seconds(process.pid) - used) / (4 * count) * 1e6
                for megabytes in sizes:
                    row[f"chunked_{megabytes}mb_s_per_mb"] = chunked_seconds_per_mb(
                        address, megabytes
                    )
                rows[name].append(row)
            finally:
                if process is not None:
                    process.terminate()
                    process.wait(10)
    return {
        name: {key: statistics.median(row[key] for row in values) for key in values[0]}
        for name, values in rows.items()
    }


def table(summary: dict[str, dict[str, float]]) -> str:
    tcp = summary["tcp"]["rate"]
    lines = [
        "target   requests/s  p50 us  p99 us  / tcp  proxy CPU us  chunked s/MB (small, large)",
    ]
    for name, row in summary.items():
        small, large = (v for k, v in row.items() if k.startswith("chunked"))
        cpu = f"{row['cpu_us']:>12.1f}" if "cpu_us" in row else f"{'-':>12}"
        lines.append(
            f"{name:<8} {row['rate']:>10.0f}  {row['p50_us']:>6.0f}  {row['p99_us']:>6.0f}"
            f"  {row['rate'] / tcp:>5.2f}  {cpu}  {small * 1e3:.2f} ms, {large * 1e3:.2f} ms"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:  # the backend's own process: print the port, serve until killed
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        print(listener.getsockname()[1], flush=True)
        serve(listener)
        return 0
    summary = measure(1 if args.quick else args.rounds, args.quick)
    print(table(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
