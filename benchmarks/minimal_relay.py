"""The least a relay on gevent can do: the floor for ``pinned.py``.

    python benchmarks/minimal_relay.py LISTEN_PORT BACKEND_PORT [--c]

Accepts on 127.0.0.1, connects each client to the backend, and moves bytes
with one io watcher per direction whose callback is a ``recv`` and a
``send`` (and a stop at EOF): no records, no plan, no error handling, no
flow control. Not a proxy to use; what vaurien's per-chunk path is
measured against.

``--c``: the callback is ``minimal_relay.c`` instead, compiled here with the
system's C compiler into a temporary directory: what per-chunk work outside
Python would leave, with gevent's loop kept.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

import gevent

HERE = Path(__file__).resolve().parent


def main() -> None:
    listen_port, backend_port = int(sys.argv[1]), int(sys.argv[2])
    c_relay = build_c_relay() if "--c" in sys.argv[3:] else None
    loop = gevent.get_hub().loop
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", listen_port))
    listener.listen(64)
    kept = []

    def accept() -> None:
        client, _ = listener.accept()
        backend = socket.create_connection(("127.0.0.1", backend_port))
        for sock in (client, backend):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
        for source, dest in ((client, backend), (backend, client)):
            watcher = loop.io(source.fileno(), 1)
            if c_relay is None:
                watcher.start(_relay, watcher, source.recv, dest.send)
            else:
                watcher.start(c_relay, watcher, source.fileno(), dest.fileno())
            kept.append((source, dest))

    acceptor = loop.io(listener.fileno(), 1)
    acceptor.start(accept)
    gevent.get_hub().join()


def _relay(watcher, recv, send) -> None:  # type: ignore[no-untyped-def]
    try:
        data = recv(65536)
    except BlockingIOError:
        return
    if data:
        send(data)
    else:  # EOF: stop watching (the sockets stay open until the process ends)
        watcher.stop()


def c_compiler() -> str | None:
    """The C compiler ``--c`` needs, if this machine has one and Python's headers."""
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    return shutil.which("cc") if headers.exists() else None


def build_c_relay() -> Any:
    """Compile ``minimal_relay.c`` and return its ``relay``."""
    compiler = c_compiler()
    if compiler is None:
        sys.exit("--c needs a C compiler (cc) and Python's headers")
    built = Path(tempfile.mkdtemp(prefix="minimal-relay-c-"))
    library = built / ("minimal_relay_c" + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.run(
        [compiler, "-O2", "-shared", "-fPIC", "-I", sysconfig.get_paths()["include"],
         str(HERE / "minimal_relay.c"), "-o", str(library)],
        check=True,
    )  # fmt: skip
    spec = importlib.util.spec_from_file_location("minimal_relay_c", library)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.relay


if __name__ == "__main__":
    main()
