"""A client of the native control API (``vaurien --control``), on the standard library.

``Client("http://127.0.0.1:8474")`` talks to a ``vaurien`` process running
elsewhere; ``client.proxy("db")`` is a :class:`RemoteProxy` with the verbs of
the in-process :class:`~pytest_vaurien.Proxy` where they make sense::

    client = Client("http://127.0.0.1:8474")
    with client.create("db", upstream="127.0.0.1:5432") as db:
        with db.add_rule("abort; schedule=first:2; name=flaky"):
            ...  # connect to db.address: the first two connections are aborted
            db.wait("flaky", 2)
        with db.set_behavior("100:delay", delay__sleep=0.5):
            ...
        with db.down():
            ...  # connections to db.address are refused

Reads are fresh: each read of ``proxy.behavior``, ``proxy.accepted``,
``rule.fired`` ... asks the server (one request). Every failure of a call
raises :class:`ControlClientError` (a wait that times out, a
:class:`WaitTimeout`, also a ``TimeoutError``). A client holds no connection
between calls and may be shared by threads. No gevent, no pytest.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import fields
from typing import Any
from urllib.parse import quote, urlsplit

from pytest_vaurien import __version__
from pytest_vaurien.address import Address, format_address, parse_address
from pytest_vaurien.errors import ConfigError, VaurienError
from pytest_vaurien.records import ConnectionRecord, Ending, ExchangeRecord, Stats
from pytest_vaurien.rules import Rule
from pytest_vaurien.settings import parse_marker_options

__all__ = [
    "DEFAULT_URL",
    "USER_AGENT",
    "Client",
    "ControlClientError",
    "RemoteProxy",
    "RemoteRule",
    "WaitTimeout",
    "connection_from_json",
    "exchange_from_json",
    "rule_to_json",
]

DEFAULT_URL = "http://127.0.0.1:8474"
#: Never ``Mozilla/...``: the API refuses browsers.
USER_AGENT = f"pytest-vaurien/{__version__}"
#: Hosts a proxy may listen on that a client cannot connect to as such.
_WILDCARDS = ("0.0.0.0", "::", "")

#: A decoded JSON value.
JSON = Any


class ControlClientError(VaurienError):
    """A call to the control API failed.

    ``status`` is the HTTP status (``None`` when no answer came: the server
    is not there, or too slow); ``message``, ``field`` and ``value`` come
    from the native error body; ``body`` is that body whole. Its ``str`` is
    one line: ``HTTP 404: no proxy named 'x'; known: a, b``.
    """

    def __init__(
        self,
        status: int | None,
        message: str,
        field: str | None = None,
        value: object = None,
        body: JSON = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.value = value
        self.body = body

    def __str__(self) -> str:
        line = " ".join(self.message.split())  # one line, whatever the server said
        return line if self.status is None else f"HTTP {self.status}: {line}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.status, self.message, self.field, self.value, self.body))


class WaitTimeout(ControlClientError, TimeoutError):
    """``wait()`` timed out (HTTP 408); ``counts`` says where the proxy stood."""

    @property
    def counts(self) -> dict[str, Any]:
        body = self.body if isinstance(self.body, dict) else {}
        return {key: value for key, value in body.items() if key not in ("error", "status")}


def rule_to_json(rule: Rule | str | Mapping[str, Any]) -> JSON:
    """A rule as the API takes it: its string form, or an object.

    A :class:`~pytest_vaurien.Rule` becomes an object (its options keep
    their types); a string or a dict is sent as it is.
    """
    if isinstance(rule, str):
        return rule
    if isinstance(rule, Rule):
        data: dict[str, Any] = {"fault": rule.fault}
        if rule.options:
            data["options"] = dict(rule.options)
        if rule.match is not None:
            data["match"] = rule.match
        if rule.schedule.text:
            data["schedule"] = rule.schedule.text
        if rule.percent != 100:
            data["percent"] = rule.percent
        if rule.per != "rule":
            data["per"] = rule.per
        if rule.given_name:
            data["name"] = rule.given_name
        return data
    if isinstance(rule, Mapping):
        return dict(rule)
    raise ConfigError(
        f"add_rule(): {rule!r} is not a rule; expected a pytest_vaurien.Rule, its string form "
        "or a dict"
    )


def _known_fields(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    names = {item.name for item in fields(cls)}
    return {key: value for key, value in data.items() if key in names}


def connection_from_json(data: Mapping[str, Any]) -> ConnectionRecord:
    """A :class:`~pytest_vaurien.records.ConnectionRecord` from the API's JSON
    (keys it does not know are left out)."""
    values = _known_fields(ConnectionRecord, data)
    ending = values.get("ending")
    if ending is not None:
        try:
            values["ending"] = Ending(ending)
        except ValueError:  # an ending this version does not know: keep the words
            values["ending"] = None
            values["error"] = f"{ending}: {values.get('error') or ''}".rstrip(": ")
    return ConnectionRecord(**values)


def exchange_from_json(data: Mapping[str, Any]) -> ExchangeRecord:
    """An :class:`~pytest_vaurien.records.ExchangeRecord` from the API's JSON."""
    return ExchangeRecord(**_known_fields(ExchangeRecord, data))


def _options_json(options: Mapping[str, Any], where: str) -> dict[str, dict[str, Any]]:
    """``{"delay__sleep": 2}`` -> ``{"delay": {"sleep": 2}}``, checked as the
    in-process ``set_behavior`` checks them."""
    nested: dict[str, dict[str, Any]] = {}
    for (handler, option), value in parse_marker_options(options, where).items():
        nested.setdefault(handler, {})[option] = value
    return nested


def _rule_name(rule: RemoteRule | Rule | str) -> str:
    return rule if isinstance(rule, str) else rule.name


class Client:
    """The native control API at ``url`` (``http://HOST:PORT``, or ``https://``).

    :param token: sent as ``Authorization: Bearer TOKEN`` on every call.
    :param timeout: seconds a call may take (a ``wait`` gets its own
        timeout on top).
    """

    def __init__(
        self, url: str = DEFAULT_URL, token: str | None = None, timeout: float = 10.0
    ) -> None:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"control API URL {url!r} is not valid; expected http://HOST:PORT such as "
                f"{DEFAULT_URL}"
            )
        try:
            parts.port  # noqa: B018 - raises for a port that is not a number
        except ValueError:
            raise ConfigError(f"control API URL {url!r} has a port that is not valid") from None
        self.url = url.strip().rstrip("/")
        self.token = token
        self.timeout = timeout
        self._parts = parts
        self._prefix = parts.path.rstrip("/")

    def __repr__(self) -> str:
        return f"<Client {self.url}>"

    # -- HTTP ----------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: JSON = None,
        *,
        timeout: float | None = None,
    ) -> JSON:
        """One call: ``method`` on ``path`` (under ``/v1``), ``body`` sent as
        JSON unless it is ``None`` (then no body at all). Returns the decoded
        answer (``None`` for 204).

        :raises ControlClientError: for an error status, or no answer.
        """
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        data: bytes | None = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        parts = self._parts
        factory = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        connection = factory(
            parts.hostname or "", parts.port, timeout=self.timeout if timeout is None else timeout
        )
        target = f"{self._prefix}{path}"
        try:
            connection.request(method, target, body=data, headers=headers)
            response = connection.getresponse()
            status, raw = response.status, response.read()
            kind = response.getheader("Content-Type", "")
        except TimeoutError:
            waited = self.timeout if timeout is None else timeout
            raise ControlClientError(
                None, f"the control API at {self.url} did not answer {method} {path} in {waited:g}s"
            ) from None
        except (OSError, http.client.HTTPException) as error:
            reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
            raise ControlClientError(
                None, f"cannot reach the control API at {self.url}: {reason}"
            ) from None
        finally:
            connection.close()
        decoded: JSON = None
        if raw.strip():
            try:
                decoded = json.loads(raw)
            except ValueError:
                if status < 400:
                    raise ControlClientError(
                        status,
                        f"{method} {path}: the answer is not JSON ({kind or 'no type'}); is "
                        f"{self.url} a vaurien control API?",
                    ) from None
                decoded = raw.decode("utf-8", "replace")
        if status >= 400:
            raise _error(status, decoded, method, path)
        return decoded

    # -- the set of proxies --------------------------------------------------

    def info(self) -> dict[str, Any]:
        """``GET /v1``: ``{"version", "protocols", "handlers"}``."""
        return dict(self.request("GET", "/v1"))

    def proxies(self) -> list[RemoteProxy]:
        """Every proxy of the server, by name."""
        data = self.request("GET", "/v1/proxies")
        return [RemoteProxy(self, item) for item in data["proxies"]]

    def proxy(self, name: str) -> RemoteProxy:
        """The proxy called ``name``.

        :raises ControlClientError: 404 naming the known ones.
        """
        return RemoteProxy(self, self.request("GET", _proxy_path(name)))

    def create(
        self,
        name: str,
        listen: str | Address = "127.0.0.1:0",
        upstream: str | Address | None = None,
        protocol: str = "tcp",
        behavior: str = "100:dummy",
        options: Mapping[str, Mapping[str, Any]] | None = None,
        rules: Sequence[Rule | str | Mapping[str, Any]] = (),
        enabled: bool = True,
        seed: int | None = None,
    ) -> RemoteProxy:
        """A new proxy on the server, started; ``with`` it to delete it after.

        :param listen: where it listens (port 0: any free port; read
            ``address`` for the real one).
        :param upstream: the backend, ``HOST:PORT`` (required).
        :param seed: seeds every random choice of the proxy (random if not given).
        :raises ControlClientError: 400 naming the bad field, 409 for a name
            taken or an address in use.
        """
        body: dict[str, Any] = {
            "name": name,
            "listen": format_address(listen) if isinstance(listen, tuple) else listen,
            "protocol": protocol,
            "behavior": behavior,
            "options": {key: dict(value) for key, value in (options or {}).items()},
            "rules": [rule_to_json(rule) for rule in rules],
            "enabled": enabled,
        }
        if seed is not None:
            body["seed"] = seed
        if upstream is not None:
            body["upstream"] = format_address(upstream) if isinstance(upstream, tuple) else upstream
        return RemoteProxy(self, self.request("POST", "/v1/proxies", body))

    def delete(self, name: str) -> None:
        """Stop the proxy called ``name`` and forget it.

        :raises ControlClientError: 404 if there is none.
        """
        self.request("DELETE", _proxy_path(name))

    def reset(self) -> None:
        """Every proxy enabled, behaviors back to ``100:dummy``, rules
        removed, records and counters zeroed."""
        self.request("POST", "/v1/reset")


def _proxy_path(name: str) -> str:
    return f"/v1/proxies/{quote(name, safe='')}"


def _error(status: int, body: JSON, method: str, path: str) -> ControlClientError:
    """The error a status and body mean (the native body, or anything else)."""
    cls = WaitTimeout if status == 408 and path.endswith("/wait") else ControlClientError
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        message = str(error.get("message") or f"{method} {path} failed")
        return cls(status, message, error.get("field"), error.get("value"), body)
    if isinstance(body, dict) and isinstance(body.get("error"), str):  # toxiproxy's shape
        return cls(status, body["error"], None, None, body)
    text = body.strip() if isinstance(body, str) else ""
    return cls(status, f"{method} {path} failed{': ' + text if text else ''}", None, None, body)


class RemoteRule:
    """A live rule of a :class:`RemoteProxy`.

    ``name``, ``fault``, ``options``, ``match``, ``schedule``, ``percent``
    and ``per`` are as the server described the rule; ``matched`` and
    ``fired`` are read from the server on each read. ``with`` it to remove
    it from its proxy at the end of the block (as ``with proxy.add_rule()``).

    A rule added without a name is known by ``FAULT#POSITION``, which moves
    when an earlier rule is removed: name rules that others may shift.
    """

    def __init__(self, proxy: RemoteProxy, data: Mapping[str, Any]) -> None:
        self.proxy = proxy
        #: The rule as the server last described it.
        self.data: dict[str, Any] = dict(data)
        self.name: str = data["name"]
        self.fault: str = data.get("fault", "")
        self.options: dict[str, Any] = dict(data.get("options") or {})
        self.match: object = data.get("match")
        self.schedule: str | None = data.get("schedule")
        self.percent: float = data.get("percent", 100.0)
        self.per: str = data.get("per", "rule")

    def refresh(self) -> dict[str, Any]:
        """Read the rule again; returns (and keeps in ``data``) its description.

        :raises ControlClientError: 404 if the proxy no longer has it.
        """
        for item in self.proxy._rules_json():
            if item["name"] == self.name:
                self.data = dict(item)
                return self.data
        known = ", ".join(item["name"] for item in self.proxy._rules_json()) or "none"
        raise ControlClientError(
            404, f"no rule named {self.name!r}; known: {known}", "rule", self.name
        )

    @property
    def matched(self) -> int:
        """Units this rule matched so far (read now)."""
        return int(self.refresh()["matched"])

    @property
    def fired(self) -> int:
        """Units it fired on so far (read now)."""
        return int(self.refresh()["fired"])

    def describe(self) -> dict[str, Any]:
        """The rule as the server last described it (counters as of that read)."""
        return dict(self.data)

    def to_rule(self) -> Rule:
        """A :class:`~pytest_vaurien.Rule` with the same configuration (counters at zero)."""
        keywords = {
            key: self.data[key]
            for key in ("match", "schedule", "percent", "per")
            if self.data.get(key) is not None
        }
        return Rule(self.fault, name=self.name, **keywords, **self.options)

    def remove(self) -> None:
        """Remove the rule from its proxy."""
        self.proxy.remove_rule(self.name)

    def __enter__(self) -> RemoteRule:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.remove()
        except ControlClientError as error:
            if error.status != 404:  # gone already: as the in-process rule, nothing to do
                raise

    def __repr__(self) -> str:
        return (
            f"<RemoteRule {self.name!r} of {self.proxy.name}: {self.fault} "
            f"(matched {self.data.get('matched')}, fired {self.data.get('fired')} when read)>"
        )


class _RestoreBehavior:
    """Returned by ``set_behavior``: ``with`` it to put the old behavior back."""

    def __init__(
        self, proxy: RemoteProxy, behavior: str, options: Mapping[str, Mapping[str, Any]]
    ) -> None:
        self._proxy = proxy
        self._behavior = behavior
        self._options = options

    def __enter__(self) -> RemoteProxy:
        return self._proxy

    def __exit__(self, *exc_info: object) -> None:
        self._proxy.patch(behavior=self._behavior, options=self._options)


class RemoteProxy:
    """A proxy of a control API, by name.

    ``name`` and ``address`` (where to connect) are fixed; ``distant``,
    ``behavior``, ``options``, ``protocol``, ``enabled``, ``accepted``,
    ``open_connections``, ``rules``, ``connections``, ``exchanges`` and
    ``stats`` are read from the server on each read (``data`` keeps the
    proxy as last read). ``with`` it to delete it at the end of the block.
    """

    def __init__(self, client: Client, data: Mapping[str, Any]) -> None:
        self.client = client
        #: The proxy as the server last described it.
        self.data: dict[str, Any] = dict(data)
        self.name: str = data["name"]
        host, port = parse_address(data["listen"], "listen", listen=True)
        if host in _WILDCARDS:  # listening everywhere: reach it where the API is
            host = client._parts.hostname or "127.0.0.1"
        #: Where clients connect: ``(host, port)``.
        self.address: Address = (host, port)
        self._path = _proxy_path(self.name)

    def __repr__(self) -> str:
        return (
            f"<RemoteProxy {self.name} {format_address(self.address)} -> "
            f"{self.data.get('upstream')} at {self.client.url}>"
        )

    def __enter__(self) -> RemoteProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.delete()
        except ControlClientError as error:
            if error.status != 404:
                raise

    # -- reads -------------------------------------------------------------

    def refresh(self) -> dict[str, Any]:
        """Read the proxy again; returns (and keeps in ``data``) its JSON."""
        self.data = dict(self.client.request("GET", self._path))
        return self.data

    @property
    def distant(self) -> str:
        """The backend, ``HOST:PORT``."""
        return str(self.refresh()["upstream"])

    @property
    def behavior(self) -> str:
        return str(self.refresh()["behavior"])

    @property
    def options(self) -> dict[str, dict[str, Any]]:
        """The handler options set on the proxy, ``{"delay": {"sleep": 2}}``."""
        return dict(self.refresh()["options"])

    @property
    def protocol(self) -> str:
        return str(self.refresh()["protocol"])

    @property
    def enabled(self) -> bool:
        """False between ``disable()`` and ``enable()``."""
        return bool(self.refresh()["enabled"])

    @property
    def accepted(self) -> int:
        """Connections accepted so far (since the last reset)."""
        return int(self.refresh()["accepted"])

    @property
    def open_connections(self) -> int:
        """Connections being relayed right now."""
        return int(self.refresh()["open_connections"])

    def _rules_json(self) -> list[dict[str, Any]]:
        return list(self.client.request("GET", f"{self._path}/rules")["rules"])

    @property
    def rules(self) -> list[RemoteRule]:
        """The live rules, in order."""
        return [RemoteRule(self, item) for item in self._rules_json()]

    def rule(self, name: str) -> RemoteRule:
        """The live rule called ``name``.

        :raises ControlClientError: 404 naming the known ones.
        """
        rules = self._rules_json()
        for item in rules:
            if item["name"] == name:
                return RemoteRule(self, item)
        known = ", ".join(item["name"] for item in rules) or "none"
        raise ControlClientError(404, f"no rule named {name!r}; known: {known}", "rule", name)

    @property
    def connections(self) -> list[ConnectionRecord]:
        """The connection records the server keeps, oldest first."""
        return self.connections_since(None)

    def connections_since(self, index: int | None) -> list[ConnectionRecord]:
        """The connection records whose ``index`` is greater than ``index``."""
        data = self.client.request("GET", f"{self._path}/connections{_since(index)}")
        return [connection_from_json(item) for item in data["connections"]]

    @property
    def exchanges(self) -> list[ExchangeRecord]:
        """Under a protocol: the exchange records the server keeps, oldest first."""
        return self.exchanges_since(None)

    def exchanges_since(self, index: int | None) -> list[ExchangeRecord]:
        """The exchange records whose ``index`` is greater than ``index``."""
        data = self.client.request("GET", f"{self._path}/exchanges{_since(index)}")
        return [exchange_from_json(item) for item in data["exchanges"]]

    @property
    def stats(self) -> Stats:
        """Totals over the records the server keeps."""
        return Stats.of(self.connections, self.exchanges)

    # -- changes -----------------------------------------------------------

    def patch(self, **fields: Any) -> RemoteProxy:
        """``PATCH`` any of ``behavior``, ``options``, ``protocol``,
        ``upstream``, ``enabled`` at once; returns self (``data`` updated)."""
        self.data = dict(self.client.request("PATCH", self._path, fields))
        return self

    def set_behavior(self, spec: str, **options: Any) -> _RestoreBehavior:
        """Change the behavior now; ``with`` it to restore the previous one after.

        ``options`` are ``NAME__OPTION=value`` pairs, laid over the proxy's.
        The restore puts back the previous behavior and the previous values
        of the options set before; an option the proxy had not set keeps the
        value given here (the API cannot unset one).

        :raises ControlClientError: 400 for a bad spec or option; nothing changes then.
        """
        nested = _options_json(options, "set_behavior()")
        previous = self.refresh()
        body: dict[str, Any] = {"behavior": spec}
        if nested:
            body["options"] = nested
        self.patch(**body)
        return _RestoreBehavior(self, previous["behavior"], previous.get("options") or {})

    def set_upstream(self, distant: str | Address) -> None:
        """Send new connections to another backend; open ones keep theirs."""
        self.patch(upstream=format_address(distant) if isinstance(distant, tuple) else distant)

    def add_rule(self, rule: Rule | str | Mapping[str, Any]) -> RemoteRule:
        """Append a rule; ``with`` what it returns to remove it after.

        :param rule: a :class:`~pytest_vaurien.Rule`, its string form
            (``"abort; schedule=first:2; name=x"``) or a dict
            (``{"fault": "error", "options": {"status": 503}}``).
        :raises ControlClientError: 400 for a bad rule, 409 for a name taken.
        """
        data = self.client.request("POST", f"{self._path}/rules", rule_to_json(rule))
        return RemoteRule(self, data)

    def set_rules(self, rules: Sequence[Rule | str | Mapping[str, Any]]) -> list[RemoteRule]:
        """Replace every rule at once; returns the live ones."""
        body = [rule_to_json(rule) for rule in rules]
        data = self.client.request("PUT", f"{self._path}/rules", body)
        return [RemoteRule(self, item) for item in data["rules"]]

    def remove_rule(self, rule: RemoteRule | Rule | str) -> None:
        """Remove a live rule, given as itself or by name.

        :raises ControlClientError: 404 if the proxy has no such rule.
        """
        name = _rule_name(rule)
        self.client.request("DELETE", f"{self._path}/rules/{quote(name, safe='')}")

    def disable(self) -> None:
        """Take the proxy down: connects are refused, open connections closed."""
        self.patch(enabled=False)

    def enable(self) -> None:
        """Bring the proxy back up, on the same port."""
        self.patch(enabled=True)

    @contextmanager
    def down(self) -> Iterator[RemoteProxy]:
        """``with proxy.down():`` the proxy is down inside the block, up after it."""
        self.disable()
        try:
            yield self
        finally:
            self.enable()

    def wait(
        self,
        rule: RemoteRule | Rule | str | None = None,
        fired: int | None = None,
        *,
        connections: int | None = None,
        timeout: float = 5.0,
    ) -> dict[str, Any]:
        """Return once the rule ``rule`` fired at least ``fired`` times (1 by
        default), or at least ``connections`` were accepted; returns the counts.

        :raises WaitTimeout: (a ``TimeoutError``) after ``timeout`` seconds,
            naming the counts.
        :raises ControlClientError: 404 for a rule the proxy does not have,
            400 for a goal that is not one of the two.
        """
        body: dict[str, Any] = {"timeout": timeout}
        if rule is not None:
            body["rule"] = _rule_name(rule)
        if fired is not None:
            body["fired"] = fired
        if connections is not None:
            body["connections"] = connections
        call_timeout = self.client.timeout
        if isinstance(timeout, int | float) and not isinstance(timeout, bool):
            call_timeout += max(float(timeout), 0.0)
        return dict(self.client.request("POST", f"{self._path}/wait", body, timeout=call_timeout))

    def delete(self) -> None:
        """Stop the proxy on the server and forget it."""
        self.client.request("DELETE", self._path)


def _since(index: int | None) -> str:
    return "" if index is None else f"?since={int(index)}"
