"""PostgreSQL rules and errors: the ``match`` forms, the ``error`` fault's reply,
and the statement that makes the server raise that error itself.

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
    "CONDITIONS",
    "check_error_options",
    "error_reply",
    "error_request",
    "parse_match",
]

#: SQLSTATE -> condition name (PostgreSQL's errcodes.txt), for the default message.
CONDITIONS: dict[str, str] = {
    "40001": "serialization_failure",
    "40P01": "deadlock_detected",
    "40000": "transaction_rollback",
    "40002": "transaction_integrity_constraint_violation",
    "40003": "statement_completion_unknown",
    "57P01": "admin_shutdown",
    "57P02": "crash_shutdown",
    "57P03": "cannot_connect_now",
    "57014": "query_canceled",
    "53000": "insufficient_resources",
    "53100": "disk_full",
    "53200": "out_of_memory",
    "53300": "too_many_connections",
    "08000": "connection_exception",
    "08003": "connection_does_not_exist",
    "08006": "connection_failure",
    "25006": "read_only_sql_transaction",
    "25P02": "in_failed_sql_transaction",
    "55P03": "lock_not_available",
    "55006": "object_in_use",
    "23505": "unique_violation",
    "23503": "foreign_key_violation",
    "23502": "not_null_violation",
    "23514": "check_violation",
    "22012": "division_by_zero",
    "42P01": "undefined_table",
    "42703": "undefined_column",
    "42601": "syntax_error",
    "42501": "insufficient_privilege",
    "28P01": "invalid_password",
    "XX000": "internal_error",
}

DEFAULT_SQLSTATE = "40001"
SEVERITIES = ("ERROR", "FATAL", "PANIC")
_SQLSTATE = re.compile(r"[0-9A-Z]{5}").fullmatch
#: The requests a rule can name: the handshake, Sync, Flush... are none of them.
_UNITS = frozenset({"query", "execute", "function"})


def parse_match(match: object, where: str) -> Matcher:
    """A rule's ``match`` for PostgreSQL (design.md, Protocols), checked.

    A string is a regex searched case-insensitively in the SQL of a simple
    Query or of the statement an Execute runs; a dict has keys ``sql`` (the
    same regex) and ``in_transaction`` (bool, from the server's last
    ReadyForQuery). Only queries, Executes and function calls match.

    :raises ConfigError: starting with ``where``, naming the bad piece.
    """
    return parse_sql_match(match, where, _counts)


def _counts(fields: Mapping[str, Any]) -> bool:
    """Queries, Executes and function calls: not the handshake, a Sync, a skipped request."""
    return fields.get("kind") in _UNITS and not fields.get("skipped")


def _options(options: Mapping[str, Any], where: str) -> tuple[str, str, str]:
    """(severity, sqlstate, message), checked; ``""`` means the default."""
    sqlstate = options.get("sqlstate") or DEFAULT_SQLSTATE
    if not isinstance(sqlstate, str) or not _SQLSTATE(sqlstate.strip().upper()):
        raise ConfigError(
            f"{where}: sqlstate={echo(sqlstate)} is not an SQLSTATE; expected five digits "
            "or capital letters, e.g. '40001' (serialization_failure), '40P01', '57P01'"
        )
    sqlstate = sqlstate.strip().upper()
    severity = options.get("severity") or "ERROR"
    if not isinstance(severity, str) or severity.strip().upper() not in SEVERITIES:
        raise ConfigError(
            f"{where}: severity={echo(severity)}: expected one of {', '.join(SEVERITIES)}"
        )
    message = options.get("message") or ""
    if not isinstance(message, str) or "\0" in message:
        raise ConfigError(f"{where}: message={echo(message)}: expected text without NUL")
    if not message:
        message = f"{CONDITIONS.get(sqlstate, 'error ' + sqlstate)} (injected by vaurien)"
    return severity.strip().upper(), sqlstate, message


def check_error_options(options: Mapping[str, Any], where: str) -> None:
    """Check ``sqlstate``, ``severity`` and ``message`` when the rule is configured.

    :raises ConfigError: starting with ``where``, naming the bad option.
    """
    _options(options, where)


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + (len(body) + 4).to_bytes(4, "big") + body


def error_reply(options: Mapping[str, Any], request: MessageInfo) -> tuple[bytes, str]:
    """The ErrorResponse the proxy sends instead of the server's, and ``"E SQLSTATE"``.

    A simple query (or function call) is then ready again, as the server
    would say (ReadyForQuery); an extended-protocol Execute gets the error
    alone, the server's Sync answering the rest of the batch. FATAL and
    PANIC are followed by nothing: the server would close the connection.
    """
    severity, sqlstate, message = _options(options, "error")
    text = message.encode("utf-8")
    body = b"S%s\0V%s\0C%s\0M%s\0\0" % (
        severity.encode(),
        severity.encode(),
        sqlstate.encode(),
        text,
    )
    reply = _message(b"E", body)
    fields = request.fields
    if severity == "ERROR" and fields.get("kind") in ("query", "function"):
        reply += _message(b"Z", b"E" if fields.get("in_transaction") else b"I")
    return reply, f"E {sqlstate}"


def _dollar(text: str, stem: str) -> str:
    """A dollar-quote tag that ``text`` does not contain."""
    tag, n = f"${stem}$", 0
    while tag in text:
        n += 1
        tag = f"${stem}{n}$"
    return tag


def error_request(options: Mapping[str, Any], request: MessageInfo) -> bytes | None:
    """Inside a transaction, a simple Query making the server raise the error
    itself, so that server and client agree the transaction failed (and the
    client's ROLLBACK works); ``None`` elsewhere: the proxy answers."""
    fields = request.fields
    if fields.get("kind") != "query" or not fields.get("in_transaction"):
        return None
    severity, sqlstate, message = _options(options, "error")
    if severity != "ERROR":  # RAISE cannot end a session: the proxy answers
        return None
    quote = _dollar(message, "m")
    block = f"BEGIN RAISE EXCEPTION USING ERRCODE = '{sqlstate}', MESSAGE = {quote}{message}{quote}; END"
    outer = _dollar(block, "vaurien")
    sql = f"DO {outer} {block} {outer};"
    return _message(b"Q", sql.encode("utf-8") + b"\0")
