"""The benchmark's backend: one process, one thread, selectors, on 127.0.0.1.

Each connection starts with one mode byte:

* ``E``: echo everything back;
* ``S`` + 8-byte length: sink, read that many bytes, answer ``b"ok"``;
* ``D`` + 8-byte length: source, send that many bytes, then close;
* ``H``: half-close, read to EOF, answer the byte count, close.

Run as ``python benchmarks/backend.py``: prints its port, serves until killed.
"""

from __future__ import annotations

import selectors
import socket
import struct
import sys

CHUNK = 1 << 16
ZEROS = bytes(CHUNK)


class Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.mode = b""
        self.header = b""
        self.todo = 0
        self.out = b""
        self.seen = 0
        self.closing = False


def serve(listener: socket.socket) -> None:
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    while True:
        for key, events in sel.select():
            if key.data is None:
                try:
                    sock, _ = listener.accept()
                except OSError:
                    continue
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sel.register(sock, selectors.EVENT_READ, Conn(sock))
                continue
            conn = key.data
            try:
                if events & selectors.EVENT_WRITE:
                    flush(sel, conn)
                if events & selectors.EVENT_READ and not conn.closing:
                    readable(sel, conn)
            except OSError:
                close(sel, conn)


def readable(sel: selectors.BaseSelector, conn: Conn) -> None:
    try:
        data = conn.sock.recv(CHUNK)
    except BlockingIOError:
        return
    eof = not data  # the header may come alone: what is left of it is not an EOF
    if not conn.mode or (conn.mode in (b"S", b"D") and len(conn.header) < 8):
        if not data:
            close(sel, conn)
            return
        if not conn.mode:
            conn.mode, data = data[:1], data[1:]
        if conn.mode in (b"S", b"D"):
            need = 8 - len(conn.header)
            conn.header += data[:need]
            data = data[need:]
            if len(conn.header) < 8:  # the rest of the header is still on its way
                return
            conn.todo = struct.unpack("!Q", conn.header)[0]
            if conn.mode == b"D":
                conn.closing = True
                sel.modify(conn.sock, selectors.EVENT_WRITE, conn)
                flush(sel, conn)
                return
    if conn.mode == b"E":
        if not data:
            close(sel, conn)
            return
        send(sel, conn, data)
    elif conn.mode == b"S":
        if eof:
            close(sel, conn)
            return
        conn.todo -= len(data)
        if conn.todo <= 0 and not conn.out and not conn.seen:
            conn.seen = 1  # "ok" once, when the last byte came
            send(sel, conn, b"ok")
    elif conn.mode == b"H":
        conn.seen += len(data)
        if not data:
            conn.closing = True
            send(sel, conn, f"{conn.seen}\n".encode())


def send(sel: selectors.BaseSelector, conn: Conn, data: bytes) -> None:
    conn.out += data
    flush(sel, conn)


def flush(sel: selectors.BaseSelector, conn: Conn) -> None:
    if conn.mode == b"D":
        while conn.todo > 0:
            try:
                sent = conn.sock.send(ZEROS[: min(CHUNK, conn.todo)])
            except BlockingIOError:
                return
            conn.todo -= sent
        close(sel, conn)
        return
    while conn.out:
        try:
            sent = conn.sock.send(conn.out)
        except BlockingIOError:
            sel.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
            return
        conn.out = conn.out[sent:]
    if conn.closing:
        close(sel, conn)
    else:
        sel.modify(conn.sock, selectors.EVENT_READ, conn)


def close(sel: selectors.BaseSelector, conn: Conn) -> None:
    try:
        sel.unregister(conn.sock)
    except (KeyError, ValueError):
        pass
    conn.sock.close()


def main() -> None:
    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    listener.setblocking(False)
    print(listener.getsockname()[1], flush=True)
    try:
        serve(listener)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
