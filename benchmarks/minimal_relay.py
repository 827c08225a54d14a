"""The least a relay on gevent can do: the floor for ``pinned.py``.

    python benchmarks/minimal_relay.py LISTEN_PORT BACKEND_PORT

Accepts on 127.0.0.1, connects each client to the backend, and moves bytes
with one io watcher per direction whose callback is a ``recv`` and a
``send`` (and a stop at EOF): no records, no plan, no error handling, no
flow control. Not a proxy to use; what vaurien's per-chunk path is
measured against.
"""

from __future__ import annotations

import socket
import sys

import gevent


def main() -> None:
    listen_port, backend_port = int(sys.argv[1]), int(sys.argv[2])
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
            watcher.start(_relay, watcher, source.recv, dest.send)
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


if __name__ == "__main__":
    main()
