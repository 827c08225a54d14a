"""The fast path's bulk mode over real sockets: past ``SPLICE_AFTER`` bytes
read in full buffers a direction splices through a pipe (Linux), and must
still carry every byte in order, count them exactly, pass half-closes and resets on, hand over to a
handler on a live change with nothing lost, and leave no descriptor behind."""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading

import pytest

from pytest_vaurien import BaseHandler, Proxy
from pytest_vaurien.engine import fastpath
from pytest_vaurien.records import Ending
from tests.client import read_exactly, read_until_eof, settled, wait_until
from tests.servers import EchoServer, ScriptedServer

pytestmark = pytest.mark.skipif(fastpath.SPLICE_AFTER is None, reason="no os.splice here")

MB = 1 << 20
#: Where splicing starts, give or take a chunk.
AFTER = fastpath.SPLICE_AFTER or 0
_LINGER_RESET = struct.pack("ii", 1, 0)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def spliced(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the bytes ``os.splice`` moved (both legs), to show the bulk
    mode really ran."""
    moved: list[int] = []
    real = os.splice

    def counting(*args: object, **kwargs: object) -> int:
        size: int = real(*args, **kwargs)  # type: ignore[arg-type]
        moved.append(size)
        return size

    monkeypatch.setattr(os, "splice", counting)
    return moved


class Counting(BaseHandler):
    """Relays unchanged, counting what it relayed each way."""

    name = "counting"

    def __init__(self, settings=None, proxy=None):
        super().__init__(settings, proxy)
        self.seen = {True: 0, False: 0}

    def __call__(self, client_sock, backend_sock, to_backend):
        data = self._get_data(client_sock, backend_sock, to_backend)
        self.seen[to_backend] += len(data)
        if data:
            (backend_sock if to_backend else client_sock).sendall(data)
        return bool(data)


def _send_all_then_half_close(sock: socket.socket, payload: bytes) -> threading.Thread:
    def send() -> None:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_a_bulk_echo_splices_both_ways_byte_exact(echo_server, spliced):
    payload = os.urandom(8 * MB)
    fds = _fds()
    with Proxy(echo_server.address) as proxy:
        with socket.create_connection(proxy.address, timeout=10) as sock:
            sender = _send_all_then_half_close(sock, payload)
            echoed = read_until_eof(sock)
            sender.join(10)
        [record] = settled(proxy)
        index = echo_server.accepted - 1
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
    assert bytes(echo_server.received[index]) == payload
    assert (record.bytes_to_backend, record.bytes_to_client) == (len(payload), len(payload))
    assert record.ending is Ending.CLIENT_CLOSED
    # both legs of both directions, past the first SPLICE_AFTER bytes each way
    assert sum(spliced) >= 2 * 2 * (len(payload) - 2 * AFTER)
    wait_until(lambda: _fds() <= fds, message="no pipe or socket left open")


def test_request_reply_traffic_never_splices_however_much_it_moves(echo_server, spliced):
    """Small messages come back in short reads: for them a splice in and a
    splice out cost more than a recv and a send, so the direction stays on
    recv/send past SPLICE_AFTER bytes."""
    message = os.urandom(1024)
    rounds = 2 * AFTER // len(message)
    with Proxy(echo_server.address) as proxy:
        with socket.create_connection(proxy.address, timeout=10) as sock:
            for _ in range(rounds):
                sock.sendall(message)
                assert read_exactly(sock, len(message)) == message
        [record] = settled(proxy)
    assert record.bytes_to_backend == record.bytes_to_client == rounds * len(message) > AFTER
    assert spliced == []


def _send_buffers_of_sockets_to(peer: tuple[str, int]) -> list[int]:
    """SO_SNDBUF of every socket of this process connected to ``peer`` (the
    in-process proxy's side of a connection)."""
    sizes = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=int(name))
        except OSError:  # gone meanwhile
            continue
        try:
            try:
                if sock.getpeername()[:2] == peer:
                    sizes.append(sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
            except OSError:
                pass
        finally:
            sock.detach()  # it is someone else's descriptor
    return sizes


def test_a_splicing_direction_caps_its_loopback_destination_send_buffer(echo_server):
    """Autotuned, a loopback destination's send buffer grows to megabytes of
    spliced pages in flight; capped, bulk runs at about twice the rate."""
    payload = os.urandom(4 * MB)
    capped = 2 * fastpath.LOOPBACK_SEND_BUFFER  # Linux doubles what it is asked
    with (
        Proxy(echo_server.address) as proxy,
        socket.create_connection(proxy.address, timeout=10) as sock,
    ):
        sock.sendall(b"x")
        assert read_exactly(sock, 1) == b"x"
        assert capped not in _send_buffers_of_sockets_to(echo_server.address)
        sender = threading.Thread(target=sock.sendall, args=(payload,), daemon=True)
        sender.start()
        assert read_exactly(sock, len(payload)) == payload
        sender.join(10)
        # the proxy's socket to the backend, and its socket to this client
        assert _send_buffers_of_sockets_to(echo_server.address) == [capped]
        assert _send_buffers_of_sockets_to(sock.getsockname()[:2]) == [capped]


class _Peer:
    def __init__(self, address: object) -> None:
        self._address = address

    def getpeername(self) -> object:
        if isinstance(self._address, OSError):
            raise self._address
        return self._address


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        (("127.0.0.1", 80), True),
        (("127.3.2.1", 80), True),
        (("::1", 80, 0, 0), True),
        (("::ffff:127.0.0.1", 80, 0, 0), True),
        (OSError(107, "Transport endpoint is not connected"), False),
        (("not an address", 80), False),
    ],
)
def test_what_counts_as_a_loopback_destination(peer, expected):
    assert fastpath._on_loopback(_Peer(peer)) is expected  # type: ignore[arg-type]


def _sink_then_answer(conn: socket.socket) -> None:
    """Reads to EOF, then sends back 6 MB derived from what it got and closes."""
    digest = hashlib.sha256()
    while data := conn.recv(MB):
        digest.update(data)
    seed = digest.digest()
    conn.sendall(seed * (6 * MB // len(seed)))


def test_a_half_close_after_a_spliced_upload_is_carried_and_the_reply_spliced(spliced):
    payload = os.urandom(5 * MB)
    seed = hashlib.sha256(payload).digest()
    with ScriptedServer(_sink_then_answer) as server, Proxy(server.address) as proxy:
        with socket.create_connection(proxy.address, timeout=10) as sock:
            sender = _send_all_then_half_close(sock, payload)
            reply = read_until_eof(sock)
            sender.join(10)
        [record] = settled(proxy)
    assert reply == seed * (6 * MB // len(seed))
    assert (record.bytes_to_backend, record.bytes_to_client) == (len(payload), len(reply))
    assert record.ending is Ending.CLIENT_CLOSED
    assert sum(spliced) >= 2 * (len(payload) + len(reply) - 4 * AFTER)


def _send_then_reset(conn: socket.socket) -> None:
    """Sends 3 MB, waits until the client asks for the rest, then resets."""
    conn.sendall(os.urandom(3 * MB))
    conn.recv(1)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)


def _read_to_the_end(sock: socket.socket) -> None:
    while sock.recv(MB):
        pass


def test_a_backend_reset_in_the_middle_of_a_spliced_download_resets_the_client(spliced):
    with ScriptedServer(_send_then_reset) as server, Proxy(server.address) as proxy:
        with socket.create_connection(proxy.address, timeout=10) as sock:
            assert len(read_exactly(sock, 3 * MB)) == 3 * MB
            sock.sendall(b"?")
            # a clean EOF here would pass the backend's crash on as an end
            with pytest.raises(ConnectionResetError):
                _read_to_the_end(sock)
        [record] = settled(proxy)
    assert record.ending is Ending.RESET
    assert "backend side" in (record.error or "")
    assert record.bytes_to_client == 3 * MB
    assert sum(spliced) >= 2 * (3 * MB - 2 * AFTER)


def test_a_live_change_in_the_middle_of_a_spliced_echo_hands_the_rest_to_the_handler(
    spliced,
):
    """Both directions splice, idle, when the behavior changes: the next chunk
    is read into the pipe, drained, and handed to the new handler."""
    first, second = os.urandom(4 * MB), os.urandom(4 * MB)
    name = f"{__name__}.Counting"
    with EchoServer() as server, Proxy(server.address) as proxy:
        with socket.create_connection(proxy.address, timeout=10) as sock:
            sender = _send_all_then_half_close_later(sock, first)
            assert read_exactly(sock, len(first)) == first
            assert spliced, "the first part went through the pipes"
            proxy.set_behavior(name)
            sender.send_rest(second)
            assert read_until_eof(sock) == second
        [record] = settled(proxy)
        counted = proxy.handlers[name].seen
    assert bytes(server.received[0]) == first + second
    assert record.handlers == ["dummy", name]
    assert counted == {True: len(second), False: len(second)}
    assert (record.bytes_to_backend, record.bytes_to_client) == (8 * MB, 8 * MB)


def test_a_live_change_while_the_client_is_full_loses_nothing(spliced):
    """The client reads nothing for a while: the spliced reply waits in its
    pipe for room when the behavior changes. What the pipe holds still goes
    out first, then the new handler's bytes, all in order."""
    first, second = os.urandom(6 * MB), os.urandom(2 * MB)
    name = f"{__name__}.Counting"
    with EchoServer() as server, Proxy(server.address) as proxy:
        with socket.create_connection(proxy.address, timeout=10) as sock:
            sender = _send_all_then_half_close_later(sock, first)
            wait_until(
                lambda: proxy.connections and proxy.connections[0].bytes_to_backend > MB,
                timeout=10,
            )
            proxy.set_behavior(name)
            sender.send_rest(second)
            echoed = read_until_eof(sock)
        [record] = settled(proxy)
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(first + second).digest()
    assert bytes(server.received[0]) == first + second
    assert record.handlers == ["dummy", name]
    assert (record.bytes_to_backend, record.bytes_to_client) == (8 * MB, 8 * MB)


class _Sender:
    """Sends a first part on a thread of its own, then on ``send_rest`` the
    rest and a half-close."""

    def __init__(self, sock: socket.socket, first: bytes) -> None:
        self._sock = sock
        self._rest: list[bytes] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(first,), daemon=True)
        self._thread.start()

    def _run(self, first: bytes) -> None:
        self._sock.sendall(first)
        if not self._ready.wait(10):
            return
        self._sock.sendall(self._rest[0])
        self._sock.shutdown(socket.SHUT_WR)

    def send_rest(self, rest: bytes) -> None:
        self._rest.append(rest)
        self._ready.set()


def _send_all_then_half_close_later(sock: socket.socket, first: bytes) -> _Sender:
    return _Sender(sock, first)


def test_no_pipe_is_left_after_many_spliced_connections_and_a_stop(echo_server, spliced):
    payload = os.urandom(MB)
    fds = _fds()
    with Proxy(echo_server.address) as proxy:
        socks = [socket.create_connection(proxy.address, timeout=10) for _ in range(8)]
        try:
            for sock in socks:  # each connection splices, and stays open
                sock.sendall(payload)
                assert read_exactly(sock, len(payload)) == payload
        finally:
            proxy.stop()  # with every connection open and its pipes made
            for sock in socks:
                sock.close()
    assert sum(spliced) > 0
    wait_until(lambda: _fds() <= fds, message="no pipe or socket left open")


def test_without_a_pipe_the_direction_stays_on_recv_and_send(echo_server, monkeypatch):
    """Out of descriptors for a pipe: the bulk goes on the ordinary way."""

    def no_pipe(flags: int) -> tuple[int, int]:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(os, "pipe2", no_pipe)
    payload = os.urandom(2 * MB)
    with Proxy(echo_server.address) as proxy:
        with socket.create_connection(proxy.address, timeout=10) as sock:
            sender = _send_all_then_half_close(sock, payload)
            assert read_until_eof(sock) == payload
            sender.join(10)
        [record] = settled(proxy)
    assert (record.bytes_to_backend, record.bytes_to_client) == (len(payload), len(payload))
    assert record.ending is Ending.CLIENT_CLOSED
