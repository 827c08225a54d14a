"""The control API: HTTP and JSON over gevent's WSGI server, in a thread of its own.

``ControlServer(control, "127.0.0.1", 8474).start()`` serves the native API
under ``/v1``, toxiproxy 2.x's dialect and vaurien 1.x's ``/behavior`` on one
port. The server has its own thread and hub, so a slow or broken client of the
API stalls neither the proxies nor the other clients; operations that wait
(starting, stopping, taking a proxy down) run in the hub's thread pool.

Every call is checked before it reaches a route: the token (401), browsers
(403), the body's size (413) and type (415), JSON that does not parse (400).
"""

from __future__ import annotations

import hmac
import socket
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import gevent
import gevent.pywsgi
import gevent.socket

from pytest_vaurien.address import format_address
from pytest_vaurien.control import Control, ControlError
from pytest_vaurien.engine.native import NativeEvent, allocate_lock, start_native_thread
from pytest_vaurien.errors import ProxyError
from pytest_vaurien.routes import Dialect, Request, Response, Route
from pytest_vaurien.toxiproxy import toxiproxy_dialect

__all__ = ["MAX_BODY", "ControlServer", "make_app"]

#: Request bodies larger than this are refused (413).
MAX_BODY = 1024 * 1024
#: A client of the API that sends nothing for this long is dropped.
CLIENT_TIMEOUT = 30.0
START_TIMEOUT = 10.0
#: Everything a browser sends starts so; nothing else does.
BROWSER = "Mozilla/"
STATUS_TEXT = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    500: "Internal Server Error",
}

#: Runs a function that may block (start, stop, down) off the API's hub.
Offload = Callable[[Callable[[], Any]], Any]


def _since(request: Request) -> int | None:
    value = request.query.get("since")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ControlError(
            400, f"since={value!r} is not valid; expected an index, a whole number", "since", value
        ) from None


def _body(request: Request) -> object:
    try:
        return request.json()
    except ValueError as error:
        raise ControlError(400, f"the body is not valid JSON: {error}", None, None) from None
    except RecursionError:
        raise ControlError(400, "the body is JSON nested too deep", None, None) from None


def native_dialect(control: Control, offload: Offload, sleep: Callable[[float], object]) -> Dialect:
    """The native API, under ``/v1``."""

    def info(request: Request) -> Response:
        return Response(200, control.info())

    def proxies(request: Request) -> Response:
        return Response(200, {"proxies": [control.to_json(p) for p in control.proxies()]})

    def create(request: Request) -> Response:
        body = _body(request)
        proxy = offload(lambda: control.create(body))
        return Response(201, control.to_json(proxy), {"Location": f"/v1/proxies/{proxy.name}"})

    def one(request: Request, name: str) -> Response:
        return Response(200, control.to_json(control.get(name)))

    def patch(request: Request, name: str) -> Response:
        body = _body(request)
        return Response(200, control.to_json(offload(lambda: control.patch(name, body))))

    def replace(request: Request, name: str) -> Response:
        body = _body(request)
        return Response(200, control.to_json(offload(lambda: control.replace(name, body))))

    def delete(request: Request, name: str) -> Response:
        offload(lambda: control.delete(name))
        return Response(204)

    def rules(request: Request, name: str) -> Response:
        return Response(200, {"rules": [rule.describe() for rule in control.get(name).rules]})

    def set_rules(request: Request, name: str) -> Response:
        body = _body(request)
        new = offload(lambda: control.set_rules(name, body))
        return Response(200, {"rules": [rule.describe() for rule in new]})

    def add_rule(request: Request, name: str) -> Response:
        body = _body(request)
        return Response(201, offload(lambda: control.add_rule(name, body)).describe())

    def remove_rule(request: Request, name: str, rule: str) -> Response:
        offload(lambda: control.remove_rule(name, rule))
        return Response(204)

    def connections(request: Request, name: str) -> Response:
        return Response(200, {"connections": control.connections(name, _since(request))})

    def exchanges(request: Request, name: str) -> Response:
        return Response(200, {"exchanges": control.exchanges(name, _since(request))})

    def wait(request: Request, name: str) -> Response:
        return Response(200, control.wait(name, _body(request), sleep))

    def reset(request: Request) -> Response:
        offload(control.reset)
        return Response(204)

    def error(status: int, message: str, field: str | None, value: object) -> Response:
        return Response(status, ControlError(status, message, field, value).to_json())

    named = "/v1/proxies/{name}"
    return Dialect(
        "native",
        [
            Route("GET", "/v1", info),
            Route("GET", "/v1/proxies", proxies),
            Route("POST", "/v1/proxies", create),
            Route("GET", named, one),
            Route("PATCH", named, patch),
            Route("PUT", named, replace),
            Route("DELETE", named, delete),
            Route("GET", f"{named}/rules", rules),
            Route("PUT", f"{named}/rules", set_rules),
            Route("POST", f"{named}/rules", add_rule),
            Route("DELETE", f"{named}/rules/{{rule}}", remove_rule),
            Route("GET", f"{named}/connections", connections),
            Route("GET", f"{named}/exchanges", exchanges),
            Route("POST", f"{named}/wait", wait),
            Route("POST", "/v1/reset", reset),
        ],
        error,
    )


#: The proxy vaurien 1.x's ``/behavior`` acts on: the one of ``--local``/``--distant``.
DEFAULT_PROXY = "default"


def legacy_dialect(control: Control) -> Dialect:
    """vaurien 1.x's ``GET``/``PUT /behavior`` and ``GET /behaviors``."""

    def behavior(request: Request) -> Response:
        return Response(200, {"behavior": control.get(DEFAULT_PROXY).behavior})

    def set_behavior(request: Request) -> Response:
        body = _body(request)
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise ControlError(400, 'the body should be an object with a "name" key', "name", body)
        options = {key: value for key, value in body.items() if key != "name"}
        name: str = body["name"]
        spec = name if ":" in name else f"100:{name}"
        control.patch(
            DEFAULT_PROXY,
            {"behavior": spec, "options": {name.split(":")[-1]: options}}
            if options
            else {"behavior": spec},
        )
        return Response(200, {"status": "ok"})

    def behaviors(request: Request) -> Response:
        return Response(200, {"behaviors": control.registry.names})

    def error(status: int, message: str, field: str | None, value: object) -> Response:
        return Response(
            status,
            {
                "status": "error",
                "errors": [{"location": "body", "name": field or "", "description": message}],
            },
        )

    return Dialect(
        "vaurien 1.x",
        [
            Route("GET", "/behavior", behavior),
            Route("PUT", "/behavior", set_behavior),
            Route("GET", "/behaviors", behaviors),
        ],
        error,
    )


def make_app(
    dialects: Sequence[Dialect],
    *,
    token: str | None = None,
) -> Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]:
    """The WSGI application: checks every call, then finds its route.

    A path no dialect has is answered in the dialect that owns its prefix:
    the native one for ``/v1``, else the first other one.
    """
    native = next((d for d in dialects if d.name == "native"), dialects[0])
    others = [d for d in dialects if d is not native] or [native]

    def owner(path: str) -> Dialect:
        if path == "/v1" or path.startswith("/v1/"):
            return native
        return others[0]

    def refuse(dialect: Dialect, status: int, message: str, field: str | None = None) -> Response:
        return dialect.error(status, message, field, None)

    def respond(environ: dict[str, Any]) -> Response:
        path = environ.get("PATH_INFO", "/") or "/"
        raw_path = _raw_path(environ)
        method = environ["REQUEST_METHOD"].upper()
        dialect = owner(path)
        if token is not None:
            given = environ.get("HTTP_AUTHORIZATION", "")
            scheme, _, credential = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                credential.strip().encode(), token.encode()
            ):
                response = refuse(
                    dialect, 401, "missing or wrong token; send Authorization: Bearer TOKEN"
                )
                response.headers["WWW-Authenticate"] = 'Bearer realm="vaurien"'
                return response
        if environ.get("HTTP_USER_AGENT", "").startswith(BROWSER):
            return refuse(dialect, 403, "browsers may not use the control API")
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return refuse(dialect, 400, "Content-Length is not a number")
        if length > MAX_BODY:
            return refuse(dialect, 413, f"the body is over {MAX_BODY} bytes")
        stream = environ["wsgi.input"]
        body = stream.read(MAX_BODY + 1) if length or _chunked(environ) else b""
        if len(body) > MAX_BODY:
            return refuse(dialect, 413, f"the body is over {MAX_BODY} bytes")
        if body.strip():
            kind = environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
            if kind != "application/json":
                return refuse(
                    dialect,
                    415,
                    f"the body is {kind or 'of no declared type'}; expected application/json",
                )
        request = Request.from_environ(environ, body)
        for candidate in [dialect, *(d for d in dialects if d is not dialect)]:
            found = candidate.find(method, raw_path)
            if found is None:
                continue
            if isinstance(found, list):
                response = refuse(
                    candidate,
                    405,
                    f"{method} is not allowed on {path}; allowed: {', '.join(found)}",
                )
                response.headers["Allow"] = ", ".join(found)
                return response
            route, pieces = found
            try:
                return route.handler(request, **pieces)
            except ControlError as error:
                response = candidate.error(error.status, error.message, error.field, error.value)
                if isinstance(response.body, dict):
                    response.body.update(error.extra)
                return response
        return refuse(dialect, 404, f"no such call: {method} {path}")

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            response = respond(environ)
        except Exception as error:  # a bug must answer 500, never kill the server
            print(f"vaurien control: {error!r}", file=sys.stderr)
            response = owner(environ.get("PATH_INFO", "/")).error(
                500, f"internal error: {error}", None, None
            )
        data = response.encoded()
        headers = [*response.headers.items(), ("Content-Length", str(len(data)))]
        kind = response.content_type()
        if kind is not None:
            headers.append(("Content-Type", kind))
        start_response(f"{response.status} {STATUS_TEXT.get(response.status, '')}", headers)
        return [data]

    return app


#: Where ``_Handler`` keeps the path as the client wrote it, escapes and all.
RAW_PATH = "vaurien.raw_path"


def _raw_path(environ: Mapping[str, Any]) -> str:
    """The path with its escapes, so that a name with ``/`` or ``%`` in it is
    one piece, decoded once (``PATH_INFO`` is decoded already)."""
    raw = environ.get(RAW_PATH)
    if raw is not None:
        return str(raw) or "/"
    path = environ.get("PATH_INFO", "/") or "/"
    return quote(path.encode("latin-1", "replace"), safe="/:@!$&'()*+,;=-._~")


class _Handler(gevent.pywsgi.WSGIHandler):  # type: ignore[misc]
    """Keeps the raw path beside ``PATH_INFO``."""

    def get_environ(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environ()
        environ[RAW_PATH] = self.path.split("?", 1)[0]
        return environ


def _chunked(environ: Mapping[str, Any]) -> bool:
    return "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()


def _captured(func: Callable[[], Any]) -> tuple[bool, Any]:
    try:
        return True, func()
    except Exception as error:
        return False, error


class _Server(gevent.pywsgi.WSGIServer):  # type: ignore[misc]
    """Drops a client of the API that sends nothing for ``CLIENT_TIMEOUT``;
    answers without Nagle's delay."""

    def handle(self, sock: gevent.socket.socket, address: Any) -> None:
        sock.settimeout(CLIENT_TIMEOUT)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # the head and the body leave in two writes: without this, the
            # second waits for the client's delayed ACK (40 ms a call)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().handle(sock, address)


class ControlServer:
    """The control API of ``control`` on ``host:port``, in a thread of its own.

    :param token: required as ``Authorization: Bearer TOKEN`` on every call;
        needed unless ``host`` is a loopback address.
    :raises ProxyError: from ``start()`` when it cannot listen.
    """

    def __init__(
        self,
        control: Control,
        host: str = "127.0.0.1",
        port: int = 8474,
        *,
        token: str | None = None,
        dialects: Callable[[Control, Offload, Callable[[float], object]], Sequence[Dialect]]
        | None = None,
    ) -> None:
        self.control = control
        self.host = host
        self.port = port
        self.token = token
        self._dialects = dialects or default_dialects
        self._server: gevent.pywsgi.WSGIServer | None = None
        self._hub: Any = None
        self._done = NativeEvent()
        self._stopped = False
        self._lock = allocate_lock()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{format_address((self.host, self.port))}"

    def start(self) -> ControlServer:
        ready = NativeEvent()
        start_native_thread(lambda: self._run(ready), "vaurien-control")
        if not ready.wait(START_TIMEOUT) or self._error is not None:
            raise ProxyError(
                f"control API: cannot listen on {format_address((self.host, self.port))}: "
                f"{self._error}"
            )
        return self

    def _run(self, ready: NativeEvent) -> None:
        hub = gevent.get_hub()
        try:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            listener = gevent.socket.socket(family, socket.SOCK_STREAM)
            try:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind((self.host, self.port))
                listener.listen(128)
            except OSError as error:
                listener.close()
                self._error = error
                return
            self.port = listener.getsockname()[1]
            pool = hub.threadpool

            def offload(func: Callable[[], Any]) -> Any:
                """Run ``func`` in a pool thread; its error is raised here, not printed there."""
                ok, value = pool.spawn(_captured, func).get()
                if not ok:
                    raise value
                return value

            app = make_app(self._dialects(self.control, offload, gevent.sleep), token=self.token)
            server = _Server(listener, app, log=None, error_log=None, handler_class=_Handler)
            with self._lock:
                self._server, self._hub = server, hub
            ready.set()
            server.serve_forever()
        except BaseException as error:
            self._error = self._error or error
        finally:
            with self._lock:
                self._hub = None
            ready.set()
            hub.destroy(destroy_loop=True)
            self._done.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving (the proxies are the control's to stop)."""
        with self._lock:
            if self._hub is None or self._server is None:
                return
            self._hub.loop.run_callback_threadsafe(gevent.spawn, self._server.stop, 1.0)
        self._done.wait(timeout)


def default_dialects(
    control: Control, offload: Offload, sleep: Callable[[float], object]
) -> list[Dialect]:
    """Native, then toxiproxy's, then vaurien 1.x's."""
    return [
        native_dialect(control, offload, sleep),
        toxiproxy_dialect(control, offload),
        legacy_dialect(control),
    ]
