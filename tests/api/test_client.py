"""pytest_vaurien.client against a real ``vaurien --control`` process, through real sockets."""

from __future__ import annotations

import http.server
import json
import os
import pickle
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from pytest_vaurien import Rule, __version__
from pytest_vaurien.client import (
    USER_AGENT,
    Client,
    ControlClientError,
    RemoteProxy,
    WaitTimeout,
    connection_from_json,
)
from pytest_vaurien.errors import ConfigError, VaurienError
from pytest_vaurien.records import Ending, Stats, format_records
from tests.api.conftest import ControlProcess, start_control_server
from tests.client import read_exactly, roundtrip, wait_until
from tests.servers import EchoServer, refused_address


def _echo(proxy: RemoteProxy, payload: bytes = b"ping") -> bytes:
    """A roundtrip through ``proxy``; an aborted or reset connection gives b""."""
    try:
        return roundtrip(proxy.address, payload)
    except ConnectionResetError:
        return b""


def _settled(proxy: RemoteProxy) -> list:
    wait_until(
        lambda: not any(record.open for record in proxy.connections),
        timeout=10,
        message="every connection recorded as ended",
    )
    return proxy.connections


@pytest.fixture
def db(client: Client, echo_server: EchoServer) -> RemoteProxy:
    return client.create("db", upstream=echo_server.distant)


def test_info_says_the_version_protocols_and_handlers(client: Client) -> None:
    info = client.info()
    assert info["version"] == __version__
    assert "tcp" in info["protocols"]
    assert "http" in info["protocols"]
    assert {"abort", "delay", "dummy"} <= set(info["handlers"])


def test_a_created_proxy_relays_and_says_what_it_is(
    client: Client, echo_server: EchoServer
) -> None:
    proxy = client.create("db", upstream=echo_server.address, behavior="100:dummy")
    assert proxy.name == "db"
    assert proxy.address[0] == "127.0.0.1"
    assert proxy.address[1] > 0
    assert _echo(proxy, b"hello") == b"hello"
    assert proxy.distant == echo_server.distant
    assert (proxy.protocol, proxy.behavior, proxy.enabled) == ("tcp", "100:dummy", True)
    assert proxy.accepted == 1
    wait_until(lambda: proxy.open_connections == 0, message="the connection closed")
    assert [p.name for p in client.proxies()] == ["db"]
    assert client.proxy("db").address == proxy.address


def test_a_rule_first_2_aborts_exactly_two_connections(db: RemoteProxy) -> None:
    with db.add_rule("abort; schedule=first:2; name=flaky") as rule:
        assert (rule.name, rule.fault, rule.schedule) == ("flaky", "abort", "first:2")
        replies = [_echo(db, b"ping") for _ in range(5)]
        assert db.wait("flaky", 2, timeout=5) == {"rule": "flaky", "matched": 5, "fired": 2}
        assert replies == [b"", b"", b"ping", b"ping", b"ping"]
        assert (rule.matched, rule.fired) == (5, 2)
        assert [r.name for r in db.rules] == ["flaky"]
        assert db.rule("flaky").fired == 2
    assert db.rules == []  # the with removed it
    records = _settled(db)
    assert [r.handler for r in records] == ["abort", "abort", "dummy", "dummy", "dummy"]


def test_rules_as_objects_and_dicts_keep_their_options(db: RemoteProxy) -> None:
    first = db.add_rule(Rule("delay", sleep=0.001, schedule="first:1", name="slow"))
    second = db.add_rule({"fault": "abort", "percent": 50})
    assert first.options == {"sleep": 0.001}
    assert first.schedule == "first:1"
    assert (second.name, second.percent) == ("abort#2", 50.0)
    assert str(first.to_rule()) == "delay; sleep=0.001; schedule=first:1; name=slow"
    replaced = db.set_rules(["dummy; name=a", Rule("dummy", name="b")])
    assert [r.name for r in replaced] == ["a", "b"]
    db.remove_rule(replaced[0])
    db.remove_rule("b")
    assert db.rules == []
    with pytest.raises(ControlClientError) as caught:
        db.rule("a")
    assert caught.value.status == 404
    assert "known: none" in str(caught.value)


def test_set_behavior_as_a_context_manager_restores_behavior_and_options(
    client: Client, echo_server: EchoServer
) -> None:
    proxy = client.create(
        "db", upstream=echo_server.distant, behavior="30:delay", options={"delay": {"sleep": 0.01}}
    )
    with proxy.set_behavior("100:delay", delay__sleep=0.002) as same:
        assert same is proxy
        assert proxy.behavior == "100:delay"
        assert proxy.options == {"delay": {"sleep": 0.002}}
        assert _echo(proxy) == b"ping"
    assert proxy.behavior == "30:delay"
    assert proxy.options == {"delay": {"sleep": 0.01}}
    proxy.set_behavior("100:dummy")  # without with: it stays
    assert proxy.behavior == "100:dummy"
    with pytest.raises(ConfigError, match="NAME__OPTION"):
        proxy.set_behavior("100:delay", sleep=1)


def test_down_refuses_connections_then_they_work_again(db: RemoteProxy) -> None:
    assert _echo(db) == b"ping"
    with db.down():
        assert db.enabled is False
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(db.address, timeout=5).close()
    assert db.enabled is True
    assert _echo(db) == b"ping"
    db.disable()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(db.address, timeout=5).close()
    db.enable()
    assert _echo(db) == b"ping"


def test_connection_records_come_back_with_indices_and_since(db: RemoteProxy) -> None:
    for payload in (b"a", b"bb", b"ccc"):
        assert _echo(db, payload) == payload
    records = _settled(db)
    assert [r.index for r in records] == [0, 1, 2]
    assert [r.bytes_to_backend for r in records] == [1, 2, 3]
    assert all(r.ending is Ending.CLIENT_CLOSED and not r.open for r in records)
    assert [r.index for r in db.connections_since(0)] == [1, 2]
    assert db.connections_since(2) == []
    table = format_records(records)
    assert "client closed" in table
    assert len(table.splitlines()) == 4
    stats = db.stats
    assert stats == Stats.of(records)
    assert (stats.connections, stats.bytes_to_client, stats.handlers) == (3, 6, {"dummy": 3})
    assert db.exchanges == []
    assert db.exchanges_since(0) == []


def test_exchanges_are_rebuilt_under_a_protocol(client: Client) -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"

    def serve(conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        conn.sendall(answer)

    from tests.servers import ScriptedServer

    with ScriptedServer(serve) as backend:
        proxy = client.create("web", upstream=backend.distant, protocol="http")
        with socket.create_connection(proxy.address, timeout=5) as sock:
            sock.sendall(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_exactly(sock, len(answer)) == answer
        exchange = wait_until(lambda: [e for e in proxy.exchanges if e.outcome], timeout=10)[0]
    assert (exchange.request, exchange.reply, exchange.index) == ("GET /x", "200", 0)
    assert proxy.exchanges_since(0) == []
    assert proxy.stats.exchanges == 1


def test_errors_carry_the_status_the_field_and_one_line(
    client: Client, db: RemoteProxy, echo_server: EchoServer
) -> None:
    with pytest.raises(ControlClientError) as missing:
        client.proxy("nope")
    error = missing.value
    assert isinstance(error, VaurienError)
    assert (error.status, error.field, error.value) == (404, "name", "nope")
    assert str(error) == "HTTP 404: no proxy named 'nope'; known: db"

    with pytest.raises(ControlClientError) as bad:
        client.create("other", upstream="no-port")
    assert (bad.value.status, bad.value.field) == (400, "upstream")
    assert "\n" not in str(bad.value)

    with pytest.raises(ControlClientError) as bad_rule:
        db.add_rule("delay; bogus=1")
    assert (bad_rule.value.status, bad_rule.value.field) == (400, "rule")
    assert "bogus" in str(bad_rule.value)

    with pytest.raises(ControlClientError) as taken:
        client.create("db", upstream=echo_server.distant)
    assert (taken.value.status, taken.value.field) == (409, "name")

    db.add_rule("dummy; name=x")
    with pytest.raises(ControlClientError) as rule_taken:
        db.add_rule("dummy; name=x")
    assert rule_taken.value.status == 409

    with pytest.raises(ControlClientError) as no_rule:
        db.remove_rule("nope")
    assert (no_rule.value.status, no_rule.value.field) == (404, "rule")
    with pytest.raises(ControlClientError) as no_proxy:
        client.delete("nope")
    assert no_proxy.value.status == 404
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.field) == (str(error), "name")


def test_wait_times_out_as_a_timeout_error_naming_the_counts(db: RemoteProxy) -> None:
    db.add_rule("dummy; name=never; schedule=after:100")
    with pytest.raises(TimeoutError, match=r"rule 'never' fired 0 times") as caught:
        db.wait("never", 1, timeout=0.1)
    assert isinstance(caught.value, WaitTimeout)
    assert caught.value.status == 408
    assert caught.value.counts == {"rule": "never", "matched": 0, "fired": 0}
    with pytest.raises(WaitTimeout, match="0 connections accepted, waited for 1"):
        db.wait(connections=1, timeout=0.05)
    assert _echo(db) == b"ping"
    assert db.wait(connections=1) == {"connections": 1}
    with pytest.raises(ControlClientError) as unknown:
        db.wait("nope", 1)
    assert unknown.value.status == 404
    with pytest.raises(ControlClientError) as both:
        db.wait("never", 1, connections=2)
    assert both.value.status == 400


def test_set_upstream_sends_new_connections_elsewhere(client: Client) -> None:
    with EchoServer() as first, EchoServer(greeting=b"2:") as second:
        proxy = client.create("db", upstream=first.distant)
        assert _echo(proxy) == b"ping"
        proxy.set_upstream(second.address)
        assert proxy.distant == second.distant
        assert _echo(proxy) == b"2:ping"


def test_a_remote_proxy_is_a_context_manager_that_deletes_it(
    client: Client, echo_server: EchoServer
) -> None:
    with client.create("short", upstream=echo_server.distant, enabled=False) as proxy:
        assert proxy.enabled is False
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(proxy.address, timeout=5).close()
    assert client.proxies() == []


def test_reset_zeroes_everything(client: Client, db: RemoteProxy) -> None:
    db.add_rule("dummy; name=x")
    db.set_behavior("50:delay")
    assert _echo(db) == b"ping"
    db.disable()
    client.reset()
    assert (db.behavior, db.enabled, db.rules, db.accepted) == ("100:dummy", True, [], 0)
    assert db.connections == []


def test_an_absent_server_is_one_line_naming_the_url() -> None:
    host, port = refused_address()
    client = Client(f"http://{host}:{port}", timeout=5)
    with pytest.raises(ControlClientError) as caught:
        client.proxies()
    assert caught.value.status is None
    assert str(caught.value) == f"cannot reach the control API at http://{host}:{port}: " + (
        "Connection refused"
    )


def test_a_bad_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not valid"):
        Client("ftp://127.0.0.1:1")
    with pytest.raises(ConfigError, match="port"):
        Client("http://127.0.0.1:http")


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Records what the client sends; answers ``{"proxies": []}``."""

    seen: list[dict[str, object]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append(
            {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
        )
        data = json.dumps({"proxies": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[dict[str, object]]]]:
    _Recorder.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/prefix/", _Recorder.seen
    server.shutdown()
    server.server_close()


def test_what_the_client_sends(recorder: tuple[str, list[dict[str, object]]]) -> None:
    url, seen = recorder
    client = Client(url, token="s3cret")
    client.proxies()
    client.reset()
    client.request("PATCH", "/v1/proxies/a%2Fb", {"enabled": True})
    get, reset, patch = seen
    for call in seen:
        headers = call["headers"]
        assert isinstance(headers, dict)
        assert headers["User-Agent"] == USER_AGENT == f"pytest-vaurien/{__version__}"
        assert headers["Authorization"] == "Bearer s3cret"
    assert (get["method"], get["path"], get["body"]) == ("GET", "/prefix/v1/proxies", b"")
    assert (reset["method"], reset["body"]) == ("POST", b"")
    reset_headers = reset["headers"]
    assert isinstance(reset_headers, dict)
    assert "Content-Type" not in reset_headers
    assert reset_headers.get("Content-Length", "0") == "0"
    patch_headers = patch["headers"]
    assert isinstance(patch_headers, dict)
    assert patch_headers["Content-Type"] == "application/json"
    assert json.loads(patch["body"]) == {"enabled": True}  # type: ignore[arg-type]


def test_records_rebuild_from_json_whatever_keys_come() -> None:
    record = connection_from_json(
        {"index": 4, "client": "1.2.3.4:5", "ending": "martian", "error": "x", "future": 1}
    )
    assert (record.index, record.ending, record.error) == (4, None, "martian: x")


def test_a_wrong_token_is_refused_with_401(tmp_path, echo_server: EchoServer) -> None:
    token = "tok-" + os.urandom(8).hex()
    with start_control_server(tmp_path, env={"VAURIEN_CONTROL_TOKEN": token}) as server:
        assert server.client(token).proxies() == []
        for wrong in (None, "nope"):
            with pytest.raises(ControlClientError) as caught:
                server.client(wrong).proxies()
            assert caught.value.status == 401
            assert "token" in str(caught.value)
        proxy = server.client(token).create("db", upstream=echo_server.distant)
        assert _echo(proxy) == b"ping"


def test_50_clients_changing_rules_while_200_connections_relay_lose_no_byte(
    control_server: ControlProcess, client: Client, echo_server: EchoServer
) -> None:
    proxy = client.create("busy", upstream=echo_server.distant)
    size, connections, changers, rounds = 64 * 1024, 200, 50, 8
    start = threading.Barrier(connections + changers)
    failures: list[str] = []
    lock = threading.Lock()

    def fail(message: str) -> None:
        with lock:
            failures.append(message)

    def relay(index: int) -> None:
        payload = os.urandom(size)
        try:
            start.wait(timeout=30)
            reply = roundtrip(proxy.address, payload, timeout=60)
        except Exception as error:
            fail(f"connection {index}: {error!r}")
            return
        if reply != payload:
            fail(f"connection {index}: {len(reply)} bytes came back, not the same {size}")

    def change(index: int) -> None:
        own = Client(control_server.url, timeout=30).proxy("busy")
        try:
            start.wait(timeout=30)
            for step in range(rounds):
                fault = "dummy" if step % 2 else "delay; sleep=0.0005"
                with own.add_rule(f"{fault}; name=c{index}-{step}") as rule:
                    assert rule.name == f"c{index}-{step}"
        except Exception as error:
            fail(f"changer {index}: {error!r}")

    threads = [threading.Thread(target=relay, args=(i,)) for i in range(connections)]
    threads += [threading.Thread(target=change, args=(i,)) for i in range(changers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
    assert proxy.rules == []
    records = _settled(proxy)
    assert len(records) == connections
    assert all(r.bytes_to_backend == size and r.bytes_to_client == size for r in records)


def test_the_client_and_vaurienctl_load_neither_gevent_nor_pytest() -> None:
    """Checked in a fresh interpreter: what they import, transitively."""
    code = (
        "import sys, pytest_vaurien.client, pytest_vaurien.ctl\n"
        "heavy = ('gevent', 'pytest', '_pytest', 'pytest_vaurien.cli', 'pytest_vaurien.api',\n"
        "         'pytest_vaurien.plugin', 'pytest_vaurien.engine')\n"
        "print(','.join(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == ""
