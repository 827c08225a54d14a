from __future__ import annotations

import os
import textwrap
import threading
from collections.abc import Callable, Iterator

import pytest

from tests import backends, client
from tests.client import wait_until
from tests.servers import EchoServer

#: A user's handler, as inner runs and the ``vaurien`` command load it from a
#: module of their own: upper-cases replies and appends ``suffix`` to them.
UPPER_SOURCE = '''
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
'''


@pytest.fixture
def upper_source() -> str:
    """The source of the ``upper`` handler, for a conftest or a module to hold."""
    return UPPER_SOURCE


@pytest.fixture
def pytester(pytester: pytest.Pytester) -> pytest.Pytester:
    """pytest's ``pytester``, with tests/client.py written beside the inner test
    files as ``client``: inner tests use the same client as the outer ones."""
    pytester.makepyfile(client=client.source())
    return pytester


#: What every inner test file of ``run_inner`` starts with.
INNER_IMPORTS = """\
import socket
import time

import pytest

from client import read_exactly, read_until_eof, roundtrip, settled, timed_roundtrip
"""


@pytest.fixture
def run_inner(pytester: pytest.Pytester) -> Callable[..., pytest.RunResult]:
    """``run_inner(body, *args, passed=1)``: write ``body`` as a test file after
    the usual imports, run it in-process, expect ``passed`` tests to pass."""

    def run(body: str, *args: str, passed: int = 1) -> pytest.RunResult:
        pytester.makepyfile(INNER_IMPORTS + textwrap.dedent(body))
        result = pytester.runpytest(*args)
        result.assert_outcomes(passed=passed)
        return result

    return run


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


def _open_fds() -> dict[int, str]:
    """Each open file descriptor and what it points to (a file, a socket, a pipe)."""
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the descriptor listdir itself used, closed by now
            pass
    return fds


def _new_fds(before: dict[int, str]) -> dict[int, str]:
    """Descriptors open now that were not before (or now point elsewhere)."""
    return {fd: target for fd, target in _open_fds().items() if before.get(fd) != target}


@pytest.fixture(scope="session", autouse=True)
def _shared_hub() -> None:
    """Start the process's shared hub before any test counts descriptors: its
    loop's two (epoll, eventfd) live as long as the process, by design."""
    from pytest_vaurien.engine.hub import shared_hub

    shared_hub()


@pytest.fixture(autouse=True)
def _no_leftovers(echo_server: EchoServer) -> Iterator[None]:
    """Fail a test that leaves a proxy thread or file descriptors behind.

    pytester tests too: an in-process inner run closes what it opens (its
    captures, its junit file, its proxies) by the time ``pytester`` is torn
    down, which happens before this check (autouse fixtures are set up
    first, so torn down last).
    """
    before = _open_fds()
    yield
    wait_until(
        lambda: not _proxy_threads(),
        timeout=3,
        message=f"proxy threads gone (left: {_proxy_threads()})",
    )
    try:
        wait_until(lambda: not _new_fds(before), timeout=3, message="no new file descriptor")
    except AssertionError:
        raise AssertionError(f"file descriptors left open: {_new_fds(before)}") from None


# -- real servers for the protocol tests (tests/backends.py), one each per worker --


@pytest.fixture(scope="session")
def redis_server() -> Iterator[backends.Server]:
    with backends.redis() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[backends.Server]:
    with backends.postgresql() as server:
        yield server


@pytest.fixture(scope="session")
def memcached_server() -> Iterator[backends.Server]:
    with backends.memcached() as server:
        yield server


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[backends.Server]:
    with backends.mariadb() as server:
        yield server


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[backends.Server]:
    with backends.smtp() as server:
        yield server
