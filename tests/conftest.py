from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

from tests.servers import EchoServer, wait_until


@pytest.fixture(scope="session")
def echo_server() -> Iterator[EchoServer]:
    """An echo backend on 127.0.0.1 for the whole run."""
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def backend() -> Iterator[EchoServer]:
    """An echo backend of this test's own, to tell what reached it."""
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def greeter() -> Iterator[EchoServer]:
    """An echo backend that speaks first (b"hello\\n"), as SMTP or MySQL do."""
    server = EchoServer(greeting=b"hello\n")
    yield server
    server.close()


def _proxy_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("vaurien-proxy")]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def _no_leftovers(request: pytest.FixtureRequest, echo_server: EchoServer) -> Iterator[None]:
    """Fail a test that leaves a proxy thread or file descriptors behind."""
    check_fds = "pytester" not in request.fixturenames
    before = _open_fds()
    yield
    wait_until(
        lambda: not _proxy_threads(),
        timeout=3,
        message=f"proxy threads gone (left: {_proxy_threads()})",
    )
    if check_fds:
        wait_until(
            lambda: _open_fds() <= before,
            timeout=3,
            message=f"file descriptors back to {before} (now {_open_fds()})",
        )
