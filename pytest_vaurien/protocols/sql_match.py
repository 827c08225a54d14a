"""The ``match`` of the SQL protocols (PostgreSQL, MySQL): a regex on the SQL,
and whether a transaction is open. Pure.

The two protocols differ only in which requests a rule may count at all
(``counts``): PostgreSQL's queries, Executes and function calls, MySQL's
commands after the handshake.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from pytest_vaurien.echo import echo
from pytest_vaurien.errors import ConfigError
from pytest_vaurien.protocols.base import Matcher, MessageInfo

__all__ = ["SqlMatcher", "parse_sql_match"]

_KEYS = ("in_transaction", "sql")


class SqlMatcher:
    """A parsed ``match``: an SQL regex and/or a transaction state."""

    __slots__ = ("_counts", "_in_transaction", "_sql", "text")

    def __init__(
        self,
        sql: re.Pattern[str] | None,
        in_transaction: bool | None,
        text: str,
        counts: Callable[[Mapping[str, Any]], bool],
    ) -> None:
        self._sql = sql
        self._in_transaction = in_transaction
        self.text = text
        self._counts = counts

    def __call__(self, request: MessageInfo) -> bool:
        fields = request.fields
        if not self._counts(fields):
            return False
        if self._sql is not None:
            sql = fields.get("sql")
            if not isinstance(sql, str) or not self._sql.search(sql):
                return False
        return self._in_transaction is None or fields.get("in_transaction") is self._in_transaction

    def __repr__(self) -> str:
        return f"SqlMatcher({self.text!r})"


def _regex(value: object, where: str) -> re.Pattern[str]:
    if not isinstance(value, str) or not value:
        raise ConfigError(
            f"{where}: sql {echo(value)} is not a regex; expected a non-empty string "
            "searched case-insensitively in the SQL, e.g. '^UPDATE accounts'"
        )
    try:
        return re.compile(value, re.IGNORECASE)
    except re.error as error:
        raise ConfigError(f"{where}: sql regex {echo(value)} does not compile: {error}") from None


def parse_sql_match(
    match: object, where: str, counts: Callable[[Mapping[str, Any]], bool]
) -> Matcher:
    """A string (a regex searched case-insensitively in the SQL) or a dict
    with ``sql`` and ``in_transaction``.

    :raises ConfigError: starting with ``where``, naming the bad piece.
    """
    if isinstance(match, str):
        return SqlMatcher(_regex(match, where), None, match, counts)
    if isinstance(match, Mapping):
        unknown = [key for key in match if key not in _KEYS]
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {', '.join(echo(k) for k in unknown)}; "
                f"known: {', '.join(_KEYS)}"
            )
        sql = _regex(match["sql"], where) if "sql" in match else None
        state = match.get("in_transaction")
        if state is not None and not isinstance(state, bool):
            raise ConfigError(
                f"{where}: in_transaction {echo(state)} is not a bool; expected True or False"
            )
        text = ", ".join(f"{key}={match[key]!r}" for key in _KEYS if key in match)
        return SqlMatcher(sql, state, text or "*", counts)
    if match is None:
        return SqlMatcher(None, None, "*", counts)
    raise ConfigError(
        f"{where}: {echo(match)} is a {type(match).__name__}; expected an SQL regex "
        f"string or a dict with keys {', '.join(_KEYS)}"
    )
