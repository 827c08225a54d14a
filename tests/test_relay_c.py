"""The C relay (``engine/_relay.c``) against its contract, one call at a time,
over real sockets on 127.0.0.1: a chunk read short and sent whole stays in C
and is counted; everything else reaches ``settle`` with what ``fastpath``
names it, as ``Stream._on_readable`` hands it to ``Stream._settle``. The
proxy-level behaviour of both loops is in test_relay_fastpath.py and
test_relay_callbacks.py (the ``per_chunk_loop`` fixture)."""

from __future__ import annotations

import errno
import os
import re
import select
import shutil
import socket
import struct
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_vaurien.engine import fastpath
from tests.client import read_exactly, wait_until

_LINGER_RESET = struct.pack("ii", 1, 0)


def test_the_c_relay_is_built_wherever_a_c_compiler_is() -> None:
    """CI has a compiler: there, a relay quietly left in Python is a failure."""
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not (shutil.which("cc") and headers.exists()):
        pytest.skip("no C compiler or no Python headers here")
    try:
        from pytest_vaurien.engine import _relay
    except ImportError:
        pytest.fail("the C relay is not built: pip install -e . (or .) with a C compiler")
    if os.environ.get("VAURIEN_NO_EXTENSIONS", "") in ("", "0"):
        assert fastpath.C_RELAY is _relay.relay


relay_module = pytest.importorskip("pytest_vaurien.engine._relay")
relay = relay_module.relay


class Host:
    """What the relay reads ``plan`` from."""

    def __init__(self, plan: object) -> None:
        self.plan = plan


class Record:
    bytes_to_backend = 0
    bytes_to_client = 0


class Settle:
    """A ``settle`` that remembers its calls and answers ``answers`` in turn (then True)."""

    def __init__(self, *answers: bool) -> None:
        self.calls: list[tuple[int, Any, int]] = []
        self.answers = list(answers)

    def __call__(self, what: int, data: Any, sent: int) -> bool:
        self.calls.append((what, data, sent))
        return self.answers.pop(0) if self.answers else True


@pytest.fixture
def pairs() -> Iterator[tuple[socket.socket, socket.socket, socket.socket, socket.socket]]:
    """``(client, source, dest, backend)``: the relay reads ``source`` (what
    ``client`` wrote) and sends to ``dest`` (what ``backend`` reads);
    ``source`` and ``dest`` non-blocking, as the proxy's are."""
    made: list[socket.socket] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        for _ in range(2):
            outer = socket.create_connection(listener.getsockname())
            inner, _ = listener.accept()
            inner.setblocking(False)
            made += [outer, inner]
    client, source, backend, dest = made
    try:
        yield client, source, dest, backend
    finally:
        for sock in made:
            sock.close()


def _call(
    source: socket.socket,
    dest: socket.socket,
    settle: Settle,
    *,
    size: int = 65536,
    host: Host | None = None,
    plan: object = "plan",
    record: Record | None = None,
) -> None:
    assert (
        relay(
            source.fileno(),
            dest.fileno(),
            size,
            host if host is not None else Host("plan"),
            plan,
            record if record is not None else Record(),
            "bytes_to_backend",
            settle,
        )
        is None
    )


def _readable(sock: socket.socket) -> None:
    wait_until(lambda: _pending(sock) > 0, message="bytes to read")


def _pending(sock: socket.socket) -> int:
    try:
        return len(sock.recv(65536, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return 0


def test_a_chunk_read_short_and_sent_whole_is_counted_and_settles_nothing(pairs) -> None:
    client, source, dest, backend = pairs
    record, settle = Record(), Settle()
    client.sendall(b"hello")
    _readable(source)
    _call(source, dest, settle, record=record)
    assert read_exactly(backend, 5) == b"hello"
    assert (record.bytes_to_backend, record.bytes_to_client, settle.calls) == (5, 0, [])


def test_nothing_to_read_returns_at_once(pairs) -> None:
    _client, source, dest, _backend = pairs
    settle = Settle()
    _call(source, dest, settle)
    assert settle.calls == []


def test_an_eof_is_settled_as_eof(pairs) -> None:
    client, source, dest, _backend = pairs
    client.shutdown(socket.SHUT_WR)
    wait_until(lambda: _eof(source), message="EOF on the source")
    settle = Settle()
    _call(source, dest, settle)
    assert settle.calls == [(fastpath.EOF, None, 0)]


def _eof(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False


def test_a_chunk_read_under_a_plan_no_longer_in_force_is_handed_back_unsent(pairs) -> None:
    client, source, dest, backend = pairs
    record, settle = Record(), Settle()
    client.sendall(b"for the new chain")
    _readable(source)
    _call(source, dest, settle, host=Host("new plan"), plan="old plan", record=record)
    assert settle.calls == [(fastpath.PLAN_CHANGED, b"for the new chain", 0)]
    assert record.bytes_to_backend == 0
    backend.setblocking(False)
    with pytest.raises(BlockingIOError):
        backend.recv(100)


def test_full_reads_are_settled_each_and_the_answer_says_whether_to_go_on(pairs) -> None:
    client, source, dest, backend = pairs
    record = Record()
    client.sendall(b"abcdefghij")
    wait_until(lambda: _pending(source) == 10, message="all ten bytes readable")
    go_on_then_stop = Settle(False, True)
    _call(source, dest, go_on_then_stop, size=4, record=record)
    assert go_on_then_stop.calls == [(fastpath.FULL, None, 4), (fastpath.FULL, None, 4)]
    assert read_exactly(backend, 8) == b"abcdefgh"
    assert record.bytes_to_backend == 8
    # the next call reads the last two, short: nothing to settle
    rest = Settle()
    _call(source, dest, rest, size=4, record=record)
    assert (rest.calls, read_exactly(backend, 2), record.bytes_to_backend) == ([], b"ij", 10)


def test_a_destination_that_takes_part_gets_the_rest_settled_as_partial(pairs) -> None:
    client, source, dest, backend = pairs
    dest.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    backend.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    filler = b"f" * 4096
    while True:  # fill the destination until it takes nothing more
        try:
            dest.send(filler)
        except BlockingIOError:
            break
    record, settle = Record(), Settle()
    client.sendall(b"x" * 1000)
    _readable(source)
    _call(source, dest, settle, record=record)
    [(what, rest, sent)] = settle.calls
    assert what == fastpath.PARTIAL
    assert sent + len(rest) == 1000
    assert rest == b"x" * len(rest)
    assert record.bytes_to_backend == sent


def test_a_reset_source_is_settled_with_its_error(pairs) -> None:
    client, source, dest, _backend = pairs
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    client.close()
    settle = Settle()
    wait_until(lambda: _reset(source), message="the reset to arrive")
    _call(source, dest, settle)
    [(what, error, sent)] = settle.calls
    assert (what, type(error), error.errno, sent) == (
        fastpath.RECV_FAILED,
        ConnectionResetError,
        errno.ECONNRESET,
        0,
    )


def _reset(sock: socket.socket) -> bool:
    """Whether the peer's reset has arrived, without taking the error (a
    ``recv`` or ``SO_ERROR`` would: the relay must be the one to meet it)."""
    poller = select.poll()
    poller.register(sock, select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


def test_a_destination_that_is_gone_is_settled_with_the_send_error(pairs) -> None:
    client, source, dest, backend = pairs
    backend.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    backend.close()
    wait_until(lambda: _reset(dest), message="the reset to arrive")
    client.sendall(b"too late")
    _readable(source)
    settle = Settle()
    _call(source, dest, settle)
    [(what, error, sent)] = settle.calls
    assert what == fastpath.SEND_FAILED
    assert isinstance(error, OSError)
    assert error.errno in (errno.ECONNRESET, errno.EPIPE)
    assert sent == 0


def test_a_record_that_cannot_count_is_settled_as_failed(pairs) -> None:
    client, source, dest, backend = pairs

    class Refusing:
        @property
        def bytes_to_backend(self) -> int:
            raise RuntimeError("no counting here")

    client.sendall(b"data")
    _readable(source)
    settle = Settle()
    _call(source, dest, settle, record=Refusing())  # type: ignore[arg-type]
    [(what, error, _sent)] = settle.calls
    assert what == fastpath.FAILED
    assert isinstance(error, RuntimeError)
    assert str(error) == "no counting here"
    assert read_exactly(backend, 4) == b"data"  # sent before the count failed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((1, 2, 3), "relay(source_fd, dest_fd, size, host, plan, record, counter, settle)"),
        ((1, 2, 0, None, None, None, "c", print), "size must be positive"),
    ],
)
def test_a_wrong_call_raises_a_clear_error(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=re.escape(message)):
        relay(*args)
