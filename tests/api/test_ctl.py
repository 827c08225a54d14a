"""``vaurienctl``, run as a command against a real ``vaurien --control`` process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_vaurien.client import Client
from tests.api.conftest import ControlProcess, start_control_server
from tests.client import roundtrip
from tests.servers import EchoServer, refused_address

SCRIPT = Path(sys.executable).parent / "vaurienctl"
#: The console script if it is installed, else the module.
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "pytest_vaurien.ctl"]
SUBCOMMANDS = [
    ["list"],
    ["create"],
    ["delete"],
    ["show"],
    ["behavior"],
    ["rule"],
    ["rule", "add"],
    ["rule", "list"],
    ["rule", "remove"],
    ["down"],
    ["up"],
    ["wait"],
    ["reset"],
]


def ctl(
    *args: str, url: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("VAURIEN_CONTROL_URL", "VAURIEN_CONTROL_TOKEN")
    }
    environment.update(env or {})
    command = [*COMMAND, *(["--url", url] if url else []), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=environment)


def ok(*args: str, url: str) -> str:
    result = ctl(*args, url=url)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def failed(result: subprocess.CompletedProcess[str], status: int) -> str:
    """The one error line of a failed run."""
    assert result.returncode == status, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("vaurienctl: error: ")
    return lines[0]


def test_create_list_show_delete(
    control_server: ControlProcess, client: Client, echo_server: EchoServer
) -> None:
    url = control_server.url
    assert ok("list", url=url) == "no proxies\n"
    out = ok("create", "db", "--upstream", echo_server.distant, url=url)
    assert out.startswith("created db: 127.0.0.1:")
    assert out.endswith(f" -> {echo_server.distant} (tcp, 100:dummy, 0 rules, up)\n")
    ok(
        "create",
        "cache-long-name",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        echo_server.distant,
        "--behavior",
        "50:delay",
        "--option",
        "delay.sleep=0.001",
        "--rule",
        "dummy; name=r1",
        url=url,
    )
    proxy = client.proxy("cache-long-name")
    assert proxy.options == {"delay": {"sleep": 0.001}}
    assert roundtrip(proxy.address) == b"ping"
    lines = ok("list", url=url).splitlines()
    assert lines[0].split() == [
        "NAME",
        "LISTEN",
        "UPSTREAM",
        "PROTOCOL",
        "STATE",
        "ACCEPTED",
        "OPEN",
        "RULES",
        "BEHAVIOR",
    ]
    assert [line.split()[0] for line in lines[1:]] == ["cache-long-name", "db"]
    assert lines[1].split()[4:] == ["up", "1", "0", "1", "50:delay"]
    for column in ("LISTEN", "BEHAVIOR"):  # aligned: each column starts at one place
        at = lines[0].index(column)
        assert all(line[at - 2 : at] == "  " and line[at] != " " for line in lines[1:])
    data = json.loads(ok("list", "--json", url=url))
    assert [p["name"] for p in data["proxies"]] == ["cache-long-name", "db"]
    shown = ok("show", "cache-long-name", url=url).splitlines()
    assert shown[1].split() == ["r1", "dummy", "matched", "1", "fired", "1"]
    assert ok("delete", "db", url=url) == "deleted db\n"
    assert [p.name for p in client.proxies()] == ["cache-long-name"]


def test_behavior_rules_down_up_wait_reset(
    control_server: ControlProcess, client: Client, echo_server: EchoServer
) -> None:
    url = control_server.url
    proxy = client.create("db", upstream=echo_server.distant)
    out = ok("behavior", "db", "100:delay", "--option", "delay.sleep=0.001", url=url)
    assert out == 'db: behavior 100:delay, options {"delay": {"sleep": 0.001}}\n'
    assert proxy.behavior == "100:delay"
    ok("behavior", "db", "100:dummy", url=url)

    out = ok("rule", "add", "db", "abort; schedule=first:2; name=flaky", url=url)
    assert out.split() == [
        "added",
        "to",
        "db:",
        "flaky",
        "abort;",
        "schedule=first:2",
        "matched",
        "0",
        "fired",
        "0",
    ]
    out = ok("rule", "add", "db", '{"fault": "delay", "options": {"sleep": 0.001}}', url=url)
    assert "delay#2  delay; sleep=0.001" in out
    for _ in range(3):
        try:
            roundtrip(proxy.address)
        except ConnectionResetError:
            pass
    assert ok("wait", "db", "--rule", "flaky", "--fired", "2", url=url) == (
        "db: rule flaky fired 2 times (matched 3)\n"
    )
    assert ok("wait", "db", "--connections", "3", url=url) == "db: 3 connections accepted\n"
    counts = json.loads(ok("wait", "db", "--connections", "3", "--json", url=url))
    assert counts == {"connections": 3}
    lines = ok("rule", "list", "db", url=url).splitlines()
    assert [line.split()[0] for line in lines] == ["flaky", "delay#2"]
    assert lines[0].split()[-4:] == ["matched", "3", "fired", "2"]
    assert lines[0].index("matched") == lines[1].index("matched")
    assert json.loads(ok("rule", "list", "db", "--json", url=url))["rules"][0]["fired"] == 2
    assert ok("rule", "remove", "db", "flaky", url=url) == "removed rule flaky from db\n"
    assert [r.name for r in proxy.rules] == ["delay#1"]

    assert ok("down", "db", url=url).startswith("db is down")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(proxy.address, timeout=5).close()
    assert ok("up", "db", url=url) == f"db is up on 127.0.0.1:{proxy.address[1]}\n"
    assert roundtrip(proxy.address) == b"ping"

    assert ok("reset", url=url).startswith("reset: ")
    assert (proxy.rules, proxy.accepted, proxy.behavior) == ([], 0, "100:dummy")
    assert ok("rule", "list", "db", url=url) == "db: no rules\n"


def test_errors_are_one_line_with_exit_status_1(
    control_server: ControlProcess, client: Client, echo_server: EchoServer
) -> None:
    url = control_server.url
    client.create("db", upstream=echo_server.distant)
    line = failed(ctl("delete", "nope", url=url), 1)
    assert line == "vaurienctl: error: HTTP 404: no proxy named 'nope'; known: db"
    line = failed(ctl("rule", "add", "db", "delay; bogus=1", url=url), 1)
    assert line.startswith("vaurienctl: error: HTTP 400: ")
    assert "bogus" in line
    failed(ctl("rule", "remove", "db", "nope", url=url), 1)
    failed(ctl("create", "db", "--upstream", echo_server.distant, url=url), 1)
    line = failed(ctl("create", "x", "--upstream", "nowhere", url=url), 1)
    assert "upstream" in line
    line = failed(ctl("wait", "db", "--connections", "5", "--timeout", "0.05", url=url), 1)
    assert line.endswith("0 connections accepted, waited for 5")
    line = failed(ctl("behavior", "db", "100:nosuch", url=url), 1)
    assert "nosuch" in line


def test_an_unreachable_server_is_exit_status_1() -> None:
    host, port = refused_address()
    line = failed(ctl("list", url=f"http://{host}:{port}"), 1)
    assert line == (
        f"vaurienctl: error: cannot reach the control API at http://{host}:{port}: "
        "Connection refused"
    )


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["frob"],
        ["rule"],
        ["rule", "add", "db"],
        ["create", "db"],
        ["wait", "db"],
        ["wait", "db", "--fired", "2"],
        ["wait", "db", "--rule", "r", "--connections", "2"],
        ["wait", "db", "--connections", "many"],
        ["behavior", "db", "100:delay", "--option", "sleep"],
        ["rule", "add", "db", "{not json"],
        ["--url", "ftp://x", "list"],
    ],
)
def test_usage_errors_are_one_line_with_exit_status_2(args: list[str]) -> None:
    host, port = refused_address()  # never reached: the line is checked first
    failed(ctl(*args, env={"VAURIEN_CONTROL_URL": f"http://{host}:{port}"}), 2)


@pytest.mark.parametrize("args", SUBCOMMANDS, ids=" ".join)
def test_each_subcommand_has_help_with_examples(args: list[str]) -> None:
    result = ctl(*args, "--help")
    assert result.returncode == 0, result.stderr
    assert "examples:\n  vaurienctl " in result.stdout


def test_the_url_and_token_come_from_the_environment(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    token = "tok-" + os.urandom(8).hex()
    with start_control_server(tmp_path, env={"VAURIEN_CONTROL_TOKEN": token}) as server:
        env = {"VAURIEN_CONTROL_URL": server.url}
        line = failed(ctl("list", env=env), 1)
        assert line.startswith("vaurienctl: error: HTTP 401: ")
        assert ctl("list", env={**env, "VAURIEN_CONTROL_TOKEN": token}).stdout == "no proxies\n"
        result = ctl("--token", token, "list", "--json", env=env)
        assert json.loads(result.stdout) == {"proxies": []}
        result = ctl("list", "--token", token, "--url", server.url)
        assert result.returncode == 0
        assert result.stdout == "no proxies\n"
