"""The ``vaurien`` command with --protocol and --rule, and a config file's [rule:NAME]."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client import wait_until


def status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture
def command(tmp_path: Path) -> Iterator:
    processes: list[subprocess.Popen[str]] = []

    def run(*args: str) -> int:
        port_file = tmp_path / f"port{len(processes)}"
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pytest_vaurien",
                "--local",
                "127.0.0.1:0",
                "--port-file",
                str(port_file),
                *args,
            ],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        processes.append(process)
        wait_until(lambda: port_file.exists() or process.poll() is not None, timeout=30)
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        return int(port_file.read_text())

    yield run
    for process in processes:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        if process.stderr is not None:
            process.stderr.close()


def test_the_command_takes_protocol_and_rules(command, http_backend):
    port = command(
        "--distant",
        http_backend.distant,
        "--protocol",
        "http",
        "--rule",
        "error; status=503; match=GET /flaky; schedule=first:2",
    )
    assert [status(port, "/flaky") for _ in range(3)] == [503, 503, 200]
    assert status(port, "/other") == 200
    assert [path for _, path, _ in http_backend.calls] == ["/flaky", "/other"]


def test_the_config_file_defines_rules_and_protocol(command, http_backend, tmp_path):
    config = tmp_path / "vaurien.ini"
    config.write_text(
        textwrap.dedent(
            f"""
            [vaurien]
            distant = {http_backend.distant}
            protocol = http

            [rule:teapot]
            fault = error
            status = 418
            match = GET /tea
            """
        )
    )
    port = command("--config", str(config))
    assert (status(port, "/tea"), status(port, "/coffee")) == (418, 200)


def test_a_bad_rule_is_one_line_and_exit_2(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_vaurien",
            "--distant",
            "127.0.0.1:9",
            "--rule",
            "error; percent=200",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "vaurien: error: --rule 'error; percent=200': percent='200' is not valid; "
        "expected a number from 0 to 100\n"
    )
