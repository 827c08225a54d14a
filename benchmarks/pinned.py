"""Round trips with everything on one CPU: the work a proxy adds to each.

    python benchmarks/pinned.py [--round-trips 200000] [--rounds 3]

A ping-pong spread over CPUs measures wake-up latency, which on a VM varies
with the scheduler's placement; on one CPU it is the work done per round
trip, stable to a few percent. This client, the backend (``backend.py``)
and every thread of the proxy are pinned to one CPU, then one connection
makes ``--round-trips`` round trips of 100 bytes. Targets: direct, the
``vaurien`` command (``100:dummy``), ``minimal_relay.py`` (a relay on gevent
that only ``recv``s and ``send``s: what a Python relay on gevent cannot go
below), the same with its callback in C (``minimal-c``, if a C compiler is
here: what is left with the per-chunk work outside Python) and haproxy if
installed. Per target: the p50 of the round trips and
the proxy's own CPU per round trip (user and system, from ``/proc``).

Everything on 127.0.0.1. Expect about one run in six of the same code to be
2 µs slower throughout (seen for vaurien and the minimal relay alike):
compare medians over rounds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from minimal_relay import c_compiler
from run import Address, Target, _connect, _read_exactly

HERE = Path(__file__).resolve().parent
TICKS = os.sysconf("SC_CLK_TCK")


class MinimalRelay(Target):
    """``minimal_relay.py`` in front of the backend (``minimal-c``: with ``--c``)."""

    def command(self, port: int) -> list[str]:
        script = HERE / "minimal_relay.py"
        flags = ["--c"] if self.name == "minimal-c" else []
        return [sys.executable, str(script), str(port), str(self.backend[1]), *flags]


def _threads(pid: int) -> list[int]:
    try:
        return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def _pin(pids: list[int], cpu: int) -> dict[int, set[int]]:
    """Pin every thread of ``pids`` to ``cpu``; returns what to restore."""
    saved = {}
    for tid in (tid for pid in pids for tid in _threads(pid)):
        try:
            saved[tid] = os.sched_getaffinity(tid)
            os.sched_setaffinity(tid, {cpu})
        except OSError:  # the thread has just ended
            pass
    return saved


def _unpin(saved: dict[int, set[int]]) -> None:
    for tid, cpus in saved.items():
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:
            pass


def _cpu_seconds(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def round_trips(target: Target, backend_pid: int, count: int) -> dict[str, float]:
    """p50 in µs, and the proxy's user and system CPU per round trip in µs."""
    payload = b"x" * 100
    proxy_pid = target.process.pid if target.process is not None else None
    with _connect(target.address) as sock:
        sock.sendall(b"E")
        for _ in range(1000):  # warm up, unpinned
            sock.sendall(payload)
            _read_exactly(sock, 100)
        pids = [os.getpid(), backend_pid] + ([proxy_pid] if proxy_pid else [])
        saved = _pin(pids, min(os.sched_getaffinity(0)))
        try:
            before = _cpu_seconds(proxy_pid) if proxy_pid else (0.0, 0.0)
            times = []
            for _ in range(count):
                started = time.perf_counter_ns()
                sock.sendall(payload)
                _read_exactly(sock, 100)
                times.append(time.perf_counter_ns() - started)
            after = _cpu_seconds(proxy_pid) if proxy_pid else (0.0, 0.0)
        finally:
            _unpin(saved)
    return {
        "p50_us": statistics.median(times) / 1000,
        "user_us": (after[0] - before[0]) / count * 1e6,
        "system_us": (after[1] - before[1]) / count * 1e6,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--round-trips", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    backend_process = subprocess.Popen(
        [sys.executable, str(HERE / "backend.py")], stdout=subprocess.PIPE, text=True
    )
    assert backend_process.stdout is not None
    backend: Address = ("127.0.0.1", int(backend_process.stdout.readline()))
    names = ["direct", "vaurien", "minimal"]
    if c_compiler():
        names.append("minimal-c")
    if shutil.which("haproxy"):
        names.append("haproxy")
    figures: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    try:
        for round_index in range(args.rounds):
            order = names[round_index % len(names) :] + names[: round_index % len(names)]
            for name in order:
                print(f"round {round_index + 1}: {name}", file=sys.stderr)
                target = (
                    MinimalRelay(name, backend)
                    if name.startswith("minimal")
                    else Target(name, backend)
                )
                target.start()
                try:
                    figures[name].append(round_trips(target, backend_process.pid, args.round_trips))
                finally:
                    target.stop()
    finally:
        backend_process.terminate()
        backend_process.wait(10)
    print(f"{'target':10} {'p50 µs':>8} {'proxy user µs':>14} {'proxy system µs':>16}")
    for name in names:
        rows = figures[name]
        p50, user, system = (
            statistics.median(row[key] for row in rows)
            for key in ("p50_us", "user_us", "system_us")
        )
        cpu = f"{user:14.2f} {system:16.2f}" if name != "direct" else f"{'-':>14} {'-':>16}"
        print(f"{name:10} {p50:8.2f} {cpu}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
