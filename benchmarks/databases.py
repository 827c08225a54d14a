"""What faults per command cost against real servers: Redis pipelined SET/GET and
PostgreSQL queries, through ``--protocol redis``/``postgresql`` against
``--protocol tcp`` and direct.

    python benchmarks/databases.py [--rounds 3]

Everything on 127.0.0.1: redis-server and PostgreSQL (Debian packages; as
root, PostgreSQL runs as the ``postgres`` user) started in temporary
directories, the ``vaurien`` command at ``100:dummy``, 4 client threads here.
Redis: pipelines of 50 SET + 50 GET, as ``shared/bench/protobench.py`` sends
them. PostgreSQL, one query at a time on each connection: ``SELECT 1`` in the
simple-query protocol (psycopg's ``ClientCursor``); ``SELECT %s`` with a
parameter, psycopg's default server-side binding, unprepared
(Parse/Bind/Describe/Execute/Sync each time: ``prepare_threshold=None``) and
prepared (psycopg's default: from the sixth run on, Bind/Describe/Execute/Sync
of a named statement). Besides the rates, the proxy's CPU time (user and
system, from ``/proc``) per query or command.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from protocols import _free_port, _wait_port, start_vaurien  # noqa: E402

Address = tuple[str, int]
PG_BIN = Path("/usr/lib/postgresql/15/bin")
#: Round trips each client makes before the clock starts (pipelines; ten times
#: as many queries), on every target alike: a proxy's first requests pay for
#: one-time work (imports, compiling the patterns that frame a Redis pipeline
#: in one pass, about 0.1 s) that a run of a fraction of a second would
#: otherwise count as if it were the cost of each request.
WARMUP = 20


@contextlib.contextmanager
def redis_server() -> Iterator[Address]:
    port = _free_port()
    with tempfile.TemporaryDirectory() as work:
        process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--dir",
                work,
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            _wait_port(port)
            yield ("127.0.0.1", port)
        finally:
            process.terminate()
            process.wait(10)


@contextlib.contextmanager
def postgres_server() -> Iterator[Address]:
    port = _free_port()
    work = tempfile.mkdtemp(prefix="vaurien-bench-pg-")
    user = {"user": "postgres"} if os.geteuid() == 0 else {}
    try:
        if user:
            shutil.chown(work, "postgres", "postgres")
        data = f"{work}/data"
        subprocess.run(
            [str(PG_BIN / "initdb"), "-D", data, "-U", "vaurien", "--auth=trust"],
            check=True,
            capture_output=True,
            **user,  # type: ignore[arg-type]
        )
        process = subprocess.Popen(
            [
                str(PG_BIN / "postgres"),
                "-D",
                data,
                "-p",
                str(port),
                "-h",
                "127.0.0.1",
                "-k",
                work,
                "-c",
                "fsync=off",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **user,  # type: ignore[call-overload]
        )
        try:
            _wait_port(port)
            deadline = time.monotonic() + 30
            while subprocess.run(
                [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                capture_output=True,
            ).returncode:
                if time.monotonic() > deadline:
                    raise RuntimeError("PostgreSQL did not start")
                time.sleep(0.1)
            yield ("127.0.0.1", port)
        finally:
            process.terminate()
            process.wait(20)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _threads(client: Callable[[list[float]], None], count: int = 4) -> float:
    rates: list[float] = []
    threads = [threading.Thread(target=client, args=(rates,)) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(rates)


def redis_rate(address: Address, pipelines: int) -> float:
    batch = b"".join(
        b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n"
        for _ in range(50)
    )
    expect = b"+OK\r\n$5\r\nvalue\r\n" * 50

    def client(rates: list[float]) -> None:
        with socket.create_connection(address, timeout=10) as sock:
            started = 0.0
            for done in range(-WARMUP, pipelines):
                if done == 0:  # the first few are not timed (see WARMUP)
                    started = time.perf_counter()
                sock.sendall(batch)
                got = b""
                while len(got) < len(expect):
                    got += sock.recv(65536)
            rates.append(pipelines * 100 / (time.perf_counter() - started))

    return _threads(client)


def postgres_rate(address: Address, queries: int, kind: str = "simple") -> float:
    """``kind``: ``simple`` (``SELECT 1``, simple query), ``extended``
    (``SELECT %s``, unprepared) or ``prepared`` (``SELECT %s``, prepared)."""
    import psycopg

    options: dict[str, Any] = {}
    if kind == "simple":
        options["cursor_factory"] = psycopg.ClientCursor
    elif kind == "extended":
        options["prepare_threshold"] = None

    def client(rates: list[float]) -> None:
        with psycopg.connect(
            host=address[0],
            port=address[1],
            user="vaurien",
            dbname="postgres",
            autocommit=True,
            **options,
        ) as conn:
            cursor = conn.cursor()
            started = 0.0
            for done in range(-WARMUP * 10, queries):
                if done == 0:
                    started = time.perf_counter()
                if kind == "simple":
                    cursor.execute("SELECT 1")
                else:
                    cursor.execute("SELECT %s", (1,))
                cursor.fetchone()
            rates.append(queries / (time.perf_counter() - started))

    return _threads(client)


def _cpu(pid: int) -> float:
    """A process's user and system CPU time so far, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: One line of the table: (its name, the protocol, the backend, the client).
ROWS: list[tuple[str, str, str, Callable[[Address, int], float], int]] = [
    ("redis", "redis", "redis", redis_rate, 400),
    ("postgresql", "postgresql", "postgresql", postgres_rate, 3000),
    (
        "postgresql extended",
        "postgresql",
        "postgresql",
        lambda address, count: postgres_rate(address, count, "extended"),
        3000,
    ),
    (
        "postgresql prepared",
        "postgresql",
        "postgresql",
        lambda address, count: postgres_rate(address, count, "prepared"),
        3000,
    ),
]
#: Requests (commands or queries) a client call of each row makes per count.
_PER_COUNT = {"redis": 100, "postgresql": 1}


def measure(rounds: int) -> dict[str, dict[str, float]]:
    """Per row, each target's rate (requests a second) and, under ``cpu
    MODE``, the proxy's CPU time per request in µs: medians over ``rounds``."""
    results: dict[str, dict[str, list[float]]] = {row[0]: {} for row in ROWS}
    with redis_server() as redis, postgres_server() as postgres:
        backends = {"redis": redis, "postgresql": postgres}
        for _ in range(rounds):
            for name, protocol, backend, rate, size in ROWS:
                for mode in ("direct", "tcp", protocol):
                    process = None
                    address = backends[backend]
                    if mode != "direct":
                        process, address = start_vaurien(address, mode)
                    try:
                        before = _cpu(process.pid) if process else 0.0
                        per_second = rate(address, size)
                        results[name].setdefault(mode, []).append(per_second)
                        if process:
                            used = _cpu(process.pid) - before
                            requests = 4 * (size + WARMUP * (10 if protocol != "redis" else 1))
                            requests *= _PER_COUNT[protocol]
                            results[name].setdefault(f"cpu {mode}", []).append(
                                used / requests * 1e6
                            )
                    finally:
                        if process is not None:
                            process.terminate()
                            process.wait(10)
    return {
        name: {mode: statistics.median(values) for mode, values in modes.items()}
        for name, modes in results.items()
    }


def table(summary: dict[str, dict[str, float]]) -> str:
    """One line a row: each target's rate, the protocol's ratio to tcp mode,
    and the proxy's CPU per request in each mode."""
    lines = []
    for name, modes in summary.items():
        rates = {mode: value for mode, value in modes.items() if not mode.startswith("cpu ")}
        protocol = next(mode for mode in rates if mode not in ("direct", "tcp"))
        ratio = rates[protocol] / rates["tcp"]
        cells = ", ".join(f"{mode} {value:.0f}/s" for mode, value in rates.items())
        cpu = ", ".join(
            f"{mode[4:]} {value:.1f}" for mode, value in modes.items() if mode.startswith("cpu ")
        )
        lines.append(f"{name}: {cells}; {protocol}/tcp {ratio:.2f}; CPU us per request: {cpu}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(table(measure(args.rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
