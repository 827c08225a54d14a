"""A user process that monkey-patched everything still gets a real proxy thread."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_monkey_patched_process_still_gets_a_native_proxy_thread(tmp_path):
    script = tmp_path / "patched.py"
    script.write_text(
        textwrap.dedent(
            """
            from gevent import monkey
            monkey.patch_all()

            import socket
            import threading

            from pytest_vaurien import Proxy

            listener = socket.create_server(("127.0.0.1", 0))

            def echo():
                conn, _ = listener.accept()
                with conn:
                    while data := conn.recv(1024):
                        conn.sendall(data)

            threading.Thread(target=echo).start()
            with Proxy(listener.getsockname()) as proxy:
                with socket.create_connection(proxy.address, timeout=5) as sock:
                    sock.sendall(b"green")
                    assert sock.recv(10) == b"green"
            print("OK")
            """
        )
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"
