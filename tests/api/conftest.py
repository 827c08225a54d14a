"""A real ``vaurien --control`` process for the tests of the control API.

``control_server`` (module scope) is one ``vaurien --control 127.0.0.1:0``
subprocess; its ``url`` is the API's. ``client`` is a :class:`Client` of it
that deletes every proxy a test left behind. ``start_control_server()``
starts another one (a token, a config file) for as long as a ``with`` lasts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_vaurien.client import Client, ControlClientError
from tests.client import wait_until

#: How long a ``vaurien`` process may take to listen (a loaded CI machine).
START_TIMEOUT = 30.0


@dataclass
class ControlProcess:
    """A running ``vaurien --control`` subprocess."""

    process: subprocess.Popen[bytes]
    port: int
    directory: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        """What the process wrote so far, stdout then stderr."""
        return "".join(
            (self.directory / name).read_text(errors="replace") for name in ("stdout", "stderr")
        )

    def client(self, token: str | None = None) -> Client:
        return Client(self.url, token=token)


def _port(path: Path, process: subprocess.Popen[bytes], directory: Path) -> int | None:
    if process.poll() is not None:
        output = (directory / "stderr").read_text(errors="replace")
        raise AssertionError(f"vaurien exited with {process.returncode} before listening: {output}")
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return int(text) if text.strip() else None


@contextmanager
def start_control_server(
    directory: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    control: str = "127.0.0.1:0",
) -> Iterator[ControlProcess]:
    """``vaurien --control CONTROL --control-port-file ... ARGS`` until the
    ``with`` ends (SIGTERM, then a kill if it lingers). ``env`` is laid over
    the environment (``VAURIEN_CONTROL_TOKEN``, say)."""
    directory.mkdir(parents=True, exist_ok=True)
    port_file = directory / "port"
    command: Sequence[str] = [
        sys.executable,
        "-m",
        "pytest_vaurien",
        "--control",
        control,
        "--control-port-file",
        str(port_file),
        *args,
    ]
    environment = {**os.environ, **(env or {})}
    with (directory / "stdout").open("wb") as out, (directory / "stderr").open("wb") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env=environment)
    try:
        port = wait_until(
            lambda: _port(port_file, process, directory),
            timeout=START_TIMEOUT,
            interval=0.02,
            message=f"vaurien writing {port_file}",
        )
        yield ControlProcess(process, port, directory)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)


@pytest.fixture(scope="module")
def control_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlProcess]:
    """One ``vaurien --control 127.0.0.1:0`` process for the module's tests."""
    with start_control_server(tmp_path_factory.mktemp("control")) as server:
        yield server


@pytest.fixture
def client(control_server: ControlProcess) -> Iterator[Client]:
    """A client of ``control_server``; the proxies a test leaves are deleted after it."""
    client = control_server.client()
    yield client
    for proxy in client.proxies():
        try:
            client.delete(proxy.name)
        except ControlClientError as error:
            if error.status != 404:
                raise
