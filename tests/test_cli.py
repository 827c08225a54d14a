"""The ``vaurien`` command, run for real as a subprocess."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client import roundtrip

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"proxying (\S+):(\d+) -> ")


class Command:
    """A running ``vaurien`` process whose stderr is read line by line."""

    def __init__(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pytest_vaurien", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env={**os.environ, "PYTHONPATH": f"{cwd}{os.pathsep}{ROOT}", **(env or {})},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pattern: re.Pattern[str], timeout: float = 15) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(line)
            match = pattern.search(line)
            if match:
                return match
        raise AssertionError(f"{pattern.pattern!r} not seen; stderr so far: {self.seen}")

    def address(self) -> tuple[str, int]:
        match = self.wait_for(LISTENING)
        return match.group(1), int(match.group(2))

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout=10)


@pytest.fixture
def run(tmp_path: Path) -> Iterator:
    started: list[Command] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Command:
        command = Command(*args, cwd=tmp_path, env=env)
        started.append(command)
        return command

    yield start
    for command in started:
        if command.process.poll() is None:
            command.process.kill()
            command.process.wait(10)
        for stream in (command.process.stdout, command.process.stderr):
            if stream is not None:
                stream.close()


def run_to_end(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_vaurien", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"},
    )


def test_behavior_and_options_from_the_command_line(run, backend):
    command = run(
        "--local",
        "127.0.0.1:0",
        "--distant",
        backend.distant,
        "--behavior",
        "delay",
        "--handlers.delay.sleep",
        "0.3",
    )
    address = command.address()
    started = time.monotonic()
    assert roundtrip(address, b"hi") == b"hi"
    assert time.monotonic() - started >= 0.3
    command.wait_for(re.compile(r"INFO #0 127\.0\.0\.1:\d+ delay: 2 B to backend, 2 B to client"))
    assert command.stop() == 0


def test_config_file_with_an_alias_and_env_substitution(run, backend, tmp_path, upper_source):
    (tmp_path / "myhandlers.py").write_text(upper_source)
    (tmp_path / "config.ini").write_text(
        textwrap.dedent("""
        [vaurien]
        local = 127.0.0.1:0
        distant = ${BACKEND}
        behavior = 100:foobar

        [handler:foobar]
        callable = myhandlers.Upper
        suffix = !
    """)
    )
    command = run("--config", "config.ini", env={"BACKEND": backend.distant})
    assert roundtrip(command.address(), b"hi") == b"HI!"
    assert command.stop(signal.SIGINT) == 0


def test_command_line_overrides_the_file(run, backend, tmp_path, upper_source):
    (tmp_path / "myhandlers.py").write_text(upper_source)
    (tmp_path / "config.ini").write_text(
        textwrap.dedent("""
        [vaurien]
        local = 127.0.0.1:1
        distant = 127.0.0.1:1
        behavior = dummy

        [handler:foobar]
        callable = myhandlers.Upper
        suffix = file
    """)
    )
    command = run(
        "--config",
        "config.ini",
        "--local",
        "127.0.0.1:0",
        "--distant",
        backend.distant,
        "--behavior",
        "foobar",
        "--handlers.foobar.suffix=cli",
    )
    assert roundtrip(command.address(), b"hi") == b"HIcli"
    assert command.stop() == 0


def test_dotted_path_handler_from_the_command_line(run, backend, tmp_path, upper_source):
    (tmp_path / "myhandlers.py").write_text(upper_source)
    command = run(
        "--local",
        "127.0.0.1:0",
        "--distant",
        backend.distant,
        "--behavior",
        "100:myhandlers.Upper",
        "--handlers.upper.suffix",
        "?",
    )
    assert roundtrip(command.address(), b"hi") == b"HI?"
    assert command.stop() == 0


def test_seed_replays_the_faults_from_the_flag_or_the_file(run, backend, tmp_path):
    """``--seed`` and the file's ``seed`` feed the same random source: the same
    seed garbles a reply the same way, another seed otherwise; the flag wins."""
    (tmp_path / "seeded.ini").write_text("[vaurien]\nseed = 5\n")
    base = ("--local", "127.0.0.1:0", "--distant", backend.distant, "--behavior", "error")
    commands = {  # started together: each takes a moment to come up
        "flag 5": run(*base, "--seed", "5"),
        "flag 5 again": run(*base, "--seed", "5"),
        "flag 6": run(*base, "--seed", "6"),
        "file 5": run(*base, "--config", "seeded.ini"),
        "file 5, flag 6": run(*base, "--config", "seeded.ini", "--seed", "6"),
    }
    seeds, replies = {}, {}
    for name, command in commands.items():
        listening = command.wait_for(LISTENING)
        seeds[name] = listening.string.rsplit(" ", 1)[-1]
        replies[name] = roundtrip((listening.group(1), int(listening.group(2))), b"x")
    assert seeds == {
        "flag 5": "5",
        "flag 5 again": "5",
        "flag 6": "6",
        "file 5": "5",
        "file 5, flag 6": "6",
    }
    assert len(replies["flag 5"]) == 1000
    assert replies["flag 5 again"] == replies["flag 5"]
    assert replies["file 5"] == replies["flag 5"]
    assert replies["flag 6"] != replies["flag 5"]
    assert replies["file 5, flag 6"] == replies["flag 6"]
    for command in commands.values():
        assert command.stop() == 0


def test_sigterm_with_connections_open_exits_cleanly(run, backend):
    command = run("--local", "127.0.0.1:0", "--distant", backend.distant)
    address = command.address()
    clients = [socket.create_connection(address, timeout=5) for _ in range(5)]
    for client in clients:  # a reply proves the connection is relayed, and still open
        client.sendall(b"open")
        assert client.recv(10) == b"open"
    started = time.monotonic()
    assert command.stop() == 0
    assert time.monotonic() - started < 5
    for client in clients:
        try:
            assert client.recv(10) == b""
        except ConnectionResetError:
            pass
        client.close()
    command.wait_for(re.compile(r"stopped; 5 connections relayed, 5 were open"))


def test_list_handlers(tmp_path, upper_source):
    (tmp_path / "myhandlers.py").write_text(upper_source)
    (tmp_path / "c.ini").write_text("[handler:foobar]\ncallable = myhandlers.Upper\n")
    result = run_to_end(tmp_path, "--list-handlers", "--config", "c.ini")
    assert result.returncode == 0
    out = result.stdout
    assert "delay (built-in): Delays each chunk" in out
    assert "    sleep (float >= 0, default 1.0): Delay in seconds" in out
    assert "foobar ([handler:foobar] in 'c.ini'): Upper-cases replies" in out
    assert "    suffix (str, default ''): Appended to each reply" in out


def test_help_lists_builtin_handler_options(tmp_path):
    result = run_to_end(tmp_path, "--help")
    assert result.returncode == 0
    assert "--handlers.delay.sleep FLOAT" in result.stdout
    assert "Delay in seconds (default 1.0)" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--distant", "127.0.0.1:1", "--handlers.delay.slep", "2"],
            "vaurien: error: command line: handler 'delay' has no option 'slep'; known options: "
            "before, jitter, sleep",
        ),
        (
            ["--distant", "127.0.0.1:1", "--behavior", "20:dealy"],
            "vaurien: error: --behavior: unknown handler 'dealy'; known: abort, bandwidth, "
            "blackout, delay, dummy, error, hang, latency, limit_data, reset_peer, slicer, "
            "slow_close, timeout, transient",
        ),
        (
            ["--distant", "127.0.0.1:1", "--handlers.delay.sleep", "soon"],
            "vaurien: error: command line: handler 'delay': option 'sleep' = 'soon' is not "
            "valid; expected a number",
        ),
        (
            ["--distant", "nowhere"],
            "vaurien: error: --distant: 'nowhere' has no port; expected HOST:PORT",
        ),
        (
            ["--distant", "127.0.0.1:1", "--local", "127.0.0.1:http"],
            "vaurien: error: --local: '127.0.0.1:http' has port 'http'; expected a number from "
            "0 to 65535",
        ),
        (
            ["--config", "missing.ini"],
            "vaurien: error: config file 'missing.ini': cannot read it: No such file or directory",
        ),
        (
            ["--behavior", "dummy"],
            "vaurien: error: no backend: give --distant HOST:PORT or 'distant' in the [vaurien] "
            "section of --config (or --control HOST:PORT to create proxies through the API)",
        ),
        (
            ["--distant", "127.0.0.1:1", "--bogus"],
            "vaurien: error: unrecognized argument '--bogus'",
        ),
        (
            ["--distant", "127.0.0.1:1", "--handlers.delay.sleep"],
            "vaurien: error: --handlers.delay.sleep: expected a value",
        ),
        (["--seed", "x"], "vaurien: error: argument --seed: invalid int value: 'x'"),
    ],
)
def test_errors_are_one_line_and_exit_2(tmp_path, args, message):
    result = run_to_end(tmp_path, *args)
    assert result.returncode == 2
    assert result.stderr.strip() == message


def test_config_file_errors(tmp_path):
    (tmp_path / "bad.ini").write_text("[vaurien]\ndistant = 127.0.0.1:1\nspeed = 3\n")
    (tmp_path / "env.ini").write_text("[vaurien]\ndistant = ${NOT_SET_ANYWHERE}\n")
    (tmp_path / "section.ini").write_text("[proxy]\nx = 1\n")
    expected = {
        "bad.ini": "section [vaurien]: unknown key 'speed'; expected one of behavior, distant, "
        "local, protocol, seed",
        "env.ini": "section [vaurien], distant: environment variable ${NOT_SET_ANYWHERE} is "
        "not set",
        "section.ini": "unknown section [proxy]; expected [vaurien], [handler:NAME], [rule:NAME] "
        "or [proxy:NAME]",
    }
    for name, message in expected.items():
        result = run_to_end(tmp_path, "--config", name)
        assert result.returncode == 2
        assert (
            result.stderr.strip() == f"vaurien: error: config file {name!r}, {message}"
            or result.stderr.strip() == f"vaurien: error: config file {name!r}: {message}"
        )


def test_port_in_use(tmp_path, backend):
    result = run_to_end(tmp_path, "--distant", backend.distant, "--local", backend.distant)
    assert result.returncode == 2
    assert result.stderr.strip().endswith("Address already in use")
    assert result.stderr.count("\n") <= 1
    assert "Traceback" not in result.stderr


def test_the_console_script_is_installed():
    script = Path(sys.executable).parent / "vaurien"
    if not script.exists():
        pytest.skip("not installed as a package here")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=30)
    assert result.stdout.startswith("vaurien ")


def test_the_plugin_reads_the_same_file(pytester, backend, upper_source):
    (pytester.path / "myhandlers.py").write_text(upper_source)
    pytester.syspathinsert()
    (pytester.path / "chaos.ini").write_text(
        textwrap.dedent(f"""
        [vaurien]
        distant = {backend.distant}
        behavior = foobar

        [handler:foobar]
        callable = myhandlers.Upper
        suffix = file
    """)
    )
    pytester.makeini("[pytest]\nvaurien_config = chaos.ini\n")
    pytester.makepyfile(
        textwrap.dedent("""
        import pytest

        from client import roundtrip

        def test_from_file(vaurien_proxy):
            assert roundtrip(vaurien_proxy.address, b"hi") == b"HIfile"

        @pytest.mark.vaurien(foobar__suffix="marker")
        def test_marker_wins(vaurien_proxy):
            assert roundtrip(vaurien_proxy.address, b"hi") == b"HImarker"
    """)
    )
    pytester.runpytest().assert_outcomes(passed=2)
    pytester.runpytest("--vaurien-handler", "foobar.suffix=cli", "-k", "from_file").assert_outcomes(
        failed=1
    )
    bad = pytester.runpytest("--vaurien-config", "nope.ini")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(
        ["ERROR: --vaurien-config: config file '*nope.ini': cannot read it: *"]
    )
    pytester.makeini("[pytest]\nvaurien_config = missing.ini\n")
    bad = pytester.runpytest()
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["ERROR: vaurien_config (tox.ini): config file '*missing.ini': *"])
