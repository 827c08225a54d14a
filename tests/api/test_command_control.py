"""The ``vaurien`` command with ``--control``: its own proxies (``--distant``,
``[proxy:NAME]`` sections) in the API, vaurien 1.x's ``/behavior``, and the
token rule for addresses other than loopback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pytest_vaurien.client import Client
from tests.api.conftest import start_control_server
from tests.servers import EchoServer, refused_address


def _call(url: str, method: str = "GET", body: object = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _echo(address: tuple[str, int]) -> bytes:
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(b"ping")
        return sock.recv(10)


def test_the_distant_proxy_is_named_default_and_vaurien_1_behavior_drives_it(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    with start_control_server(
        tmp_path, "--distant", echo_server.distant, "--local", "127.0.0.1:0"
    ) as server:
        status, body = _call(f"{server.url}/v1/proxies/default")
        assert status == 200
        assert isinstance(body, dict)
        host, _, port = str(body["listen"]).rpartition(":")
        address = (host, int(port))
        assert _echo(address) == b"ping"
        assert _call(f"{server.url}/behavior") == (200, {"behavior": "100:dummy"})
        status, listed = _call(f"{server.url}/behaviors")
        assert status == 200
        assert "abort" in listed["behaviors"]
        assert _call(f"{server.url}/behavior", "PUT", {"name": "abort"}) == (200, {"status": "ok"})
        assert _echo(address) == b""
        assert _call(f"{server.url}/behavior", "PUT", {"name": "delay", "sleep": 0.01})[0] == 200
        status, body = _call(f"{server.url}/v1/proxies/default")
        assert body["behavior"] == "100:delay"  # type: ignore[index]
        assert body["options"] == {"delay": {"sleep": 0.01}}  # type: ignore[index]
        assert _echo(address) == b"ping"
        status, error = _call(f"{server.url}/behavior", "PUT", {"sleep": 1})
        assert status == 400
        assert "name" in json.dumps(error)
        output = server.output()
    assert f"listening on {host}:{port}" in output
    assert f"control API on {server.url}" in output


def test_config_file_proxy_sections_each_make_a_proxy(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    config = tmp_path / "stack.ini"
    config.write_text(f"""
[handler:delay]
sleep = 0.01

[proxy:cache]
distant = {echo_server.distant}
behavior = 100:abort

[proxy:db]
distant = {echo_server.distant}
local = 127.0.0.1:0
behavior = 100:delay
""")
    with start_control_server(tmp_path / "run", "--config", str(config)) as server:
        _status, body = _call(f"{server.url}/v1/proxies")
        proxies = {proxy["name"]: proxy for proxy in body["proxies"]}  # type: ignore[index]
        assert sorted(proxies) == ["cache", "db"]
        assert proxies["db"]["options"] == {"delay": {"sleep": "0.01"}}

        def address(name: str) -> tuple[str, int]:
            host, _, port = str(proxies[name]["listen"]).rpartition(":")
            return host, int(port)

        assert _echo(address("cache")) == b""
        assert _echo(address("db")) == b"ping"


def test_a_proxy_section_without_distant_is_named(tmp_path: Path) -> None:
    config = tmp_path / "bad.ini"
    config.write_text("[proxy:cache]\nbehavior = 100:abort\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_vaurien",
            "--control",
            "127.0.0.1:0",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"vaurien: error: config file {str(config)!r}, section [proxy:cache]: no distant; "
        "expected distant = HOST:PORT"
    )


@pytest.mark.parametrize("address", ["0.0.0.0:0", "[::]:0", "example.org:0"])
def test_a_control_address_other_than_loopback_needs_a_token(address: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest_vaurien", "--control", address],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"vaurien: error: --control {address} is not a loopback")
    assert "--control-token TOKEN (or set VAURIEN_CONTROL_TOKEN)" in result.stderr


def test_a_control_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "pytest_vaurien", "--control", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"vaurien: error: control API: cannot listen on 127.0.0.1:{port}:"
    )
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_section_proxy_with_a_dead_backend_still_starts(tmp_path: Path) -> None:
    host, port = refused_address()
    config = tmp_path / "dead.ini"
    config.write_text(f"[proxy:gone]\ndistant = {host}:{port}\n")
    with start_control_server(tmp_path / "run", "--config", str(config)) as server:
        status, body = _call(f"{server.url}/v1/proxies/gone")
        assert status == 200
        assert body["upstream"] == f"{host}:{port}"


def test_stalled_clients_of_the_api_stall_neither_the_api_nor_the_proxies(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    """Clients that send half a request, or half a body, and then nothing: the
    other calls are answered and the proxies relay meanwhile."""
    with start_control_server(
        tmp_path, "--distant", echo_server.distant, "--local", "127.0.0.1:0"
    ) as server:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        stalled = []
        for index in range(50):
            sock = socket.create_connection((host, int(port)), timeout=10)
            if index % 2:
                sock.sendall(b"GET /v1/prox")
            else:
                sock.sendall(
                    b"POST /v1/proxies HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 1000\r\n\r\n{"
                )
            stalled.append(sock)
        try:
            status, body = _call(f"{server.url}/v1/proxies/default")
            assert status == 200
            listen_host, _, listen_port = str(body["listen"]).rpartition(":")  # type: ignore[index]
            assert _echo((listen_host, int(listen_port))) == b"ping"
            assert (
                _call(f"{server.url}/v1/proxies/default", "PATCH", {"behavior": "100:abort"})[0]
                == 200
            )
            assert _echo((listen_host, int(listen_port))) == b""
        finally:
            for sock in stalled:
                sock.close()


def test_rule_names_with_slashes_and_percents_are_decoded_once(
    client: Client, echo_server: EchoServer
) -> None:
    proxy = client.create("a.b~c:d@e", upstream=echo_server.distant)
    assert [p.name for p in client.proxies()] == ["a.b~c:d@e"]
    proxy.add_rule("abort; name=x/y%2F")
    assert [rule.name for rule in proxy.rules] == ["x/y%2F"]
    proxy.remove_rule("x/y%2F")
    assert proxy.rules == []
    client.delete("a.b~c:d@e")
    assert client.proxies() == []


def test_patch_null_puts_an_option_back_to_its_default(
    client: Client, echo_server: EchoServer
) -> None:
    proxy = client.create(
        "opts", upstream=echo_server.distant, behavior="100:delay", options={"delay": {"sleep": 5}}
    )
    proxy.patch(options={"delay": {"jitter": 0.5}})
    assert proxy.options == {"delay": {"sleep": 5, "jitter": 0.5}}
    proxy.patch(options={"delay": {"sleep": None}})
    assert proxy.options == {"delay": {"jitter": 0.5}}
    assert proxy.behavior == "100:delay"
    with proxy.set_behavior("100:delay", delay__sleep=0):
        assert _echo(proxy.address) == b"ping"
