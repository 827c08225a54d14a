"""Measure what pytest-vaurien costs: the ``vaurien`` command against direct
loopback and whichever of socat and haproxy are installed, in one run; then
the per-test cost of the fixture and the accuracy of two faults.

    python benchmarks/run.py [--rounds 3] [--quick] [--json results.json]

Everything runs on 127.0.0.1: a selectors backend (``backend.py``) in its own
process, each proxy in its own process, the clients here. Each measure runs
against every target in turn, rounds rotate the order, and the table shows
medians. Expect noise of 10 % or more on a shared machine: compare targets
within one run, through the ratios.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
Address = tuple[str, int]
MB = 10**6


# -- targets -------------------------------------------------------------------


class Target:
    """A proxy process (or none, for direct) in front of the backend."""

    def __init__(self, name: str, backend: Address) -> None:
        self.name = name
        self.backend = backend
        self.process: subprocess.Popen[str] | None = None
        self.address: Address = backend
        self.workdir = Path(tempfile.mkdtemp(prefix=f"vaurien-bench-{name}-"))

    def start(self) -> None:
        if self.name == "direct":
            return
        port = _free_port()
        self.process = subprocess.Popen(
            self.command(port),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        self.address = (self.backend[0], port)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                echo_once(self.address)
                return
            except OSError:
                time.sleep(0.02)  # polling for the proxy to listen, bounded
        raise RuntimeError(f"{self.name} did not start")

    def command(self, port: int) -> list[str]:
        """The proxy's command line, listening on ``port``."""
        host, backend_port = self.backend
        if self.name == "vaurien":
            return [
                sys.executable,
                "-m",
                "pytest_vaurien",
                "--local",
                f"{host}:{port}",
                "--distant",
                f"{host}:{backend_port}",
                "--log-level",
                "warning",
            ]
        if self.name == "socat":
            return [
                str(shutil.which("socat")),
                f"TCP-LISTEN:{port},bind={host},reuseaddr,fork,backlog=4096",
                f"TCP:{host}:{backend_port}",
            ]
        config = self.workdir / "haproxy.cfg"
        config.write_text(
            textwrap.dedent(f"""
            global
                maxconn 8000
            defaults
                mode tcp
                maxconn 8000
                timeout connect 5s
                timeout client 60s
                timeout server 60s
            frontend bench
                bind {host}:{port}
                default_backend echo
            backend echo
                server backend {host}:{backend_port}
        """)
        )
        return [str(shutil.which("haproxy")), "-f", str(config), "-db"]

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def rss_mb(self) -> float | None:
        """Resident memory of the proxy and its children, in MB."""
        if self.process is None:
            return None
        total = 0
        pids = [self.process.pid]
        try:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
            pids += [int(pid) for pid in children.read_text().split()]
        except OSError:
            pass
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total / 1024


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _connect(address: Address, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(address, timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, got = [], 0
    while got < size:
        chunk = sock.recv(min(1 << 16, size - got))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def echo_once(address: Address) -> None:
    with _connect(address, timeout=2) as sock:
        sock.sendall(b"Eping")
        if _read_exactly(sock, 4) != b"ping":
            raise OSError("no echo")


# -- measures against every target -------------------------------------------------


def rtt(address: Address, count: int) -> dict[str, float]:
    """Round trips of 100 bytes on one connection: p50 and p99 in microseconds."""
    payload = b"x" * 100
    times = []
    with _connect(address) as sock:
        sock.sendall(b"E")
        for _ in range(count):
            started = time.perf_counter()
            sock.sendall(payload)
            _read_exactly(sock, 100)
            times.append(time.perf_counter() - started)
    times.sort()
    return {
        "rtt_p50_us": times[len(times) // 2] * 1e6,
        "rtt_p99_us": times[int(len(times) * 0.99)] * 1e6,
    }


def bulk(address: Address, size: int) -> dict[str, float]:
    """One way each: client to backend (up), backend to client (down), MB/s."""
    block = bytes(1 << 16)
    with _connect(address, timeout=60) as sock:
        started = time.perf_counter()
        sock.sendall(b"S" + struct.pack("!Q", size))
        left = size
        while left > 0:
            left -= sock.send(block[: min(len(block), left)])
        assert _read_exactly(sock, 2) == b"ok"
        up = size / MB / (time.perf_counter() - started)
    with _connect(address, timeout=60) as sock:
        started = time.perf_counter()
        sock.sendall(b"D" + struct.pack("!Q", size))
        got = 0
        while chunk := sock.recv(1 << 16):
            got += len(chunk)
        down = got / MB / (time.perf_counter() - started)
        assert got == size, (got, size)
    return {"bulk_up_MBps": up, "bulk_down_MBps": down}


def churn(address: Address, seconds: float, clients: int = 16) -> dict[str, float]:
    """Connect, echo 100 bytes, close, from ``clients`` threads: connections/s."""
    done = [0] * clients
    errors = [0] * clients
    stop_at = time.monotonic() + seconds

    def client(index: int) -> None:
        while time.monotonic() < stop_at:
            try:
                with _connect(address, timeout=5) as sock:
                    sock.sendall(b"E" + b"c" * 100)
                    if _read_exactly(sock, 100) != b"c" * 100:
                        raise OSError("bad echo")
                done[index] += 1
            except OSError:
                errors[index] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 30)
    return {
        "churn_conn_per_s": sum(done) / (time.monotonic() - started),
        "churn_errors": sum(errors),
    }


def concurrency(target: Target, count: int, kib: int) -> dict[str, float | None]:
    """``count`` connections at once, each echoing ``kib`` KiB checked by sha256."""
    payloads = [os.urandom(kib * 1024) for _ in range(count)]
    results: queue.Queue[bool] = queue.Queue()
    hold = threading.Event()
    all_open = threading.Barrier(count + 1, timeout=120)

    def client(payload: bytes) -> None:
        ok = False
        try:
            with _connect(target.address, timeout=60) as sock:
                sender = threading.Thread(target=sock.sendall, args=(b"E" + payload,))
                sender.start()
                ok = (
                    hashlib.sha256(_read_exactly(sock, len(payload))).digest()
                    == hashlib.sha256(payload).digest()
                )
                sender.join(60)
                results.put(ok)
                all_open.wait()
                hold.wait(60)
                return
        except (OSError, threading.BrokenBarrierError):
            pass
        results.put(ok)
        try:
            all_open.wait()
        except threading.BrokenBarrierError:
            pass

    threads = [threading.Thread(target=client, args=(p,), daemon=True) for p in payloads]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        all_open.wait()
    except threading.BrokenBarrierError:
        pass
    wall = time.monotonic() - started
    rss = target.rss_mb()
    hold.set()
    for thread in threads:
        thread.join(60)
    failures = sum(not results.get() for _ in range(count))
    return {"conc_wall_s": wall, "conc_failures": failures, "conc_rss_MB": rss}


def halfclose(address: Address) -> dict[str, str]:
    """Send 64 KiB, shut down writing, and expect the backend's answer."""
    with _connect(address) as sock:
        sock.sendall(b"H" + bytes(65536))
        sock.shutdown(socket.SHUT_WR)
        reply = sock.recv(100)
    return {"halfclose": "pass" if reply == b"65536\n" else "FAIL"}


# -- measures of the project alone ---------------------------------------------------


def fixture_overhead(backend: Address, tests: int) -> dict[str, float]:
    """Median setup + teardown of ``vaurien_proxy`` per test, over ``tests`` tests,
    against the same tests without the fixture; in milliseconds."""
    work = Path(tempfile.mkdtemp(prefix="vaurien-bench-fixture-"))
    (work / "conftest.py").write_text(
        textwrap.dedent("""
        import json
        import pytest

        DURATIONS = {}

        def pytest_runtest_logreport(report):
            if report.when in ("setup", "teardown"):
                DURATIONS[report.nodeid] = DURATIONS.get(report.nodeid, 0) + report.duration

        def pytest_sessionfinish(session):
            with open("durations.json", "w") as out:
                json.dump(DURATIONS, out)
    """)
    )
    (work / "test_overhead.py").write_text(
        textwrap.dedent(f"""
        import pytest

        @pytest.mark.parametrize("n", range({tests}))
        def test_with(vaurien_proxy, n):
            pass

        @pytest.mark.parametrize("n", range({tests}))
        def test_without(n):
            pass
    """)
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            "--vaurien-distant",
            f"{backend[0]}:{backend[1]}",
            str(work),
        ],
        cwd=work,
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    durations = json.loads((work / "durations.json").read_text())
    with_fixture = [v for k, v in durations.items() if "test_with[" in k]
    without = [v for k, v in durations.items() if "test_without[" in k]
    shutil.rmtree(work, ignore_errors=True)
    return {"fixture_ms": (statistics.median(with_fixture) - statistics.median(without)) * 1e3}


def fault_accuracy(backend: Address, quick: bool) -> dict[str, float]:
    """What 50 ms of delay adds to a round trip (p50), and the rate bandwidth holds."""
    sys.path.insert(0, str(ROOT))
    from pytest_vaurien import Proxy

    count = 40 if quick else 100
    base = rtt(backend, count)["rtt_p50_us"] / 1e3
    with Proxy(backend, "delay", options={"delay": {"sleep": 0.05}}) as proxy:
        delayed = rtt(proxy.address, count)["rtt_p50_us"] / 1e3
    size = 10 * MB
    rate_kbps = 20_000.0  # KB/s: 10 MB take half a second
    with Proxy(backend, "bandwidth", options={"bandwidth": {"rate": rate_kbps}}) as proxy:
        measured = bulk(proxy.address, size)["bulk_down_MBps"] * 1000
    return {
        "delay_added_ms": delayed - base,
        "bandwidth_error_pct": (measured - rate_kbps) / rate_kbps * 100,
    }


# -- the run ------------------------------------------------------------------


ROWS = [
    ("rtt_p50_us", "rtt p50 us", "low"),
    ("rtt_p99_us", "rtt p99 us", "low"),
    ("bulk_up_MBps", "bulk up MB/s", "high"),
    ("bulk_down_MBps", "bulk down MB/s", "high"),
    ("churn_conn_per_s", "churn conn/s", "high"),
    ("churn_errors", "churn errors", None),
    ("conc_wall_s", "1k conns s", "low"),
    ("conc_failures", "1k failed", None),
    ("conc_rss_MB", "RSS @1k MB", "low"),
    ("halfclose", "half-close", None),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one round")
    parser.add_argument("--json", metavar="PATH", help="write every figure as JSON")
    parser.add_argument(
        "--no-project-measures",
        dest="project",
        action="store_false",
        help="skip the fixture overhead and fault accuracy",
    )
    parser.add_argument(
        "--no-protocols",
        dest="protocols",
        action="store_false",
        help=(
            "skip the protocol modes: the request rate through --protocol http "
            "(benchmarks/protocols.py) and Redis and PostgreSQL on real servers "
            "(benchmarks/databases.py)"
        ),
    )
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    sizes = {
        "rtt": 2000 if args.quick else 10000,
        "bulk": (64 if args.quick else 256) * MB,
        "churn": 2.0 if args.quick else 5.0,
        "conns": 1000,
        "kib": 64,
        "tests": 100 if args.quick else 500,
    }

    backend_process = subprocess.Popen(
        [sys.executable, str(HERE / "backend.py")], stdout=subprocess.PIPE, text=True
    )
    assert backend_process.stdout is not None
    backend: Address = ("127.0.0.1", int(backend_process.stdout.readline()))
    names = ["direct", "vaurien"] + [n for n in ("socat", "haproxy") if shutil.which(n)]
    figures: dict[str, list[dict[str, object]]] = {name: [] for name in names}
    try:
        for round_index in range(rounds):
            order = names[round_index % len(names) :] + names[: round_index % len(names)]
            for name in order:
                target = Target(name, backend)
                print(f"round {round_index + 1}: {name}", file=sys.stderr)
                target.start()
                try:
                    result: dict[str, object] = {}
                    result.update(rtt(target.address, sizes["rtt"]))
                    result.update(bulk(target.address, sizes["bulk"]))
                    result.update(churn(target.address, sizes["churn"]))
                    result.update(concurrency(target, sizes["conns"], sizes["kib"]))
                    result.update(halfclose(target.address))
                    figures[name].append(result)
                finally:
                    target.stop()
        project = {}
        if args.project:
            print("fixture overhead and fault accuracy", file=sys.stderr)
            project.update(fixture_overhead(backend, sizes["tests"]))
            project.update(fault_accuracy(backend, args.quick))
    finally:
        backend_process.terminate()
        backend_process.wait(10)

    summary = {name: _medians(rows) for name, rows in figures.items()}
    ref = "haproxy" if "haproxy" in names else names[-1]
    print(_table(summary, names, ref))
    if project:
        print()
        print(
            f"vaurien_proxy setup + teardown per test: {project['fixture_ms']:.2f} ms (target <= 2)"
        )
        print(f"delay of 50 ms adds at p50: {project['delay_added_ms']:.1f} ms (target 50 +/- 2)")
        print(
            f"bandwidth over 10 MB: {project['bandwidth_error_pct']:+.1f} % off the rate "
            "(target +/- 5)"
        )
    protocols = {}
    databases: dict[str, dict[str, float]] | str = {}
    if args.protocols:
        sys.path.insert(0, str(HERE))
        import databases as database_bench  # benchmarks/databases.py
        import protocols as protocol_bench  # benchmarks/protocols.py

        protocols = protocol_bench.measure(rounds, args.quick)
        print()
        print(protocol_bench.table(protocols))
        try:
            databases = database_bench.measure(rounds)
        except (OSError, subprocess.SubprocessError, RuntimeError, ImportError) as error:
            databases = f"skipped: {error}"  # no redis-server, PostgreSQL or psycopg here
            print(f"real servers: {databases}")
        else:
            print(database_bench.table(databases))
    control: dict[str, object] | str = {}
    if args.project:
        sys.path.insert(0, str(HERE))
        import control as control_bench  # benchmarks/control.py

        try:
            control = control_bench.measure(200 if args.quick else 1000)
        except (OSError, subprocess.SubprocessError, RuntimeError) as error:
            control = f"failed: {error}"
            print(f"control API: {control}")
        else:
            print()
            print(control_bench.table(control))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "summary": summary,
                    "rounds": figures,
                    "project": project,
                    "sizes": sizes,
                    "protocols": protocols,
                    "databases": databases,
                    "control": control,
                },
                indent=2,
                default=str,
            )
        )
    return 0


def _medians(rows: list[dict[str, object]]) -> dict[str, object]:
    merged: dict[str, object] = {}
    for key in rows[0]:
        values = [row[key] for row in rows if row.get(key) is not None]
        if not values:
            merged[key] = None
        elif all(isinstance(v, (int, float)) for v in values):
            merged[key] = (
                sum(values) if key.endswith(("errors", "failures")) else statistics.median(values)
            )  # type: ignore[arg-type]
        else:
            merged[key] = "pass" if all(v == "pass" for v in values) else "FAIL"
    return merged


def _table(summary: dict[str, dict[str, object]], names: list[str], ref: str) -> str:
    def cell(value: object) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3g}" if value < 100 else f"{value:.0f}"
        return str(value)

    lines = ["".ljust(16) + "".join(name.rjust(12) for name in names)]
    for key, label, _ in ROWS:
        lines.append(label.ljust(16) + "".join(cell(summary[n].get(key)).rjust(12) for n in names))
    for base in ("direct", ref):
        lines.append("")
        lines.append(f"ratio to {base}")
        reference_row = summary[base]
        for key, label, better in ROWS:
            if better is None:
                continue
            reference = reference_row.get(key)
            values = []
            for name in names:
                value = summary[name].get(key)
                usable = isinstance(value, (int, float)) and isinstance(reference, (int, float))
                ratio = f"{value / reference:.2f}" if usable and reference else "-"  # type: ignore[operator]
                values.append(ratio.rjust(12))
            lines.append(f"{label} ({better})"[:16].ljust(16) + "".join(values))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
