"""The few pieces of HTTP the control API needs: a request, a response, routes.

A route is a method, a path pattern and a function from the request (and the
path's pieces) to a response. Each dialect of the API (native under ``/v1``,
toxiproxy's, vaurien 1.x's) is a list of routes with its own way of saying an
error. Pure: no sockets, no gevent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

__all__ = ["Dialect", "Request", "Response", "Route", "json_response"]

#: What a route's function may take from a request.
Handler = Callable[..., "Response"]


@dataclass
class Request:
    """An HTTP request to the API, its body read (and bounded) already."""

    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    @classmethod
    def from_environ(cls, environ: Mapping[str, Any], body: bytes) -> Request:
        headers = {
            key[5:].replace("_", "-").lower(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        raw_path = environ.get("PATH_INFO", "/") or "/"
        query = {
            key: values[-1] for key, values in parse_qs(environ.get("QUERY_STRING", "")).items()
        }
        return cls(environ["REQUEST_METHOD"].upper(), raw_path, query, headers, body)

    def json(self, default: object = None) -> object:
        """The body decoded; ``default`` when there is none.

        :raises ValueError: for a body that is not JSON (the caller says 400).
        """
        if not self.body.strip():
            return default
        return json.loads(self.body)


@dataclass
class Response:
    """What a route answers: a status, a JSON body (or text), headers."""

    status: int
    body: object = None
    headers: dict[str, str] = field(default_factory=dict)
    #: The body as plain text rather than JSON (toxiproxy's ``/version`` of old).
    text: str | None = None

    def encoded(self) -> bytes:
        if self.text is not None:
            return self.text.encode()
        if self.status == 204 or self.body is None:
            return b""
        return json.dumps(self.body, default=str).encode() + b"\n"

    def content_type(self) -> str | None:
        if self.text is not None:
            return "text/plain; charset=utf-8"
        if self.status == 204 or self.body is None:
            return None
        return "application/json"


def json_response(status: int, body: object = None) -> Response:
    return Response(status, body)


@dataclass
class Route:
    """``Route("GET", "/v1/proxies/{name}", get_proxy)``."""

    method: str
    pattern: str
    handler: Handler
    regex: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.pattern)
        self.regex = re.compile(f"{regex}/?")

    def match(self, path: str) -> dict[str, str] | None:
        found = self.regex.fullmatch(path)
        if found is None:
            return None
        return {key: unquote(value) for key, value in found.groupdict().items()}


@dataclass
class Dialect:
    """A set of routes and how its errors look."""

    name: str
    routes: Sequence[Route]
    #: ``(status, message, field, value) -> Response``
    error: Callable[[int, str, str | None, object], Response]

    def find(self, method: str, path: str) -> tuple[Route, dict[str, str]] | list[str] | None:
        """The route for ``method`` and ``path`` with its pieces; the methods
        the path allows if ``method`` is not one; ``None`` if no route has it."""
        allowed = []
        for route in self.routes:
            pieces = route.match(path)
            if pieces is None:
                continue
            if route.method == method:
                return route, pieces
            allowed.append(route.method)
        return allowed or None
