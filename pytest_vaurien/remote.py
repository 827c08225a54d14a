"""A test's proxy on a control API (``--vaurien-control URL``), read as an in-process one.

The fixtures make each test's proxies on the vaurien that URL names, from the
same resolved settings an in-process proxy is made from, and delete them when
the test ends. ``RemoteTestProxy`` gives the test and the plugin what a
``Proxy`` gives them (``address``, ``set_behavior()``, ``rules``, ``wait()``,
``connections``, ``stats``...), and keeps the records it had when it was
deleted, so that the reports made after the test still read them. No pytest
here: the plugin wires it.
"""

from __future__ import annotations

import itertools
import os
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from pytest_vaurien.address import Address, format_address, is_loopback
from pytest_vaurien.client import Client, ControlClientError, RemoteProxy, rule_to_json
from pytest_vaurien.errors import ConfigError
from pytest_vaurien.records import ConnectionRecord, Ending, ExchangeRecord, Stats
from pytest_vaurien.settings import Settings

__all__ = ["RemotePlan", "RemoteTestProxy", "remote_body"]

#: Unique names on a server many runs and xdist workers share.
_RUN = uuid.uuid4().hex[:8]
_COUNT = itertools.count(1)


def _configuration(settings: Settings, seed: int) -> dict[str, Any]:
    """What a proxy is told to do, as the API takes it."""
    return {
        "protocol": settings.protocol,
        "behavior": str(settings.behavior),
        "options": {
            handler: {option: sourced.value for option, sourced in values.items()}
            for handler, values in settings.options.items()
        },
        "rules": [rule_to_json(rule) for rule in settings.rules],
        "seed": seed,
    }


def remote_body(settings: Settings, seed: int, label: str, listen_host: str) -> dict[str, Any]:
    """The ``POST /v1/proxies`` body for ``settings``."""
    if settings.distant is None:
        raise ConfigError(f"{label}: no distant; expected HOST:PORT")
    name = f"pytest-{os.getpid()}-{_RUN}-{next(_COUNT)}"
    return {
        "name": name,
        "listen": f"{format_address((listen_host, 0))}",
        "upstream": format_address(settings.distant),
        **_configuration(settings, seed),
    }


@dataclass(frozen=True)
class RemotePlan:
    """A remote proxy's configuration as it was put in force (what a session
    proxy puts back between tests)."""

    protocol: str
    body: dict[str, Any]


class RemoteTestProxy:
    """One test's proxy on a control API.

    Everything a :class:`~pytest_vaurien.client.RemoteProxy` has, plus what
    the fixtures read of a ``Proxy``: ``host``, ``port``, ``seed``,
    ``errors``, ``running`` and ``stop()`` (which deletes it on the server).
    """

    def __init__(self, remote: RemoteProxy, seed: int, plan: RemotePlan) -> None:
        #: The proxy on the server.
        self.remote = remote
        self._plan = plan
        self._path = f"/v1/proxies/{quote(remote.name, safe='')}"
        self.name = remote.name
        self.address: Address = remote.address
        self.seed = seed
        self._frozen: tuple[list[ConnectionRecord], list[ExchangeRecord], str, str] | None = None

    @classmethod
    def create(cls, client: Client, settings: Settings, seed: int, label: str) -> RemoteTestProxy:
        """Make the proxy on the server; it listens on loopback when the server is
        on this machine, else on every address of the server's host.

        :raises ControlClientError: as the server answers (naming the field).
        """
        host = client.url.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
        listen_host = "127.0.0.1" if is_loopback(host) else "0.0.0.0"
        body = remote_body(settings, seed, label, listen_host)
        data = client.request("POST", "/v1/proxies", body)
        plan = RemotePlan(settings.protocol, _configuration(settings, seed))
        return cls(RemoteProxy(client, data), seed, plan)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.remote, attribute)

    def __repr__(self) -> str:
        return f"<RemoteTestProxy {self.remote!r}>"

    @property
    def host(self) -> str:
        return self.address[0]

    @property
    def port(self) -> int:
        return self.address[1]

    @property
    def running(self) -> bool:
        return self._frozen is None

    @property
    def connections(self) -> list[ConnectionRecord]:
        return list(self._frozen[0]) if self._frozen else self.remote.connections

    @property
    def exchanges(self) -> list[ExchangeRecord]:
        return list(self._frozen[1]) if self._frozen else self.remote.exchanges

    @property
    def distant(self) -> str:
        return self._frozen[2] if self._frozen else self.remote.distant

    @property
    def behavior(self) -> str:
        return self._frozen[3] if self._frozen else self.remote.behavior

    @property
    def stats(self) -> Stats:
        return Stats.of(self.connections, self.exchanges)

    @property
    def errors(self) -> list[ConnectionRecord]:
        return [record for record in self.connections if record.ending is Ending.ERROR]

    @property
    def plan(self) -> RemotePlan:
        """The configuration in force, as the proxy was last configured."""
        return self._plan

    def configure(
        self, settings: Settings, *, registry: object = None, seed: int | None = None
    ) -> str:
        """Put ``settings``' behavior, options and rules in force whole, and
        ``seed`` (``PUT`` on the server), as ``Proxy.configure`` does.

        :raises ControlClientError: naming the field the server refused.
        """
        if settings.protocol != self._plan.protocol:
            raise ConfigError(
                f"{settings.protocol_source}: protocol {settings.protocol!r}, but {self.name} "
                f"frames {self._plan.protocol!r} for its whole life"
            )
        body = _configuration(settings, self.seed if seed is None else seed)
        data = self.remote.client.request("PUT", self._path, body)
        self._plan, self.seed = RemotePlan(settings.protocol, body), body["seed"]
        return str(data["behavior"])

    def restore(self, plan: RemotePlan, seed: int) -> None:
        """Put back a configuration saved from ``plan`` (after ``configure``)."""
        self.remote.client.request("PUT", self._path, {**plan.body, "seed": seed})
        self._plan, self.seed = plan, seed

    def stop(self) -> None:
        """Keep the records for the reports, then delete the proxy on the server."""
        if self._frozen is not None:
            return
        data = self.remote.refresh()
        self._frozen = (
            self.remote.connections,
            self.remote.exchanges,
            str(data["upstream"]),
            str(data["behavior"]),
        )
        try:
            self.remote.delete()
        except ControlClientError as error:
            if error.status != 404:
                raise
