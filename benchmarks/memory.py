"""Memory over a long session: does a test with ``vaurien_proxy`` leave anything behind?

    python benchmarks/memory.py [--tests 3000]

Runs a generated file of N tests that each use ``vaurien_proxy`` (and one
connection through it) in a pytest subprocess; a small plugin notes the
process's resident memory after the 100th test and after the last. The
difference, and the difference per test, are printed. Everything on
127.0.0.1 against an echo backend the run starts itself.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

PLUGIN = """
import json, os, gc

SEEN = {"count": 0, "rss": {}}


def _rss_kb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1])


def pytest_runtest_logfinish(nodeid, location):
    SEEN["count"] += 1
    if SEEN["count"] in (100, int(os.environ["MEMORY_TESTS"])):
        gc.collect()
        SEEN["rss"][SEEN["count"]] = _rss_kb()


def pytest_sessionfinish(session):
    with open(os.environ["MEMORY_OUT"], "w") as out:
        json.dump(SEEN["rss"], out)
"""

TESTS = """
import socket
import threading

import pytest


@pytest.fixture(scope="session")
def vaurien_distant():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)

    def serve():
        while True:
            conn, _ = listener.accept()
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    host, port = listener.getsockname()
    return f"{host}:{port}"


@pytest.mark.parametrize("n", range(COUNT))
def test_with_a_proxy(vaurien_proxy, n):
    with socket.create_connection(vaurien_proxy.address, timeout=5) as sock:
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping"
"""


def measure(tests: int) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="vaurien-bench-memory-"))
    (work / "conftest.py").write_text("pytest_plugins = ['memory_plugin']\n")
    (work / "memory_plugin.py").write_text(textwrap.dedent(PLUGIN))
    (work / "test_memory.py").write_text(TESTS.replace("COUNT", str(tests)))
    out = work / "rss.json"
    env = {"MEMORY_TESTS": str(tests), "MEMORY_OUT": str(out), "PYTHONPATH": str(work)}
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(work)],
        cwd=work,
        env={**__import__("os").environ, **env},
        check=True,
        capture_output=True,
        timeout=3600,
    )
    rss = {int(key): value for key, value in json.loads(out.read_text()).items()}
    grown_kb = rss[tests] - rss[100]
    return {
        "rss_after_100_mb": rss[100] / 1024,
        f"rss_after_{tests}_mb": rss[tests] / 1024,
        "grown_mb": grown_kb / 1024,
        "grown_per_test_kb": grown_kb / (tests - 100),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", type=int, default=3000)
    args = parser.parse_args()
    for key, value in measure(args.tests).items():
        print(f"{key}: {value:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
