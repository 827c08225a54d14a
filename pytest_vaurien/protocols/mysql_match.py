"""MySQL rules and errors: the ``match`` forms, the ``error`` fault's ERR
packet, and the ROLLBACK that keeps the server in step with it.

Kept apart from the framers: these run when a rule is configured or fires,
not on every byte.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pytest_vaurien.echo import echo
from pytest_vaurien.errors import ConfigError
from pytest_vaurien.protocols.base import Matcher, MessageInfo
from pytest_vaurien.protocols.sql_match import parse_sql_match

__all__ = [
    "ERRORS",
    "check_error_options",
    "error_reply",
    "parse_match",
    "rollback_request",
]

#: errno -> (SQLSTATE, the server's message), for the defaults. Client-side
#: codes (2006, 2013) are not here: a server never sends them.
ERRORS: dict[int, tuple[str, str]] = {
    1213: ("40001", "Deadlock found when trying to get lock; try restarting transaction"),
    1205: ("HY000", "Lock wait timeout exceeded; try restarting transaction"),
    1040: ("08004", "Too many connections"),
    1290: (
        "HY000",
        "The MariaDB server is running with the --read-only option "
        "so it cannot execute this statement",
    ),
    1792: ("25006", "Cannot execute statement in a READ ONLY transaction"),
    1062: ("23000", "Duplicate entry"),
    1146: ("42S02", "Table doesn't exist"),
    1317: ("70100", "Query execution was interrupted"),
    1927: ("70100", "Connection was killed"),
    1053: ("08S01", "Server shutdown in progress"),
}

DEFAULT_ERRNO = 1213
_SQLSTATE = re.compile(r"[0-9A-Z]{5}").fullmatch


def parse_match(match: object, where: str) -> Matcher:
    """A rule's ``match`` for MySQL (design.md, Protocols), checked.

    A string is a regex searched case-insensitively in the SQL of a query,
    a prepare, or the statement an execute runs; a dict has keys ``sql``
    (the same regex) and ``in_transaction`` (bool, from the server status
    of the last OK/EOF). The handshake never matches.

    :raises ConfigError: starting with ``where``, naming the bad piece.
    """
    return parse_sql_match(match, where, _counts)


def _counts(fields: Mapping[str, Any]) -> bool:
    """Commands after the handshake (and never one that gets no reply)."""
    return not fields.get("handshake") and "command" in fields


def _options(options: Mapping[str, Any], where: str) -> tuple[int, str, str]:
    """(errno, sqlstate, message), checked; ``""`` means the default."""
    errno = options.get("errno") or DEFAULT_ERRNO
    if isinstance(errno, str) and errno.strip().isdigit():
        errno = int(errno)
    if isinstance(errno, bool) or not isinstance(errno, int) or not 1 <= errno <= 0xFFFF:
        raise ConfigError(
            f"{where}: errno={echo(errno)} is not a MySQL error number; expected an int "
            "such as 1213 (deadlock), 1205 (lock wait timeout), 1290 (read-only)"
        )
    known_state, known_text = ERRORS.get(errno, ("HY000", f"Error {errno}"))
    sqlstate = options.get("sqlstate") or known_state
    if not isinstance(sqlstate, str) or not _SQLSTATE(sqlstate.strip().upper()):
        raise ConfigError(
            f"{where}: sqlstate={echo(sqlstate)} is not an SQLSTATE; expected five digits "
            "or capital letters, e.g. '40001', 'HY000'"
        )
    message = options.get("message") or f"{known_text} (injected by vaurien)"
    if not isinstance(message, str):
        raise ConfigError(f"{where}: message={echo(message)}: expected text")
    return errno, sqlstate.strip().upper(), message


def check_error_options(options: Mapping[str, Any], where: str) -> None:
    """Check ``errno``, ``sqlstate`` and ``message`` when the rule is configured.

    :raises ConfigError: starting with ``where``, naming the bad option.
    """
    _options(options, where)


def packet(seq: int, payload: bytes) -> bytes:
    """One packet (the payloads here are short: no continuation)."""
    return len(payload).to_bytes(3, "little") + bytes([seq & 0xFF]) + payload


def error_reply(options: Mapping[str, Any], request: MessageInfo) -> tuple[bytes, str]:
    """The ERR packet the proxy sends instead of the server's reply, and ``"ERR errno"``;
    its sequence id follows the request's last, as the server's would."""
    errno, sqlstate, message = _options(options, "error")
    seq = request.fields.get("_seq", 0)
    seq = seq + 1 if isinstance(seq, int) else 1
    body = b"\xff" + errno.to_bytes(2, "little") + b"#" + sqlstate.encode() + message.encode()
    return packet(seq, body[: 0xFFFFFF - 1]), f"ERR {errno}"


def rollback_request(
    options: Mapping[str, Any], request: MessageInfo
) -> tuple[bytes, bytes] | None:
    """Inside a transaction a deadlock (1213) rolls the whole transaction back
    in InnoDB: ``(COM_QUERY ROLLBACK, the ERR packet)`` to send to the server
    and to answer the client; ``None`` elsewhere (1205 rolls back only the
    statement, which the server never saw)."""
    fields = request.fields
    if not fields.get("in_transaction") or fields.get("noreply"):
        return None
    errno, _, _ = _options(options, "error")
    if errno != 1213:
        return None
    reply, _ = error_reply(options, request)
    return packet(0, b"\x03ROLLBACK"), reply
