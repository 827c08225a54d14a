"""HTTP rules and replies: the ``match`` forms and the ``error`` fault's response.

Kept apart from the framers: these run when a rule is configured or fires,
not on every byte, and read more easily on their own.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any

from pytest_vaurien.echo import echo
from pytest_vaurien.errors import ConfigError
from pytest_vaurien.protocols.base import Matcher, MessageInfo

__all__ = [
    "DEFAULT_BODY",
    "HttpMatcher",
    "check_error_options",
    "error_reply",
    "parse_match",
    "standard_reason",
]

#: The body of an ``error`` reply when the rule gives none.
DEFAULT_BODY = "injected by vaurien\n"

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch  # RFC 9110 section 5.6.2
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]").search  # RFC 9110 section 5.5: not in a value
_FORMS = (
    'expected "METHOD PATH-GLOB" or "PATH-GLOB", '
    'e.g. "POST /payments/*", "GET|HEAD /health", "/health"'
)
_KEYS = ("headers", "method", "path")
_COMPUTED = frozenset({"content-length", "transfer-encoding"})

_Glob = Callable[[str], object]


class HttpMatcher:
    """A parsed HTTP ``match``: methods, a path glob and header globs, all must hold."""

    __slots__ = ("_headers", "_methods", "_path", "text")

    def __init__(
        self,
        methods: frozenset[str] | None = None,
        path: str | None = None,
        headers: Mapping[str, str] | None = None,
        text: str = "*",
    ) -> None:
        self._methods = methods
        self._path = _glob(path) if path is not None else None
        self._headers = tuple((name.lower(), _glob(glob)) for name, glob in (headers or {}).items())
        self.text = text

    def __call__(self, request: MessageInfo) -> bool:
        fields = request.fields
        if self._methods is not None and str(fields.get("method", "")).upper() not in self._methods:
            return False
        if self._path is not None and not self._path(str(fields.get("path", ""))):
            return False
        if self._headers:
            present = fields.get("headers", ())
            for name, glob in self._headers:
                if not any(n == name and glob(v) for n, v in present):
                    return False
        return True

    def __repr__(self) -> str:
        return f"HttpMatcher({self.text!r})"


def _glob(pattern: str) -> _Glob:
    """fnmatch without special slashes: ``/payments/*`` matches ``/payments/7/refund``."""
    return re.compile(fnmatch.translate(pattern)).match


def parse_match(match: object, where: str) -> Matcher:
    """A rule's ``match`` for HTTP (design.md, Protocols), checked.

    Strings: ``"METHOD PATH-GLOB"`` or ``"PATH-GLOB"``; several methods may be
    joined with ``|`` (``"GET|HEAD /x"``), as in the Redis form. Dicts: keys
    ``method`` (str or list), ``path`` (glob) and ``headers`` (name -> value
    glob; names case-insensitive, values case-sensitive; a missing header
    fails). Methods compare case-insensitively, paths and values exactly; the
    path is the raw one, without its query string and not percent-decoded.

    :raises ConfigError: starting with ``where``, naming the bad piece and the form.
    """
    if match is None:
        return HttpMatcher()
    if isinstance(match, str):
        return _parse_text(match, where)
    if isinstance(match, Mapping):
        return _parse_dict(match, where)
    raise ConfigError(
        f"{where}: {echo(match)} is a {type(match).__name__}; expected a string or a dict "
        f"with keys {', '.join(_KEYS)}"
    )


def _parse_text(match: str, where: str) -> HttpMatcher:
    words = match.split()
    if not words:
        raise ConfigError(f"{where}: the string is empty; {_FORMS}")
    if len(words) > 2:
        raise ConfigError(f"{where}: {echo(match)} has {len(words)} words; {_FORMS}")
    if len(words) == 1 and not words[0].startswith(("/", "*")):
        raise ConfigError(
            f"{where}: {echo(match)} has no path (a path starts with / or *); {_FORMS}; "
            f"every path of a method is {words[0].upper()} *"
        )
    methods = _methods([words[0]], where) if len(words) == 2 else None
    path = _path(words[-1], where)
    return HttpMatcher(methods, path, None, " ".join(words))


def _methods(values: list[str], where: str) -> frozenset[str]:
    methods = set()
    for value in values:
        for method in value.split("|"):
            if not _TOKEN(method):
                raise ConfigError(
                    f"{where}: method {echo(method)} is not an HTTP method; "
                    "expected a name such as GET or POST, several joined with |"
                )
            methods.add(method.upper())
    return frozenset(methods)


def _path(path: str, where: str) -> str:
    if not path.startswith(("/", "*")) or any(c.isspace() for c in path):
        raise ConfigError(
            f"{where}: path {echo(path)} is not a path glob; expected one starting "
            "with / or * (e.g. /payments/*; * also crosses /, the query string is not matched)"
        )
    return path


def _parse_dict(match: Mapping[Any, Any], where: str) -> HttpMatcher:
    unknown = [key for key in match if key not in _KEYS]
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(echo(k) for k in unknown)}; "
            f"known: {', '.join(_KEYS)}"
        )
    methods = None
    if "method" in match:
        value = match["method"]
        values = [value] if isinstance(value, str) else value
        if (
            not isinstance(values, (list, tuple))
            or not values
            or not all(isinstance(v, str) for v in values)
        ):
            raise ConfigError(
                f"{where}: method {echo(value)} is not a method; expected a string "
                "such as 'POST' or a list such as ['GET', 'HEAD']"
            )
        methods = _methods(list(values), where)
    path = None
    if "path" in match:
        if not isinstance(match["path"], str):
            raise ConfigError(
                f"{where}: path {echo(match['path'])} is not a path glob; expected a "
                "string starting with / or *"
            )
        path = _path(match["path"], where)
    headers = match.get("headers") or {}
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and _TOKEN(k) and isinstance(v, str) for k, v in headers.items()
    ):
        raise ConfigError(
            f"{where}: headers {echo(headers)} are not header globs; expected a dict "
            "of header name -> value glob, e.g. {'content-type': 'application/json*'}"
        )
    text = ", ".join(f"{key}={match[key]!r}" for key in _KEYS if key in match)
    return HttpMatcher(methods, path, headers, text or "*")


def standard_reason(status: int) -> str:
    """The standard reason phrase of ``status`` (RFC 9110 section 15); ``""`` if none."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def check_error_options(options: Mapping[str, Any], where: str) -> None:
    """Check the ``error`` fault's HTTP options when the rule is configured.

    :raises ConfigError: starting with ``where``, naming the bad option.
    """
    _reply_parts(options, where)


def error_reply(options: Mapping[str, Any], request: MessageInfo) -> tuple[bytes, str]:
    """The response ``error`` sends instead of the backend's, and its summary.

    HTTP/1.1 with a computed ``Content-Length`` (none for 1xx, 204 and 304,
    which have no content, RFC 9110 section 6.4.1); ``Connection: close``
    only if the request did not keep the connection alive, ``keep-alive`` to an
    HTTP/1.0 request that asked for it (RFC 9112 section 9.3); no body for HEAD.
    Options other than ``status``, ``reason``, ``headers``, ``body`` are ignored.

    :raises ConfigError: for bad options, as :func:`check_error_options`.
    """
    status, reason, headers, body = _reply_parts(options, "error")
    fields = request.fields
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{name}: {value}" for name, value in headers]
    names = {name.lower() for name, _ in headers}
    bodyless = status < 200 or status in (204, 304)
    if not bodyless:
        if body and "content-type" not in names and isinstance(options.get("body", ""), str):
            lines.append("Content-Type: text/plain; charset=utf-8")
        lines.append(f"Content-Length: {len(body)}")
    if "connection" not in names:
        if fields.get("keep_alive") is False:
            lines.append("Connection: close")
        elif fields.get("version") == "HTTP/1.0":
            lines.append("Connection: keep-alive")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
    if bodyless or fields.get("method") == "HEAD":
        return head, str(status)
    return head + body, str(status)


def _reply_parts(
    options: Mapping[str, Any], where: str
) -> tuple[int, str, list[tuple[str, str]], bytes]:
    status = options.get("status", 503)
    if isinstance(status, str) and re.fullmatch(r"[0-9]{3}", status.strip()):
        status = int(status)
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise ConfigError(
            f"{where}: status={echo(status)} is not an HTTP status; expected a number from 100 to 599"
        )
    reason = options.get("reason") or ""
    if not isinstance(reason, str) or _CONTROL(reason):
        raise ConfigError(f"{where}: reason={echo(reason)}: expected one line of text")
    reason = reason.strip() or standard_reason(status)  # the error handler's default is ""
    body = options.get("body", DEFAULT_BODY)
    if body is None:
        body = b""
    elif isinstance(body, str):
        body = body.encode("utf-8")
    elif isinstance(body, (bytes, bytearray)):
        body = bytes(body)
    else:
        raise ConfigError(f"{where}: body={echo(body)}: expected text or bytes")
    return status, reason, _headers(options.get("headers"), where), body


def _headers(value: object, where: str) -> list[tuple[str, str]]:
    """``headers`` as (name, value) pairs, without those the reply computes."""
    if value is None:
        return []
    if isinstance(value, str):
        pairs: list[tuple[object, object]] = []
        for line in value.replace("\r\n", "\n").split("\n"):
            if not line.strip():
                continue
            name, colon, text = line.partition(":")
            if not colon:
                raise ConfigError(
                    f"{where}: headers line {echo(line)} has no colon; "
                    "expected 'Name: value' lines, e.g. 'Retry-After: 5'"
                )
            pairs.append((name.strip(), text.strip(" \t")))
    elif isinstance(value, Mapping):
        pairs = list(value.items())
    else:
        raise ConfigError(
            f"{where}: headers={echo(value)}: expected a dict or 'Name: value' lines, "
            "e.g. {'Retry-After': '5'}"
        )
    headers = []
    for key, item in pairs:
        if not isinstance(key, str) or not _TOKEN(key):
            raise ConfigError(f"{where}: header name {echo(key)} is not a field name (RFC 9110)")
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise ConfigError(f"{where}: header {key}={echo(item)}: expected text or a number")
        line = str(item).strip(" \t")
        if _CONTROL(line):  # a CR or LF would let a value inject lines into the reply
            raise ConfigError(f"{where}: header {key}={echo(line)} has a control character")
        if key.lower() not in _COMPUTED:
            headers.append((key, line))
    return headers
