"""Real servers for the protocol tests, started by the suite on free loopback ports.

redis-server, PostgreSQL, memcached and MariaDB run from their Debian
packages (``.ci/run`` installs them), each in a temporary directory of its
own, listening on 127.0.0.1 only; an SMTP server runs in-process
(aiosmtpd). A test that needs a server that is not installed is skipped,
naming the package to install.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pytest_vaurien.client import Client
from tests.client import wait_until

__all__ = ["Server", "mariadb", "memcached", "postgresql", "redis", "smtp", "start_control_server"]


@dataclass
class Server:
    """A running server: where it listens, and what tests need to log in."""

    host: str
    port: int
    process: subprocess.Popen[bytes] | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def distant(self) -> str:
        return f"{self.host}:{self.port}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def _need(binary: str, package: str) -> str:
    path = shutil.which(binary) or next(
        (
            p
            for p in (f"/usr/sbin/{binary}", f"/usr/lib/postgresql/15/bin/{binary}")
            if os.path.exists(p)
        ),
        None,
    )
    if path is None:
        pytest.skip(f"{binary} is not installed (apt-get install {package})")
    return path


def _start(command: list[str], port: int, what: str, **popen: object) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        **popen,  # type: ignore[call-overload]
    )
    try:
        wait_until(
            lambda: _listening(port) or process.poll() is not None,
            timeout=60,
            message=f"{what} listening on 127.0.0.1:{port}",
        )
    except AssertionError:
        process.kill()
        raise
    if process.poll() is not None:
        error = process.stderr.read().decode(errors="replace") if process.stderr else ""
        raise RuntimeError(f"{what} did not start: {error[-2000:]}")
    return process


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
    if process.stderr is not None:
        process.stderr.close()


@contextlib.contextmanager
def redis() -> Iterator[Server]:
    binary = _need("redis-server", "redis-server")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="vaurien-redis-") as work:
        command = [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            work,
            "--protected-mode",
            "no",
        ]
        process = _start(command, port, "redis-server")
        try:
            yield Server("127.0.0.1", port, process)
        finally:
            _stop(process)


@contextlib.contextmanager
def memcached() -> Iterator[Server]:
    binary = _need("memcached", "memcached")
    port = free_port()
    command = [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-u", "root", "-m", "64"]
    process = _start(command, port, "memcached")
    try:
        yield Server("127.0.0.1", port, process)
    finally:
        _stop(process)


def _as_postgres() -> dict[str, object]:
    """PostgreSQL refuses to run as root: run it as the ``postgres`` user when we are root."""
    if os.geteuid() != 0:
        return {}
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and no 'postgres' user to run PostgreSQL as")
    return {"user": "postgres"}


@contextlib.contextmanager
def postgresql() -> Iterator[Server]:
    initdb = _need("initdb", "postgresql")
    postgres = _need("postgres", "postgresql")
    port = free_port()
    as_user = _as_postgres()
    work = tempfile.mkdtemp(prefix="vaurien-pg-")
    try:
        if as_user:
            shutil.chown(work, "postgres", "postgres")
        data = Path(work, "data")
        subprocess.run(
            [initdb, "-D", str(data), "-U", "vaurien", "--auth=trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
            **as_user,  # type: ignore[arg-type]
        )
        command = [
            postgres,
            "-D",
            str(data),
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
            "-k",
            work,
            "-c",
            "fsync=off",
            "-c",
            "max_connections=200",
        ]
        process = _start(command, port, "postgres", **as_user)
        ready = shutil.which("pg_isready") or "/usr/lib/postgresql/15/bin/pg_isready"
        # the port opens before the server takes sessions ("starting up")
        wait_until(
            lambda: (
                subprocess.run(
                    [ready, "-h", "127.0.0.1", "-p", str(port), "-U", "vaurien", "-d", "postgres"],
                    capture_output=True,
                ).returncode
                == 0
            ),
            timeout=60,
            message="PostgreSQL accepting sessions",
        )
        try:
            yield Server("127.0.0.1", port, process, {"user": "vaurien", "dbname": "postgres"})
        finally:
            _stop(process)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def mariadb() -> Iterator[Server]:
    install = _need("mariadb-install-db", "mariadb-server")
    server = _need("mariadbd", "mariadb-server")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="vaurien-mariadb-") as work:
        data = Path(work, "data")
        subprocess.run(
            [
                install,
                f"--datadir={data}",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            check=True,
            capture_output=True,
        )
        command = [
            server,
            "--no-defaults",
            f"--datadir={data}",
            f"--port={port}",
            "--bind-address=127.0.0.1",
            f"--socket={work}/mysqld.sock",
            "--user=root",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=16M",
            f"--pid-file={work}/pid",
        ]
        process = _start(command, port, "mariadbd")
        try:
            yield Server("127.0.0.1", port, process, {"user": "root", "password": ""})
        finally:
            _stop(process)


@contextlib.contextmanager
def smtp() -> Iterator[Server]:
    """aiosmtpd in a thread of this process, keeping every message it accepts."""
    try:
        from aiosmtpd.controller import Controller
        from aiosmtpd.handlers import Message
    except ImportError:
        pytest.skip("aiosmtpd is not installed (pip install aiosmtpd)")

    class Keep(Message):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.messages: list[object] = []

        def handle_message(self, message: object) -> None:
            self.messages.append(message)

    handler = Keep()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        server = Server("127.0.0.1", port)
        server.extra["handler"] = handler  # type: ignore[assignment]
        yield server
    finally:
        controller.stop()
        time.sleep(0)  # the controller joined its thread


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
