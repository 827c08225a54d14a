"""The ``vaurien`` command (issue 11): bad input, --port-file, SIGHUP, logs, sys.path.

Run for real as a subprocess, on 127.0.0.1 only; every wait is bounded.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_vaurien.cli import UsageError, normalize_arguments, parse_handler_flags
from tests.client import roundtrip

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).parent / "vaurien"
LISTENING = re.compile(r"^listening on 127\.0\.0\.1:(\d+)$")

UPPER = '''
from pytest_vaurien import BaseHandler


class Upper(BaseHandler):
    """Upper-cases replies; appends `suffix` to them."""

    name = "upper"
    options = {"suffix": ("Appended to each reply", str, "")}

    def __call__(self, client_sock, backend_sock, to_backend):
        data = self._get_data(client_sock, backend_sock, to_backend)
        if data:
            if not to_backend:
                data = data.upper() + self.option("suffix").encode()
            (backend_sock if to_backend else client_sock).sendall(data)
        return bool(data)


class Boom(BaseHandler):
    """Fails to start."""

    name = "boom"

    def __init__(self, settings=None, proxy=None):
        raise RuntimeError("kaput")
'''


def _env(cwd: Path, pythonpath: bool = True) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = f"{cwd}{os.pathsep}{ROOT}"
    return env


class Command:
    """A running ``vaurien`` whose stdout and stderr are read line by line."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=env,
        )
        self.out: queue.Queue[str] = queue.Queue()
        self.err: queue.Queue[str] = queue.Queue()
        self.stderr_seen: list[str] = []
        self.readers = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in ((self.process.stdout, self.out), (self.process.stderr, self.err))
        ]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(stream, lines: queue.Queue[str]) -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))

    def _wait(self, lines: queue.Queue[str], pattern: str, seen: list[str]) -> re.Match[str]:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match
        raise AssertionError(f"{pattern!r} not seen; so far: {seen}")

    def wait_stderr(self, pattern: str) -> re.Match[str]:
        return self._wait(self.err, pattern, self.stderr_seen)

    def port(self) -> int:
        """The port the command prints on stdout once it listens."""
        return int(self._wait(self.out, LISTENING.pattern, []).group(1))

    def address(self) -> tuple[str, int]:
        return "127.0.0.1", self.port()

    def send(self, sig: int) -> None:
        self.process.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout=10)

    def rest_of_stderr(self) -> list[str]:
        """Every stderr line not read yet, once the process has ended."""
        self.process.wait(timeout=10)
        for reader in self.readers:  # EOF ends them
            reader.join(timeout=10)
        rest = []
        while not self.err.empty():
            rest.append(self.err.get_nowait())
        return rest


@pytest.fixture
def start(tmp_path: Path) -> Iterator:
    started: list[Command] = []

    def launch(*args: str, script: bool = False, pythonpath: bool = True) -> Command:
        argv = [str(SCRIPT), *args] if script else [sys.executable, "-m", "pytest_vaurien", *args]
        command = Command(argv, tmp_path, _env(tmp_path, pythonpath))
        started.append(command)
        return command

    yield launch
    for command in started:
        if command.process.poll() is None:
            command.process.kill()
            command.process.wait(10)
        for stream in (command.process.stdout, command.process.stderr):
            if stream is not None:
                stream.close()


def run_to_end(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_vaurien", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=_env(cwd),
    )


# -- bad input: one line, exit 2 -------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--handlers.delay.sleep", "-1"],
            "command line: handler 'delay': option 'sleep' = '-1' is not valid; expected a "
            "number >= 0",
        ),
        (
            ["--handlers.delay.sleep=inf"],
            "command line: handler 'delay': option 'sleep' = 'inf' is not valid; expected a "
            "finite number >= 0",
        ),
        (
            ["--handlers.delay.sleep", "1" + "0" * 400],
            "command line: handler 'delay': option 'sleep' = '1000000000000000000000000000000"
            "00000000... (401 characters) is not valid; expected a finite number >= 0",
        ),
        (
            ["--handlers.slicer.average_size", "-3"],
            "command line: handler 'slicer': option 'average_size' = '-3' is not valid; "
            "expected an integer >= 0",
        ),
        (
            ["--behavior", "-5:delay"],
            "--behavior: '-5:delay': '-5:delay' has percentage '-5'; expected a number from 0 "
            "to 100",
        ),
        (["--local", ""], "--local: the address is empty; expected HOST:PORT"),
        (
            ["--local", "127.0.0.1:-1"],
            "--local: '127.0.0.1:-1' has port '-1'; expected a number from 0 to 65535",
        ),
        (
            ["--distant", "127.0.0.1:0"],
            "--distant: '127.0.0.1:0' has port 0; expected a number from 1 to 65535",
        ),
        (
            ["--behavior", "100:myhandlers.Boom"],
            "--behavior: handler 'boom' (myhandlers.Boom) failed to start: RuntimeError('kaput')",
        ),
    ],
)
def test_bad_values_are_one_line_and_exit_2(tmp_path, args, message):
    (tmp_path / "myhandlers.py").write_text(UPPER)
    if "--distant" not in args:
        args = ["--distant", "127.0.0.1:1", *args]
    result = run_to_end(tmp_path, "--local", "127.0.0.1:0", *args)
    assert (result.returncode, result.stderr) == (2, f"vaurien: error: {message}\n")


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path):
    (tmp_path / "latin.ini").write_bytes(b"[vaurien]\ndistant = caf\xe9:1\n")
    result = run_to_end(tmp_path, "--config", "latin.ini")
    assert (result.returncode, result.stderr) == (
        2,
        "vaurien: error: config file 'latin.ini': line 2 is not UTF-8 text (byte 0xe9); "
        "expected a UTF-8 encoded file\n",
    )


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            "[handler:foo]\ncallable = myhandlers.Missing\n",
            "config file 'c.ini', section [handler:foo]: 'myhandlers.Missing': 'myhandlers' "
            "has no attribute 'Missing'",
        ),
        (
            "[handler:foo]\ncallable = myhandlers\n",
            "config file 'c.ini', section [handler:foo]: callable = 'myhandlers' is not a "
            "dotted path; expected e.g. package.module.Handler",
        ),
        (
            "[handler:foo]\ncallable = myhandlers.Boom\n",
            "config file 'c.ini', behavior: handler 'boom' (myhandlers.Boom) failed to start: "
            "RuntimeError('kaput')",
        ),
    ],
)
def test_config_alias_errors_are_one_line_naming_the_file(tmp_path, section, message):
    (tmp_path / "myhandlers.py").write_text(UPPER)
    (tmp_path / "c.ini").write_text(
        "[vaurien]\ndistant = 127.0.0.1:1\nlocal = 127.0.0.1:0\nbehavior = foo\n" + section
    )
    result = run_to_end(tmp_path, "--config", "c.ini")
    assert (result.returncode, result.stderr) == (2, f"vaurien: error: {message}\n")


def test_an_empty_local_in_the_file_is_an_error(tmp_path):
    """An empty ``local`` meant 127.0.0.1:8000 without a word."""
    (tmp_path / "c.ini").write_text("[vaurien]\ndistant = 127.0.0.1:1\nlocal =\n")
    result = run_to_end(tmp_path, "--config", "c.ini")
    assert (result.returncode, result.stderr) == (
        2,
        "vaurien: error: config file 'c.ini', local: the address is empty; expected HOST:PORT\n",
    )


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--behavior", "-5:delay"], ["--behavior=-5:delay"]),
        (["--beh", "-5:delay"], ["--beh=-5:delay"]),
        (["--seed", "-3", "--local", "x:1"], ["--seed=-3", "--local", "x:1"]),
        (["--handlers.delay.sleep", "-1"], ["--handlers.delay.sleep=-1"]),
        (["--distant", "--behavior", "x"], ["--distant", "--behavior", "x"]),
        (["--list-handlers", "-x"], ["--list-handlers", "-x"]),
        (["--l", "-x"], ["--l", "-x"]),  # ambiguous: argparse says so
        (["--", "--behavior", "-1"], ["--", "--behavior", "-1"]),
    ],
)
def test_values_starting_with_a_dash_stay_with_their_option(argv, expected):
    assert normalize_arguments(argv) == expected


@pytest.mark.parametrize(
    "extras",
    [["--handlers.delay." + "s" * 5000], ["--" + "x" * 5000], ["--handlers." + "n" * 5000, "1"]],
)
def test_long_flags_are_cut_in_messages(extras):
    with pytest.raises(UsageError) as raised:
        parse_handler_flags(extras)
    assert "(5" in str(raised.value)
    assert len(str(raised.value)) < 200


# -- running ----------------------------------------------------------------


def test_port_file_and_listening_line(start, backend, tmp_path):
    port_file = tmp_path / "run" / "vaurien.port"
    port_file.parent.mkdir()
    command = start(
        "--local", "127.0.0.1:0", "--distant", backend.distant, "--port-file", str(port_file)
    )
    port = command.port()
    assert port_file.read_text() == f"{port}\n"
    assert os.listdir(port_file.parent) == ["vaurien.port"]  # no temporary file left
    assert roundtrip(("127.0.0.1", port), b"hi") == b"hi"
    assert command.stop() == 0
    assert not port_file.exists()


def test_an_unwritable_port_file_is_one_line(tmp_path, backend):
    result = run_to_end(
        tmp_path,
        "--local",
        "127.0.0.1:0",
        "--distant",
        backend.distant,
        "--port-file",
        "no/such/dir/port",
    )
    assert result.returncode == 2
    assert result.stderr.startswith("vaurien: error: --port-file: cannot write 'no/such/dir/port'")
    assert result.stderr.count("\n") == 1
    assert result.stdout == ""


def test_start_and_stop_are_info_and_plurals_agree(start, backend):
    command = start("--local", "127.0.0.1:0", "--distant", backend.distant)
    command.wait_stderr(r" vaurien INFO proxying 127\.0\.0\.1:\d+ -> ")
    assert roundtrip(command.address(), b"one") == b"one"
    command.wait_stderr(r"INFO #0 ")
    assert command.stop() == 0
    # the connection's record is logged a moment before it stops counting as open
    command.wait_stderr(r" vaurien INFO stopped; 1 connection relayed, (0 were|1 was) open$")


def test_at_warning_level_only_the_listening_line_shows(start, backend):
    command = start(
        "--local", "127.0.0.1:0", "--distant", backend.distant, "--log-level", "warning"
    )
    assert roundtrip(command.address(), b"x") == b"x"
    assert command.stop() == 0
    assert command.rest_of_stderr() == []


def test_a_distant_that_does_not_resolve_warns_and_the_proxy_runs(start):
    command = start("--local", "127.0.0.1:0", "--distant", "no-such-host.invalid:80")
    command.wait_stderr(
        r"WARNING distant no-such-host\.invalid:80: host 'no-such-host\.invalid' does not "
        r"resolve \(.+\); each connection will try again$"
    )
    command.port()
    assert command.stop() == 0


def test_the_console_script_imports_handlers_from_the_current_directory(start, backend, tmp_path):
    """``python -m pytest_vaurien`` could, the ``vaurien`` script could not."""
    if not SCRIPT.exists():
        pytest.skip("not installed as a package here")
    (tmp_path / "myhandlers.py").write_text(UPPER)
    command = start(
        "--local",
        "127.0.0.1:0",
        "--distant",
        backend.distant,
        "--behavior",
        "myhandlers.Upper",
        script=True,
        pythonpath=False,
    )
    assert roundtrip(command.address(), b"hi") == b"HI"
    assert command.stop() == 0


# -- SIGHUP -------------------------------------------------------------------

CONFIG = """
[vaurien]
local = 127.0.0.1:0
distant = {distant}
behavior = {behavior}

[handler:shout]
callable = myhandlers.Upper
{options}
"""


def write_config(path: Path, distant: str, behavior: str, options: str = "") -> None:
    path.write_text(CONFIG.format(distant=distant, behavior=behavior, options=options))


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP here")
def test_sighup_reloads_the_config_file(start, backend, tmp_path):
    (tmp_path / "myhandlers.py").write_text(UPPER)
    config = tmp_path / "c.ini"
    write_config(config, backend.distant, "dummy")
    command = start("--config", "c.ini")
    address = command.address()
    assert roundtrip(address, b"hi") == b"hi"
    with socket.create_connection(address, timeout=5) as pooled:
        pooled.sendall(b"a")
        assert pooled.recv(10) == b"a"

        write_config(config, backend.distant, "shout", "suffix = !")
        command.send(signal.SIGHUP)
        command.wait_stderr(
            r"WARNING reloaded config file 'c\.ini': behavior 'dummy' -> 'shout'; "
            r"shout\.suffix \(default\) -> '!'$"
        )
        assert roundtrip(address, b"hi") == b"HI!"
        pooled.sendall(b"b")  # an open connection: from its next chunk
        assert pooled.recv(10) == b"B!"

    write_config(config, backend.distant, "shout")  # a dropped line: back to the default
    command.send(signal.SIGHUP)
    command.wait_stderr(r"reloaded config file 'c\.ini': shout\.suffix '!' -> \(default\)$")
    assert roundtrip(address, b"hi") == b"HI"

    config.write_text("[vaurien]\nbehavior = 20:dealy\n")
    command.send(signal.SIGHUP)
    command.wait_stderr(
        r"ERROR reload failed, the configuration in force stays: config file 'c\.ini', "
        r"behavior: unknown handler 'dealy'; known: "
    )
    assert roundtrip(address, b"hi") == b"HI"

    write_config(config, backend.distant, "shout", "suffix = ?")
    command.send(signal.SIGHUP)
    command.wait_stderr(r"reloaded config file 'c\.ini': shout\.suffix \(default\) -> '\?'$")
    assert roundtrip(address, b"hi") == b"HI?"
    assert command.stop() == 0


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP here")
def test_sighup_keeps_the_command_line_over_the_file(start, backend, tmp_path):
    (tmp_path / "myhandlers.py").write_text(UPPER)
    config = tmp_path / "c.ini"
    write_config(config, backend.distant, "dummy", "suffix = file")
    command = start("--config", "c.ini", "--behavior", "shout", "--handlers.shout.suffix=cli")
    address = command.address()
    assert roundtrip(address, b"hi") == b"HIcli"
    write_config(config, "127.0.0.1:1", "dummy", "suffix = other")
    command.send(signal.SIGHUP)
    command.wait_stderr(
        r"WARNING config file 'c\.ini': distant changed; it takes effect only when the "
        r"command restarts$"
    )
    command.wait_stderr(r"reloaded config file 'c\.ini': nothing changed$")
    assert roundtrip(address, b"hi") == b"HIcli"
    assert command.stop(signal.SIGINT) == 0


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP here")
def test_sighup_without_a_config_file_is_logged_and_ignored(start, backend):
    """SIGHUP used to kill the command without a word."""
    command = start("--local", "127.0.0.1:0", "--distant", backend.distant)
    address = command.address()
    command.send(signal.SIGHUP)
    command.wait_stderr(r"WARNING SIGHUP: no --config file to reload; ignored$")
    assert command.process.poll() is None
    assert roundtrip(address, b"still") == b"still"
    assert command.stop() == 0


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP here")
def test_sighup_adds_an_alias_the_file_now_defines(start, backend, tmp_path):
    (tmp_path / "myhandlers.py").write_text(UPPER)
    config = tmp_path / "c.ini"
    config.write_text(f"[vaurien]\nlocal = 127.0.0.1:0\ndistant = {backend.distant}\n")
    command = start("--config", "c.ini")
    address = command.address()
    write_config(config, backend.distant, "shout")
    command.send(signal.SIGHUP)
    command.wait_stderr(r"reloaded config file 'c\.ini': behavior '100:dummy' -> 'shout'$")
    assert roundtrip(address, b"hi") == b"HI"

    config.write_text(config.read_text().replace("myhandlers.Upper", "myhandlers.Boom"))
    command.send(signal.SIGHUP)
    command.wait_stderr(
        r"ERROR reload failed, the configuration in force stays: config file 'c\.ini', section "
        r"\[handler:shout\]: callable changed from 'myhandlers\.Upper' to 'myhandlers\.Boom'; "
        r"a handler name keeps its class until the command restarts$"
    )
    assert roundtrip(address, b"hi") == b"HI"
    assert command.stop() == 0


# -- help --------------------------------------------------------------------


def test_help_and_list_show_choices_and_ranges(tmp_path):
    help_text = run_to_end(tmp_path, "--help").stdout
    assert "--handlers.latency.direction {both,downstream,upstream}\n" in help_text
    assert "--handlers.delay.sleep FLOAT >= 0\n" in help_text
    assert "--handlers.delay.before BOOL\n" in help_text
    listing = run_to_end(tmp_path, "--list-handlers").stdout
    assert "    direction ({both,downstream,upstream}, default 'downstream'): Stream" in listing
    assert "    warmup (int >= 0, default 0): Connections" in listing
