"""What faults per command cost against real servers: Redis pipelined SET/GET and
PostgreSQL simple queries, through ``--protocol redis``/``postgresql`` against
``--protocol tcp`` and direct.

    python benchmarks/databases.py [--rounds 3]

Everything on 127.0.0.1: redis-server and PostgreSQL (Debian packages; as
root, PostgreSQL runs as the ``postgres`` user) started in temporary
directories, the ``vaurien`` command at ``100:dummy``, 4 client threads here.
Redis: pipelines of 50 SET + 50 GET, as ``shared/bench/protobench.py`` sends
them. PostgreSQL: ``SELECT 1`` in the simple-query protocol, one at a time on
each connection (psycopg's ``ClientCursor``).
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


def postgres_rate(address: Address, queries: int) -> float:
    import psycopg

    def client(rates: list[float]) -> None:
        with psycopg.connect(
            host=address[0],
            port=address[1],
            user="vaurien",
            dbname="postgres",
            autocommit=True,
            cursor_factory=psycopg.ClientCursor,
        ) as conn:
            cursor = conn.cursor()
            started = 0.0
            for done in range(-WARMUP * 10, queries):
                if done == 0:
                    started = time.perf_counter()
                cursor.execute("SELECT 1")
                cursor.fetchone()
            rates.append(queries / (time.perf_counter() - started))

    return _threads(client)


def measure(rounds: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, list[float]]] = {"redis": {}, "postgresql": {}}
    with redis_server() as redis, postgres_server() as postgres:
        for _ in range(rounds):
            for protocol, backend, rate, size in (
                ("redis", redis, redis_rate, 400),
                ("postgresql", postgres, postgres_rate, 3000),
            ):
                for mode in ("direct", "tcp", protocol):
                    process = None
                    address = backend
                    if mode != "direct":
                        process, address = start_vaurien(backend, mode)
                    try:
                        results[protocol].setdefault(mode, []).append(rate(address, size))
                    finally:
                        if process is not None:
                            process.terminate()
                            process.wait(10)
    return {
        protocol: {mode: statistics.median(values) for mode, values in modes.items()}
        for protocol, modes in results.items()
    }


def table(summary: dict[str, dict[str, float]]) -> str:
    """One line a protocol: each target's rate and the protocol's ratio to tcp mode."""
    lines = []
    for protocol, modes in summary.items():
        ratio = modes[protocol] / modes["tcp"]
        cells = ", ".join(f"{mode} {value:.0f}/s" for mode, value in modes.items())
        lines.append(f"{protocol}: {cells}; {protocol}/tcp {ratio:.2f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(table(measure(args.rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
