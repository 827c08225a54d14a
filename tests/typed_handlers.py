"""Handlers written against the typed seam only, as a user would write them.

``tests/test_context.py`` relays through them and checks them with
``mypy --strict``: everything a handler touches has a type.
"""

from __future__ import annotations

import gevent

from pytest_vaurien.handlers import BaseHandler, ConnectionView, SocketView


class Stamp(BaseHandler):
    """Numbers each reply chunk and tags it with a seeded random byte string.

    A client chunk ``b"reset"`` resets the client; ``b"later"`` makes a helper
    greenlet send ``b"late"`` after ``pause`` seconds.
    """

    name = "stamp"
    options = {"pause": ("Seconds before the late message", float, 0.05)}

    def on_connection(self, connection: ConnectionView) -> None:
        state = connection.state_for(self)
        state["replies"] = 0
        state["index"] = connection.index

    def _late(self, client_sock: SocketView) -> None:
        gevent.sleep(self.option("pause"))
        client_sock.sendall(b"late")

    def __call__(self, client_sock: SocketView, backend_sock: SocketView, to_backend: bool) -> bool:
        data = self._get_data(client_sock, backend_sock, to_backend)
        connection = client_sock.connection
        if not data:
            return False
        if to_backend:
            if data == b"reset":
                connection.reset_client("the client asked for it")
                return False
            if data == b"later":
                connection.spawn(self._late, client_sock)
                return True
            backend_sock.sendall(data)
            return True
        state = connection.state_for(self)
        state["replies"] += 1
        tag = self.random.randbytes(4).hex().encode()
        client_sock.sendall(b"%d:%d:%s:" % (state["index"], state["replies"], tag) + data)
        return True
