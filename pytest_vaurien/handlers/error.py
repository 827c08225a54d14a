"""``error``: the client gets an error instead of the backend's reply.

Under ``tcp``, random bytes; under a protocol, that protocol's own error
(an HTTP 503, a Redis ``-READONLY``...), which the client library turns into
its own exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_vaurien.handlers.base import BaseHandler, Range
from pytest_vaurien.handlers.context import (
    RELAY,
    ConnectionView,
    ExchangeFault,
    ProxyInfo,
    SocketView,
)
from pytest_vaurien.schedule import Schedule, parse_schedule

__all__ = ["Error", "Headers"]

#: How many random bytes replace, or are inserted into, a reply.
GARBAGE_SIZE = 1000


class Headers(str):
    """Header lines, ``"Name: value"`` one a line; a marker may give a dict."""

    def __new__(cls, value: object) -> Headers:
        if isinstance(value, Mapping):
            value = "\n".join(f"{name}: {text}" for name, text in value.items())
        if not isinstance(value, str):
            raise TypeError("expected 'Name: value' lines or a dict")
        return super().__new__(cls, value)


#: The options that shape the protocol's error reply (all but ``after``):
#: each protocol reads its own.
REPLY_OPTIONS = (
    "status",
    "reason",
    "headers",
    "body",
    "reply",
    "sqlstate",
    "message",
    "severity",
    "errno",
    "code",
    "text",
)


class Error(BaseHandler):
    """Requests reach the backend; the client gets random bytes instead of the reply.

    With ``inject``, the reply comes through with random bytes inserted in the
    middle of each chunk. The first ``warmup`` connections (exchanges,
    under a protocol) this handler is given on a proxy pass unharmed: the
    schedule ``after:WARMUP``.

    Under a protocol the client gets the protocol's error instead of the
    reply, and the request never reaches the backend; with ``after``, it
    does, the backend acts on it, and its reply is replaced.
    """

    name = "error"
    options = {
        "inject": ("Insert random bytes into the reply instead of replacing it", bool, False),
        "warmup": ("Connections to let through before erroring", int, 0, Range(0)),
        "after": (
            "With a protocol: forward the request, then replace the backend's reply by the error",
            bool,
            False,
        ),
        "status": ("HTTP: the status code of the error", int, 503, Range(100, 599)),
        "reason": ("HTTP: the reason phrase; empty for the standard one", str, ""),
        "headers": ("HTTP: extra headers, 'Name: value' lines (a dict in a marker)", Headers, ""),
        "body": ("HTTP: the body of the error", str, "injected by vaurien\n"),
        "reply": (
            "Redis, memcache: the error line (e.g. 'READONLY ...'); empty for the protocol's",
            str,
            "",
        ),
        "sqlstate": ("PostgreSQL, MySQL: the SQLSTATE; empty for the protocol's", str, ""),
        "message": ("PostgreSQL, MySQL: the error message; empty for the standard one", str, ""),
        "severity": (
            "PostgreSQL: ERROR, or FATAL, which also closes the connection",
            str,
            "ERROR",
            ("ERROR", "FATAL"),
        ),
        "errno": ("MySQL: the error number", int, 1213, Range(1, 65535)),
        "code": ("SMTP: the reply code", int, 451, Range(400, 599)),
        "text": ("SMTP: the reply text", str, "4.3.0 injected by vaurien"),
    }

    def __init__(
        self, settings: Mapping[str, Any] | None = None, proxy: ProxyInfo | None = None
    ) -> None:
        super().__init__(settings, proxy)
        self.connections_given = 0
        #: Which units (connections, or exchanges under a protocol) err.
        self.schedule = self.faulty_schedule()

    def faulty_schedule(self) -> Schedule:
        """``warmup`` as a schedule: the units after the first ``warmup``."""
        return parse_schedule(f"after:{self.option('warmup')}")

    def on_connection(self, connection: ConnectionView) -> None:
        self.connections_given += 1
        connection.state_for(self)["faulty"] = self.is_faulty(self.connections_given)

    def spares(self, connection: ConnectionView) -> bool:
        """A connection the schedule spares is relayed, not faulted."""
        return not connection.state_for(self).get("faulty", True)

    def is_faulty(self, number: int) -> bool:
        """Whether the unit this handler got as ``number`` (from 1) errs."""
        return self.schedule.holds(number, 0.0, 0)

    def exchange_fault(self) -> ExchangeFault:
        """The protocol's error for this exchange, unless the schedule spares it."""
        self.connections_given += 1
        if not self.is_faulty(self.connections_given):
            return RELAY
        return ExchangeFault(answer=self.reply_options(), after=self.option("after"))

    def reply_options(self) -> dict[str, Any]:
        """What shapes the protocol's error reply (checked when the plan is built).

        An empty string means "the protocol's own default": it is left out.
        """
        values = {option: self.option(option) for option in REPLY_OPTIONS}
        return {option: value for option, value in values.items() if value != ""}

    def garbage(self) -> bytes:
        """Random bytes from the proxy's seeded random source."""
        return self.random.randbytes(GARBAGE_SIZE)

    def __call__(self, client_sock: SocketView, backend_sock: SocketView, to_backend: bool) -> bool:
        data = self._get_data(client_sock, backend_sock, to_backend)
        if not data:
            return False
        faulty = client_sock.connection.state_for(self).get("faulty", True)
        if to_backend or not faulty:
            (backend_sock if to_backend else client_sock).sendall(data)
            return True
        if self.option("inject"):
            middle = len(data) // 2
            client_sock.sendall(data[:middle] + self.garbage() + data[middle:])
            return True
        client_sock.sendall(self.garbage())
        return False
