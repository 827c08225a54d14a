"""The typed handler seam: a user's handler, relayed through real sockets and
checked by mypy in strict mode."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_vaurien import Proxy
from pytest_vaurien.records import Ending
from pytest_vaurien.registry import make_plugin_manager, registry_from_plugins
from tests.servers import read_exactly, wait_until
from tests.typed_handlers import Stamp

ROOT = Path(__file__).resolve().parent.parent


def _registry():
    registry = registry_from_plugins(make_plugin_manager(load_entrypoints=False))
    registry.add(Stamp, "tests")
    return registry


def _replies(proxy: Proxy, count: int) -> list[bytes]:
    with socket.create_connection(proxy.address, timeout=5) as sock:
        out = []
        for _ in range(count):
            sock.sendall(b"ping")
            out.append(read_exactly(sock, len(b"0:1:abcdabcd:ping")))
        return out


def _drain(sock: socket.socket) -> None:
    while sock.recv(100):
        pass


def test_state_for_keeps_counts_per_connection_and_random_replays(echo_server):
    with Proxy(echo_server.distant, "stamp", registry=_registry(), seed=7) as proxy:
        first = _replies(proxy, 3)
        second = _replies(proxy, 2)
    assert [r[:4] for r in first] == [b"0:1:", b"0:2:", b"0:3:"]
    assert [r[:4] for r in second] == [b"1:1:", b"1:2:"]
    assert all(r.endswith(b":ping") for r in first + second)
    # the tags come from the connection's seeded source: the same seed replays them
    with Proxy(echo_server.distant, "stamp", registry=_registry(), seed=7) as again:
        assert _replies(again, 3) == first
    with Proxy(echo_server.distant, "stamp", registry=_registry(), seed=8) as other:
        assert _replies(other, 3) != first


def test_reset_client_resets_and_is_recorded(echo_server):
    with Proxy(echo_server.distant, "stamp", registry=_registry()) as proxy:
        with socket.create_connection(proxy.address, timeout=5) as sock:
            sock.sendall(b"reset")
            with pytest.raises(ConnectionResetError):
                _drain(sock)
        wait_until(lambda: not proxy.connections[0].open)
        [record] = proxy.connections
    assert record.ending is Ending.HANDLER_RESET
    assert record.error == "the client asked for it"


def test_spawn_runs_a_helper_that_dies_with_the_connection(echo_server):
    with Proxy(
        echo_server.distant, "stamp", registry=_registry(), options={"stamp": {"pause": 0.01}}
    ) as proxy:
        with socket.create_connection(proxy.address, timeout=5) as sock:
            sock.sendall(b"later")
            assert read_exactly(sock, 4) == b"late"
        # the helper, once spawned, must not outlive its connection
        with socket.create_connection(proxy.address, timeout=5) as sock:
            proxy.set_behavior("stamp", stamp__pause=3600)
            sock.sendall(b"later")
        wait_until(lambda: proxy.open_connections == 0, timeout=3)


def test_a_handler_on_the_seam_type_checks_strictly(tmp_path):
    bad = tmp_path / "bad_handler.py"
    bad.write_text(
        textwrap.dedent(
            """
            from __future__ import annotations

            from pytest_vaurien.handlers import BaseHandler, SocketView


            class Bad(BaseHandler):
                name = "bad"

                def __call__(
                    self, client_sock: SocketView, backend_sock: SocketView, to_backend: bool
                ) -> bool:
                    client_sock.connection.state["x"] = 1
                    client_sock.sendall("text")
                    return True
            """
        )
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--cache-dir",
            os.devnull,
            str(ROOT / "tests" / "typed_handlers.py"),
            str(bad),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    lines = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert not [line for line in lines if "typed_handlers.py" in line], result.stdout
    assert any('has no attribute "state"' in line for line in lines), result.stdout
    assert any('"sendall" of "SocketView"' in line for line in lines), result.stdout


def _docs_example(name: str) -> str:
    page = (ROOT / "docs" / "writing-handlers.md").read_text()
    blocks = page.split("```python\n")[1:]
    [block] = [b.split("```", 1)[0] for b in blocks if f"class {name}(" in b]
    return "from __future__ import annotations\n\n" + block


def test_the_typed_example_of_the_docs_type_checks_and_runs(tmp_path, echo_server):
    module = tmp_path / "count_replies.py"
    module.write_text(_docs_example("CountReplies"))
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", os.devnull, str(module)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout
    namespace: dict[str, object] = {}
    exec(compile(module.read_text(), str(module), "exec"), namespace)
    registry = _registry()
    registry.add(namespace["CountReplies"], "docs")
    with (
        Proxy(echo_server.distant, "count_replies", registry=registry) as proxy,
        socket.create_connection(proxy.address, timeout=5) as sock,
    ):
        for _ in range(3):
            sock.sendall(b"ping")
            assert read_exactly(sock, 4) == b"ping"
        assert sock.recv(10) == b""  # closed after the third reply
