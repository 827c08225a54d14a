"""Seeds replay faults exactly; failing tests carry a fault report."""

from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ET

import pytest

#: What the inner test files start with: tests/client.py is beside them as ``client``.
CLIENT_HELPERS = """
from client import roundtrip, settled
"""

MIXED = (
    CLIENT_HELPERS
    + """
import hashlib
import json
import os

import pytest

BEHAVIOR = "30:delay,30:error,20:blackout"


def use(proxy, count):
    return [hashlib.sha256(roundtrip(proxy.address, b"payload %d" % i)).hexdigest()[:12]
            for i in range(count)]


@pytest.mark.vaurien(BEHAVIOR, delay__sleep=0.001, delay__jitter=0.001)
def test_before(vaurien_proxy):
    use(vaurien_proxy, 7)


@pytest.mark.vaurien(BEHAVIOR, delay__sleep=0.001)
def test_mix(vaurien_proxy, vaurien_proxy_factory, vaurien_distant):
    second = vaurien_proxy_factory(vaurien_distant)
    replies = use(vaurien_proxy, 30) + use(second, 5)
    rows = [[r.index, r.handler, r.bytes_to_backend, r.bytes_to_client, str(r.ending)]
            for proxy in (vaurien_proxy, second) for r in settled(proxy)]
    with open(os.environ["VAURIEN_OUT"], "a") as out:
        out.write(json.dumps({"rows": rows, "replies": replies}) + "\\n")


@pytest.mark.vaurien(BEHAVIOR, delay__sleep=0.001)
def test_after(vaurien_proxy):
    use(vaurien_proxy, 11)
"""
)

REVERSE = """
def pytest_collection_modifyitems(items):
    items.reverse()
"""


def test_same_seed_same_faults_alone_reversed_and_under_xdist(pytester, backend, monkeypatch):
    out = pytester.path / "runs.jsonl"
    monkeypatch.setenv("VAURIEN_OUT", str(out))
    pytester.makepyfile(test_mixed=MIXED)
    base = ("--vaurien-distant", backend.distant, "-p", "no:randomly", "-p", "no:cacheprovider")

    pytester.runpytest(*base, "--vaurien-seed=42").assert_outcomes(passed=3)
    pytester.runpytest(*base, "--vaurien-seed=42", "test_mixed.py::test_mix").assert_outcomes(
        passed=1
    )
    pytester.makeconftest(REVERSE)
    pytester.runpytest(*base, "--vaurien-seed=42").assert_outcomes(passed=3)
    (pytester.path / "conftest.py").unlink()
    xdist = pytester.runpytest_subprocess(*base, "--vaurien-seed=42", "-n", "2", timeout=120)
    xdist.assert_outcomes(passed=3)
    pytester.runpytest(*base, "--vaurien-seed=43", "test_mixed.py::test_mix").assert_outcomes(
        passed=1
    )

    runs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(runs) == 5
    *same, different = runs
    assert all(run == same[0] for run in same)
    handlers = {row[1] for row in same[0]["rows"]}
    assert {"delay", "error", "blackout", "dummy"} <= handlers  # a real mix was drawn
    assert different != same[0]


def test_garbage_is_reproducible_with_the_seed(pytester, backend):
    pytester.makepyfile(
        f"""
        import pytest

        from client import roundtrip

        @pytest.mark.vaurien("error", distant="{backend.distant}")
        def test_it(vaurien_proxy):
            data = roundtrip(vaurien_proxy.address, b"x")
            assert len(data) == 1000
            with open("garbage.txt", "a") as out:
                out.write(data.hex() + "\\n")
    """
    )
    for seed in ("5", "5", "6"):
        pytester.runpytest("--vaurien-seed", seed).assert_outcomes(passed=1)
    first, second, other = (pytester.path / "garbage.txt").read_text().splitlines()
    assert first == second
    assert first != other


FAILING = """
import pytest

from client import roundtrip


def ask(proxy, payload):
    return roundtrip(proxy.address, payload)


@pytest.mark.vaurien("error")
def test_fails(vaurien_proxy):
    assert ask(vaurien_proxy, b"hello") == b"hello"


@pytest.mark.vaurien("dummy")
def test_passes(vaurien_proxy):
    assert ask(vaurien_proxy, b"hello") == b"hello"
"""


def test_fault_report_appears_on_failure_only_with_a_replay_line(pytester, backend):
    pytester.makepyfile(test_report=FAILING)
    result = pytester.runpytest(
        "--vaurien-distant", backend.distant, "--vaurien-seed=7", "--junitxml=out.xml"
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*Captured vaurien call*",
            "seed 7; replay with: pytest 'test_report.py::test_fails' --vaurien-seed=7",
            "",
            f"proxy 127.0.0.1:* -> {backend.distant}, behavior 'error': 1 connection",
            "#  client * handler  to backend  to client  duration  ending",
            "0  127.0.0.1:* error    5           1000       *s  *",
        ]
    )
    assert result.stdout.str().count("Captured vaurien") == 1
    result.stdout.fnmatch_lines(["vaurien: 2 connections proxied; faults injected: error 1"])

    cases = {
        case.get("name"): case for case in ET.parse(pytester.path / "out.xml").iter("testcase")
    }
    failed = {p.get("name"): p.get("value") for p in cases["test_fails"].iter("property")}
    passed = {p.get("name"): p.get("value") for p in cases["test_passes"].iter("property")}
    assert failed["vaurien_seed"] == "7"
    assert (
        "replay with: pytest 'test_report.py::test_fails' --vaurien-seed=7"
        in failed["vaurien_report"]
    )
    assert failed["vaurien_faults"] == "1"
    assert passed == {"vaurien_connections": "1", "vaurien_faults": "0"}


def test_records_match_the_wire(pytester, backend):
    pytester.makepyfile(
        CLIENT_HELPERS
        + textwrap.dedent("""
        import pytest


        def test_it(vaurien_proxy):
            assert roundtrip(vaurien_proxy.address, b"x" * 300) == b"x" * 300
            with vaurien_proxy.set_behavior("error", error__inject=True):
                garbled = roundtrip(vaurien_proxy.address, b"y" * 40)
            with vaurien_proxy.set_behavior("blackout"):
                assert roundtrip(vaurien_proxy.address, b"z") == b""
            plain, error, blackout = settled(vaurien_proxy)
            assert (plain.handler, plain.bytes_to_backend, plain.bytes_to_client) == \\
                ("dummy", 300, 300)
            assert str(plain.ending) == "client closed" and plain.duration >= 0
            # the garbage counts as bytes to the client: 40 echoed + 1000 injected
            assert len(garbled) == 1040 and garbled != b"y" * 40
            assert (error.handler, error.bytes_to_backend, error.bytes_to_client) == \\
                ("error", 40, 1040)
            assert error.options["error"]["inject"] is True
            assert error.options["error"]["warmup"] == 0
            assert (blackout.handler, blackout.bytes_to_backend, blackout.bytes_to_client) == \\
                ("blackout", 0, 0)
            assert str(blackout.ending) == "handler closed"
            stats = vaurien_proxy.stats
            assert stats.connections == 3
            assert stats.bytes_to_client == 300 + 1040
            assert stats.handlers == {"blackout": 1, "dummy": 1, "error": 1}
            assert stats.faults == {"blackout": 1, "error": 1}
            assert stats.bytes_to_backend == 340
            assert stats.endings == {"client closed": 2, "handler closed": 1}
    """)
    )
    pytester.runpytest("--vaurien-distant", backend.distant).assert_outcomes(passed=1)


@pytest.mark.parametrize("workers", [[], ["-n", "2"]])
def test_session_summary_counts_every_proxy(pytester, backend, workers):
    pytester.makepyfile(
        textwrap.dedent("""
        import socket
        import pytest

        @pytest.mark.parametrize("n", range(4))
        @pytest.mark.vaurien("blackout")
        def test_it(vaurien_proxy, n):
            with socket.create_connection(vaurien_proxy.address, timeout=10) as sock:
                sock.sendall(b"x")
                assert sock.recv(10) == b""
    """)
    )
    result = pytester.runpytest_subprocess(
        "--vaurien-distant", backend.distant, *workers, timeout=120
    )
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["vaurien: 4 connections proxied; faults injected: blackout 4"])
