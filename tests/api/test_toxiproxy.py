"""toxiproxy 2.x's dialect of the control API (pytest_vaurien/toxiproxy.py).

The mapping (toxics -> behavior and options) is tested as pure functions; the
dialect through a real ``vaurien --control 127.0.0.1:0`` subprocess, driven by
toxiproxy's own Python client (``toxiproxy-python`` from PyPI), by raw HTTP
calls shaped as toxiproxy's API docs show, and through real sockets.
"""

from __future__ import annotations

import gc
import http.client
import json
import math
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_vaurien import __version__
from pytest_vaurien.behavior import parse_behavior
from pytest_vaurien.control import ControlError
from pytest_vaurien.toxiproxy import (
    MAX_UNCERTAIN,
    Toxic,
    behavior_of,
    parse_toxic,
    toxics_from_behavior,
    update_toxic,
)
from tests.backends import start_control_server
from tests.client import read_until_eof, roundtrip
from tests.servers import EchoServer

TYPES = ["latency", "bandwidth", "slow_close", "timeout", "reset_peer", "slicer", "limit_data"]
SECOND = {name: f"{name}_2" for name in TYPES}
START_TIMEOUT = 30.0


def toxic(type_name: str, toxicity: float = 1.0, stream: str = "downstream", **attributes: int):
    return parse_toxic(
        {"type": type_name, "stream": stream, "toxicity": toxicity, "attributes": attributes}
    )


# -- the mapping, pure ---------------------------------------------------------


def test_toxics_at_one_make_one_chain_in_their_order():
    spec, options = behavior_of(
        [toxic("latency", latency=100, jitter=10), toxic("bandwidth", stream="upstream", rate=50)],
        SECOND,
    )
    assert spec == "100:latency+bandwidth"
    assert options == {
        "latency": {"latency": 0.1, "jitter": 0.01, "direction": "downstream"},
        "bandwidth": {"rate": 50.0, "direction": "upstream"},
    }


def test_no_toxic_or_only_noop_and_zero_toxicity_is_transparent():
    assert behavior_of([], SECOND) == ("100:dummy", {})
    assert behavior_of([toxic("noop"), toxic("latency", toxicity=0.0)], SECOND) == (
        "100:dummy",
        {},
    )


def test_toxicity_below_one_gives_each_combination_its_chance():
    limited = parse_toxic({"type": "bandwidth", "attributes": {"rate": 64}})
    spec, _ = behavior_of([toxic("latency", toxicity=0.5), limited], SECOND)
    assert spec == "50:latency+bandwidth,50:bandwidth"
    spec, _ = behavior_of([toxic("latency", toxicity=0.5), toxic("timeout", toxicity=0.5)], SECOND)
    entries = {entry.chain: entry.percent for entry in parse_behavior(spec).entries}
    assert entries == {("latency",): 25, ("timeout",): 25, ("latency", "timeout"): 25}
    assert parse_behavior(spec).remainder == 25


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=MAX_UNCERTAIN))
def test_each_toxic_fires_with_its_own_toxicity(toxicities):
    """Whatever the toxicities: a valid behavior in which each toxic's share
    of the connections is its toxicity, and the transparent share is what
    none of them takes."""
    types = (TYPES * 2)[: len(toxicities)]
    toxics = [
        parse_toxic(
            {"type": type_name, "name": f"t{index}", "toxicity": value, "attributes": {"rate": 8}}
        )
        for index, (type_name, value) in enumerate(zip(types, toxicities, strict=True))
    ]
    spec, options = behavior_of(toxics, SECOND)
    behavior = parse_behavior(spec)
    seen: dict[str, int] = {}
    for item, value in zip(toxics, toxicities, strict=True):
        if value == 0:
            continue  # in no entry: it takes no name
        handler = item.handler
        assert handler is not None
        seen[handler] = seen.get(handler, 0) + 1
        name = handler if seen[handler] == 1 else SECOND[handler]
        share = sum(entry.percent for entry in behavior.entries if name in entry.chain)
        assert share == pytest.approx(value * 100, abs=1e-6)
        assert name in options
    none = math.prod(1 - value for value in toxicities) * 100
    transparent = behavior.remainder + sum(
        entry.percent for entry in behavior.entries if entry.chain == ("dummy",)
    )
    assert transparent == pytest.approx(none, abs=1e-6)


def test_a_second_toxic_of_a_type_runs_as_its_alias_and_a_third_is_refused():
    down, up = toxic("latency", latency=100), toxic("latency", stream="upstream", latency=7)
    spec, options = behavior_of([down, up], SECOND)
    assert spec == "100:latency+latency_2"
    assert options["latency"]["latency"] == 0.1
    assert options["latency_2"] == {"latency": 0.007, "jitter": 0.0, "direction": "upstream"}
    third = parse_toxic({"type": "latency", "name": "third"})
    with pytest.raises(ControlError) as caught:
        behavior_of([down, up, third], SECOND)
    assert caught.value.status == 400
    assert "third" in caught.value.message


def test_too_many_uncertain_toxics_are_refused():
    toxics = [
        parse_toxic({"type": type_name, "name": f"t{index}", "toxicity": 0.5})
        for index, type_name in enumerate((TYPES * 2)[: MAX_UNCERTAIN + 1])
    ]
    behavior_of(toxics[:-1], SECOND)
    with pytest.raises(ControlError) as caught:
        behavior_of(toxics, SECOND)
    assert caught.value.status == 400
    assert "toxicity" in caught.value.message


@pytest.mark.parametrize(
    ("type_name", "attributes", "options"),
    [
        ("latency", {"latency": 1500, "jitter": 20}, {"latency": 1.5, "jitter": 0.02}),
        ("bandwidth", {"rate": 64}, {"rate": 64.0}),
        ("slow_close", {"delay": 250}, {"delay": 0.25}),
        ("timeout", {"timeout": 3000}, {"timeout": 3.0}),
        ("reset_peer", {"timeout": 40}, {"timeout": 0.04}),
        (
            "slicer",
            {"average_size": 16, "size_variation": 4, "delay": 500},
            {"average_size": 16, "size_variation": 4, "delay": 0.0005},
        ),
        ("limit_data", {"bytes": 1024}, {"bytes": 1024}),
    ],
)
def test_units_convert_exactly_both_ways(type_name, attributes, options):
    made = toxic(type_name, stream="upstream", **attributes)
    assert made.attributes == attributes
    expected = dict(options)
    if made.kind.directional:
        expected["direction"] = "upstream"
    assert made.options() == expected
    back = made.kind.from_options(lambda key: expected[key])
    assert back == attributes


def test_a_toxic_gets_toxiproxy_defaults():
    made = parse_toxic({"type": "latency"})
    assert made.to_json() == {
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1.0,
        "attributes": {"latency": 0, "jitter": 0},
    }
    assert parse_toxic({"type": "slicer", "stream": "upstream"}).name == "slicer_upstream"
    # Go's decoder ignores unknown keys and leaves null fields unset
    made = parse_toxic(
        {"type": "bandwidth", "name": None, "toxicity": None, "extra": 1, "attributes": {"x": 1}}
    )
    assert (made.name, made.toxicity, dict(made.attributes)) == (
        "bandwidth_downstream",
        1.0,
        {"rate": 0},
    )


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        ({"type": "latency", "stream": "sideways"}, 400, "stream was invalid"),
        ({"type": "nope"}, 400, "invalid toxic type"),
        ({}, 400, "invalid toxic type"),
        ({"type": "latency", "attributes": {"latency": 1.5}}, 400, "bad request body"),
        ({"type": "latency", "attributes": {"latency": -1}}, 400, "bad request body"),
        ({"type": "latency", "attributes": {"latency": "100"}}, 400, "bad request body"),
        ({"type": "latency", "attributes": {"latency": True}}, 400, "bad request body"),
        ({"type": "latency", "attributes": {"latency": 2**63}}, 400, "bad request body"),
        ({"type": "latency", "attributes": [1]}, 400, "bad request body"),
        ({"type": "latency", "toxicity": 1.5}, 400, "bad request body"),
        ({"type": "latency", "toxicity": "1"}, 400, "bad request body"),
        ({"type": "latency", "toxicity": math.nan}, 400, "bad request body"),
        ({"type": 3}, 400, "bad request body"),
        ([], 400, "bad request body"),
        ({"type": "latency", "name": "taken"}, 409, "toxic already exists"),
    ],
)
def test_bad_toxics_get_toxiproxy_errors(body, status, text):
    with pytest.raises(ControlError) as caught:
        parse_toxic(body, ["taken"])
    assert caught.value.status == status
    assert caught.value.message.startswith(text)


def test_a_whole_float_attribute_is_taken_as_toxiproxy_cli_sends_it():
    assert toxic("latency", latency=1000.0).attributes["latency"] == 1000  # type: ignore[arg-type]


def test_update_lays_attributes_over_and_keeps_the_rest():
    made = parse_toxic({"type": "latency", "attributes": {"latency": 100, "jitter": 10}})
    changed = update_toxic(made, {"toxicity": 0.5, "attributes": {"latency": 1000}, "name": "x"})
    assert (changed.name, changed.toxicity, dict(changed.attributes)) == (
        "latency_downstream",
        0.5,
        {"latency": 1000, "jitter": 10},
    )
    assert update_toxic(changed, {"attributes": {"latency": 500}}).toxicity == 0.5
    with pytest.raises(ControlError):
        update_toxic(changed, "x")


def _read_back(spec: str, options: dict[str, dict[str, Any]]) -> list[Toxic]:
    defaults = {"direction": "downstream", "jitter": 0.0}
    entries = [(entry.percent, entry.chain) for entry in parse_behavior(spec).entries]
    return toxics_from_behavior(
        entries,
        lambda name: None if name in ("abort", "delay") else name.removesuffix("_2"),
        lambda name, option: options.get(name, {}).get(option, defaults.get(option, 0)),
    )


def test_a_behavior_set_elsewhere_reads_back_as_toxics_where_it_says_toxics():
    found = _read_back("100:latency+bandwidth", {"latency": {"latency": 0.25}})
    assert [(t.name, t.toxicity, dict(t.attributes)) for t in found] == [
        ("latency_downstream", 1.0, {"latency": 250, "jitter": 0}),
        ("bandwidth_downstream", 1.0, {"rate": 0}),
    ]
    assert [(t.name, t.toxicity) for t in _read_back("30:timeout", {})] == [
        ("timeout_downstream", 0.3)
    ]
    both = _read_back("100:latency", {"latency": {"direction": "both"}})
    assert [t.name for t in both] == ["latency_upstream", "latency_downstream"]


@pytest.mark.parametrize(
    "spec",
    ["30:latency,20:bandwidth", "30:latency+bandwidth", "100:abort", "100:latency+delay"],
)
def test_a_behavior_that_says_no_toxics_reads_back_as_none(spec):
    assert _read_back(spec, {}) == []
    assert _read_back("50:latency", {"latency": {"direction": "both"}}) == []


# -- a real vaurien --control ----------------------------------------------------


class Api:
    """Raw HTTP calls to the server, shaped as toxiproxy's docs show them."""

    def __init__(self, port: int) -> None:
        self.port = port

    def call(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        raw: bytes | None = None,
        content_type: str | None = "application/json",
    ) -> tuple[int, Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {"User-Agent": "curl/8.5.0"}
        if data is not None and content_type is not None:
            headers["Content-Type"] = content_type
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            text = response.read()
        finally:
            connection.close()
        return response.status, json.loads(text) if text.strip() else None

    def proxy(self, name: str, upstream: str, **extra: Any) -> dict[str, Any]:
        status, body = self.call("POST", "/proxies", {"name": name, "upstream": upstream, **extra})
        assert status == 201, body
        return body  # type: ignore[no-any-return]

    def address(self, name: str) -> tuple[str, int]:
        status, body = self.call("GET", f"/proxies/{name}")
        assert status == 200, body
        host, _, port = body["listen"].rpartition(":")
        return host, int(port)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """``vaurien --control 127.0.0.1:0 --control-port-file F``, for this module."""
    with start_control_server(tmp_path_factory.mktemp("toxiproxy")) as process:
        yield Api(process.port)
    assert process.process.returncode == 0, process.output()


@pytest.fixture
def api(server: Api) -> Iterator[Api]:
    """The server, with every proxy deleted after the test."""
    yield server
    status, proxies = server.call("GET", "/proxies")
    assert status == 200
    for name in proxies:
        server.call("DELETE", f"/proxies/{name}")


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    with EchoServer() as backend:
        yield backend


@pytest.fixture
def toxiproxy_client(api: Api) -> Iterator[Any]:
    """toxiproxy's Python client (toxiproxy-python from PyPI), pointed at vaurien.

    Its errors keep the HTTP response (and its socket) alive in a reference
    cycle through their traceback: collected after the test, so that the
    suite's check for leftover descriptors sees them closed.
    """
    module = pytest.importorskip("toxiproxy")
    client = module.Toxiproxy()
    client.update_api_consumer("127.0.0.1", api.port)
    yield client
    gc.collect()


# -- toxiproxy's Python client -----------------------------------------------------


def test_the_python_client_creates_lists_and_destroys(toxiproxy_client, api, echo):
    from toxiproxy.exceptions import ProxyExists

    proxy = toxiproxy_client.create(upstream=echo.distant, name="redis")
    assert proxy.enabled is True
    assert proxy.upstream == echo.distant
    assert proxy.listen.startswith("127.0.0.1:")
    assert not proxy.listen.endswith(":0")
    assert list(toxiproxy_client.proxies()) == ["redis"]
    assert toxiproxy_client.get_proxy("redis").listen == proxy.listen
    assert toxiproxy_client.running() is True
    assert json.loads(toxiproxy_client.version()) == {"version": __version__}
    with pytest.raises(ProxyExists):
        toxiproxy_client.create(upstream=echo.distant, name="redis")
    host, port = api.address("redis")
    assert roundtrip((host, port), b"hello") == b"hello"
    assert toxiproxy_client.destroy(proxy) is True
    assert toxiproxy_client.proxies() == {}


def test_the_python_client_adds_and_removes_toxics(toxiproxy_client, api, echo):
    from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

    proxy = toxiproxy_client.create(upstream=echo.distant, name="db")
    proxy.add_toxic(type="latency", attributes={"latency": 100, "jitter": 10})
    proxy.add_toxic(type="bandwidth", stream="upstream", toxicity=0.5, attributes={"rate": 64})
    proxy.add_toxic(type="slicer", name="cut", attributes={"average_size": 8, "delay": 250})
    toxics = proxy.toxics()
    assert sorted(toxics) == ["bandwidth_upstream", "cut", "latency_downstream"]
    assert toxics["latency_downstream"].attributes == {"latency": 100, "jitter": 10}
    assert toxics["bandwidth_upstream"].toxicity == 0.5
    assert toxics["cut"].attributes == {"average_size": 8, "size_variation": 0, "delay": 250}
    # toxiproxy's order: upstream toxics first, then downstream, each as added
    status, listed = api.call("GET", "/proxies/db/toxics")
    assert [t["name"] for t in listed] == ["bandwidth_upstream", "latency_downstream", "cut"]
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="earthquake")
    with pytest.raises(ProxyExists):  # the client's name for any 409
        proxy.add_toxic(type="latency")  # latency_downstream again
    assert proxy.destroy_toxic("cut") is True
    assert sorted(proxy.toxics()) == ["bandwidth_upstream", "latency_downstream"]
    with pytest.raises(NotFound):
        proxy.destroy_toxic("cut")
    # the proxy is an ordinary vaurien proxy
    status, native = api.call("GET", "/v1/proxies/db")
    assert status == 200
    assert native["protocol"] == "tcp"
    assert native["behavior"] == "50:latency+bandwidth,50:latency"
    assert native["options"]["latency"] == {
        "latency": 0.1,
        "jitter": 0.01,
        "direction": "downstream",
    }


def test_the_python_client_raises_not_found_for_a_missing_proxy(toxiproxy_client):
    from toxiproxy.api import APIConsumer
    from toxiproxy.exceptions import NotFound
    from toxiproxy.proxy import Proxy

    with pytest.raises(NotFound):
        APIConsumer.get("/proxies/ghost")
    ghost = Proxy(name="ghost", upstream="127.0.0.1:1", enabled=True, listen="127.0.0.1:1")
    with pytest.raises(NotFound):
        ghost.destroy()
    with pytest.raises(NotFound):
        ghost.add_toxic(type="latency")


def test_the_python_client_reset_removes_toxics_and_enables(toxiproxy_client, api, echo):
    proxy = toxiproxy_client.create(upstream=echo.distant, name="svc")
    proxy.add_toxic(type="timeout", attributes={"timeout": 0})
    proxy.disable()
    assert toxiproxy_client.get_proxy("svc").enabled is False
    assert toxiproxy_client.reset() is True
    after = toxiproxy_client.get_proxy("svc")
    assert after.enabled is True
    assert proxy.toxics() == {}
    assert roundtrip(api.address("svc"), b"back") == b"back"


def test_populate_through_the_python_client(toxiproxy_client, api, echo):
    made = toxiproxy_client.populate(
        [{"name": "one", "upstream": echo.distant, "listen": "127.0.0.1:0"}]
    )
    assert [proxy.name for proxy in made] == ["one"]
    assert roundtrip(api.address("one")) == b"ping"


# -- raw calls, as toxiproxy's API docs show them -----------------------------------


def test_version_is_json_as_toxiproxy_2_7_answers(api):
    connection = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    connection.request("GET", "/version")
    response = connection.getresponse()
    body = response.read()
    connection.close()
    assert response.status == 200
    assert response.getheader("Content-Type", "").startswith("application/json")
    assert body.startswith(b'{"version": "')
    assert body.endswith(b'"}\n')


def test_create_shapes_and_errors(api, echo):
    status, body = api.call(
        "POST", "/proxies", {"name": "web", "listen": "127.0.0.1:0", "upstream": echo.distant}
    )
    assert status == 201
    assert set(body) == {"name", "listen", "upstream", "enabled", "toxics"}
    assert (body["name"], body["upstream"], body["enabled"], body["toxics"]) == (
        "web",
        echo.distant,
        True,
        [],
    )
    # the Go client's Save() sends the whole proxy, toxics included (null)
    assert api.call(
        "POST", "/proxies", {"name": "web", "upstream": echo.distant, "toxics": None}
    ) == (
        409,
        {"error": "proxy already exists", "status": 409},
    )
    assert api.call("POST", "/proxies", {"upstream": echo.distant}) == (
        400,
        {"error": "missing required field: name", "status": 400},
    )
    assert api.call("POST", "/proxies", {"name": "x"}) == (
        400,
        {"error": "missing required field: upstream", "status": 400},
    )
    status, body = api.call("POST", "/proxies", raw=b"{not json")
    assert status == 400
    assert body["error"].startswith("bad request body")
    status, body = api.call(
        "POST", "/proxies", {"name": "off", "upstream": echo.distant, "enabled": False}
    )
    assert status == 201
    assert body["enabled"] is False
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(api.address("off"), timeout=5).close()
    status, listing = api.call("GET", "/proxies")
    assert status == 200
    assert sorted(listing) == ["off", "web"]
    assert listing["web"]["name"] == "web"
    # a proxy made here is seen in /v1 too
    status, native = api.call("GET", "/v1/proxies")
    assert sorted(p["name"] for p in native["proxies"]) == ["off", "web"]
    assert api.call("GET", "/proxies/nope") == (404, {"error": "proxy not found", "status": 404})
    assert api.call("DELETE", "/proxies/web") == (204, None)
    assert api.call("DELETE", "/proxies/web") == (404, {"error": "proxy not found", "status": 404})


def test_a_body_without_a_content_type_is_refused(api, echo):
    """As ``curl --data '{...}'`` sends it (form-encoded): the API's policy is
    415 for a body that is not application/json; toxiproxy's own clients
    all send the type (the Python one through requests' json=)."""
    status, body = api.call(
        "POST",
        "/proxies",
        {"name": "web", "upstream": echo.distant},
        content_type="application/x-www-form-urlencoded",
    )
    assert status == 415
    assert body["status"] == 415
    assert isinstance(body["error"], str)
    status, _ = api.call("POST", "/reset", content_type=None)
    assert status == 204


def test_update_a_proxy_as_toxiproxy_does(api, echo):
    api.proxy("svc", echo.distant)
    api.call("POST", "/proxies/svc/toxics", {"type": "latency", "attributes": {"latency": 1}})
    status, body = api.call("POST", "/proxies/svc", {"enabled": False})
    assert status == 200
    assert body["enabled"] is False
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(api.address("svc"), timeout=5).close()
    status, body = api.call("PATCH", "/proxies/svc", {"enabled": True})
    assert status == 200
    assert body["enabled"] is True
    assert roundtrip(api.address("svc")) == b"ping"
    # listen: made anew on the new address, toxics kept; the old one is gone
    old = api.address("svc")
    status, body = api.call("PATCH", "/proxies/svc", {"listen": "127.0.0.1:0"})
    assert status == 200
    assert body["listen"] != f"{old[0]}:{old[1]}"
    assert [t["name"] for t in body["toxics"]] == ["latency_downstream"]
    assert roundtrip(api.address("svc")) == b"ping"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(old, timeout=5).close()
    # the same listen (as the Go client's Save() sends it back) changes nothing
    same = body["listen"]
    status, body = api.call("POST", "/proxies/svc", {**body, "name": "ignored"})
    assert status == 200
    assert body["listen"] == same
    # upstream: open connections dropped, new ones go to the new backend
    with EchoServer() as other:
        held = socket.create_connection(api.address("svc"), timeout=10)
        held.sendall(b"a")
        assert held.recv(10) == b"a"
        status, body = api.call("POST", "/proxies/svc", {"upstream": other.distant})
        assert status == 200
        assert body["upstream"] == other.distant
        assert body["enabled"]
        assert read_until_eof(held) == b""
        held.close()
        assert roundtrip(api.address("svc"), b"x") == b"x"
        assert other.accepted == 1
    status, body = api.call("POST", "/proxies/svc", {"enabled": "yes"})
    assert status == 400
    assert body["error"].startswith("bad request body")
    status, body = api.call("POST", "/proxies/svc", {"upstream": "nowhere"})
    assert status == 400
    assert body["status"] == 400


def test_populate_creates_keeps_and_replaces(api, echo):
    api.proxy("keep", echo.distant)
    api.call("POST", "/proxies/keep/toxics", {"type": "latency"})
    kept = "{}:{}".format(*api.address("keep"))
    api.proxy("move", echo.distant)
    status, body = api.call(
        "POST",
        "/populate",
        [
            {"name": "keep", "listen": kept, "upstream": echo.distant},
            {"name": "move", "listen": "127.0.0.1:0", "upstream": echo.distant},
            {"name": "new", "upstream": echo.distant, "enabled": False},
        ],
    )
    assert status == 201
    assert [p["name"] for p in body["proxies"]] == ["keep", "move", "new"]
    assert body["proxies"][0]["listen"] == kept
    assert [t["name"] for t in body["proxies"][0]["toxics"]] == ["latency_downstream"]
    assert body["proxies"][2]["enabled"] is False
    # a bad item: nothing is created, toxiproxy's message
    status, body = api.call(
        "POST", "/populate", [{"name": "a", "upstream": echo.distant}, {"upstream": echo.distant}]
    )
    assert (status, body) == (
        400,
        {"error": "missing required field: name at proxy 2", "status": 400},
    )
    assert "a" not in api.call("GET", "/proxies")[1]
    # a failure half-way: the error, with the proxies made before it
    status, body = api.call(
        "POST",
        "/populate",
        [{"name": "b", "upstream": echo.distant}, {"name": "c", "upstream": "nowhere"}],
    )
    assert status == 400
    assert body["status"] == 400
    assert isinstance(body["error"], str)
    assert [p["name"] for p in body["proxies"]] == ["b"]
    assert api.call("POST", "/populate", {"proxies": []})[0] == 400


def test_toxic_calls_shapes_and_status_codes(api, echo):
    api.proxy("svc", echo.distant)
    status, body = api.call(
        "POST", "/proxies/svc/toxics", {"type": "latency", "attributes": {"latency": 100}}
    )
    assert status == 200  # toxiproxy answers 200 here, not 201
    assert body == {
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1.0,
        "attributes": {"latency": 100, "jitter": 0},
    }
    assert api.call("GET", "/proxies/svc/toxics/latency_downstream") == (200, body)
    status, body = api.call(
        "PATCH", "/proxies/svc/toxics/latency_downstream", {"attributes": {"jitter": 5}}
    )
    assert status == 200
    assert body["attributes"] == {"latency": 100, "jitter": 5}
    status, body = api.call("POST", "/proxies/svc/toxics/latency_downstream", {"toxicity": 0.25})
    assert status == 200
    assert body["toxicity"] == 0.25
    assert body["attributes"]["jitter"] == 5
    assert api.call("GET", "/proxies/svc/toxics/nope") == (
        404,
        {"error": "toxic not found", "status": 404},
    )
    assert api.call("PATCH", "/proxies/svc/toxics/nope", {"toxicity": 1}) == (
        404,
        {"error": "toxic not found", "status": 404},
    )
    assert api.call("POST", "/proxies/svc/toxics", {"type": "latency"}) == (
        409,
        {"error": "toxic already exists", "status": 409},
    )
    assert api.call("POST", "/proxies/svc/toxics", {"type": "flood"}) == (
        400,
        {"error": "invalid toxic type", "status": 400},
    )
    assert api.call("POST", "/proxies/svc/toxics", {"type": "latency", "stream": "x"}) == (
        400,
        {"error": "stream was invalid, can be either upstream or downstream", "status": 400},
    )
    assert api.call("POST", "/proxies/ghost/toxics", {"type": "latency"}) == (
        404,
        {"error": "proxy not found", "status": 404},
    )
    assert api.call("DELETE", "/proxies/svc/toxics/latency_downstream") == (204, None)
    assert api.call("GET", "/proxies/svc/toxics") == (200, [])
    assert api.call("GET", "/proxies/svc")[1]["toxics"] == []
    status, body = api.call("PUT", "/proxies/svc/toxics")
    assert status == 405
    assert body["status"] == 405
    assert api.call("GET", "/nothing/here")[1]["status"] == 404


def test_a_native_change_shows_in_the_toxics(api, echo):
    api.proxy("svc", echo.distant)
    api.call("POST", "/proxies/svc/toxics", {"type": "latency", "name": "slow", "toxicity": 0.5})
    status, _ = api.call(
        "PATCH",
        "/v1/proxies/svc",
        {"behavior": "100:latency+bandwidth", "options": {"latency": {"latency": 0.25}}},
    )
    assert status == 200
    _, toxics = api.call("GET", "/proxies/svc/toxics")
    assert [(t["name"], t["toxicity"], t["attributes"]) for t in toxics] == [
        ("latency_downstream", 1.0, {"latency": 250, "jitter": 0}),
        ("bandwidth_downstream", 1.0, {"rate": 0}),
    ]
    api.call("PATCH", "/v1/proxies/svc", {"behavior": "30:latency,20:abort"})
    assert api.call("GET", "/proxies/svc/toxics") == (200, [])
    # adding a toxic then starts from what toxiproxy sees: none
    api.call("POST", "/proxies/svc/toxics", {"type": "timeout", "toxicity": 0.5})
    assert api.call("GET", "/v1/proxies/svc")[1]["behavior"] == "50:timeout"


def test_two_toxics_of_a_type_survive_a_native_reset(api, echo):
    api.proxy("svc", echo.distant)
    api.call("POST", "/proxies/svc/toxics", {"type": "latency", "attributes": {"latency": 5}})
    api.call(
        "POST",
        "/proxies/svc/toxics",
        {"type": "latency", "stream": "upstream", "attributes": {"latency": 7}},
    )
    assert api.call("GET", "/v1/proxies/svc")[1]["behavior"] == "100:latency+latency_2"
    assert api.call("POST", "/v1/reset") == (204, None)
    assert api.call("GET", "/proxies/svc/toxics") == (200, [])
    assert api.call("POST", "/proxies/svc/toxics", {"type": "latency", "name": "x"})[0] == 200


def read_to_the_end(sock: socket.socket) -> bytes:
    """Every byte until EOF; a reset raises (``read_until_eof`` takes it as the end)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def echoed(address: tuple[str, int]) -> bool:
    """Whether a round trip came back whole (a reset may come before the half-close)."""
    try:
        return roundtrip(address, b"ping") == b"ping"
    except OSError:
        return False


# -- through real sockets ---------------------------------------------------------------


def test_latency_really_delays_a_round_trip(api, echo):
    api.proxy("svc", echo.distant)
    address = api.address("svc")
    started = time.monotonic()
    assert roundtrip(address) == b"ping"
    quick = time.monotonic() - started
    api.call("POST", "/proxies/svc/toxics", {"type": "latency", "attributes": {"latency": 100}})
    started = time.monotonic()
    assert roundtrip(address) == b"ping"
    slow = time.monotonic() - started
    assert slow >= 0.095, (quick, slow)
    assert slow < 5


def test_latency_both_ways_adds_up(api, echo):
    api.proxy("svc", echo.distant)
    for stream in ("upstream", "downstream"):
        api.call(
            "POST",
            "/proxies/svc/toxics",
            {"type": "latency", "stream": stream, "attributes": {"latency": 80}},
        )
    started = time.monotonic()
    assert roundtrip(api.address("svc")) == b"ping"
    assert time.monotonic() - started >= 0.155


def test_reset_peer_resets_the_connection(api, echo):
    api.proxy("svc", echo.distant)
    api.call("POST", "/proxies/svc/toxics", {"type": "reset_peer"})
    with socket.create_connection(api.address("svc"), timeout=10) as sock:
        sock.sendall(b"ping")
        with pytest.raises(ConnectionResetError):
            read_to_the_end(sock)


def test_timeout_closes_a_silent_connection_and_lets_no_data_through(api, echo):
    api.proxy("svc", echo.distant)
    api.call("POST", "/proxies/svc/toxics", {"type": "timeout", "attributes": {"timeout": 150}})
    with socket.create_connection(api.address("svc"), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"ping")
        assert read_until_eof(sock) == b""
        assert time.monotonic() - started >= 0.14


def test_limit_data_closes_after_that_many_bytes(api, echo):
    api.proxy("svc", echo.distant)
    api.call("POST", "/proxies/svc/toxics", {"type": "limit_data", "attributes": {"bytes": 10}})
    with socket.create_connection(api.address("svc"), timeout=10) as sock:
        sock.sendall(b"x" * 100)
        assert read_until_eof(sock) == b"x" * 10


def test_toxicity_one_half_over_200_connections_lands_near_half(api, echo):
    api.proxy("svc", echo.distant)
    api.call("POST", "/proxies/svc/toxics", {"type": "reset_peer", "toxicity": 0.5})
    address = api.address("svc")
    hit = sum(not echoed(address) for _ in range(200))
    assert 60 <= hit <= 140, hit  # binomial(200, 0.5): mean 100, sd about 7


def test_a_disabled_proxy_refuses_connections_until_enabled(toxiproxy_client, api, echo):
    proxy = toxiproxy_client.create(upstream=echo.distant, name="svc")
    address = api.address("svc")
    with proxy.down(), pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=5).close()
    assert roundtrip(address) == b"ping"


# -- fuzz: no 500, and the server lives on ------------------------------------------------

ROUTES = [
    ("GET", "/version"),
    ("POST", "/reset"),
    ("GET", "/proxies"),
    ("POST", "/proxies"),
    ("POST", "/populate"),
    ("GET", "/proxies/fuzz"),
    ("POST", "/proxies/fuzz"),
    ("PATCH", "/proxies/fuzz"),
    ("DELETE", "/proxies/fuzz"),
    ("GET", "/proxies/fuzz/toxics"),
    ("POST", "/proxies/fuzz/toxics"),
    ("GET", "/proxies/fuzz/toxics/latency_downstream"),
    ("POST", "/proxies/fuzz/toxics/latency_downstream"),
    ("PATCH", "/proxies/fuzz/toxics/latency_downstream"),
    ("DELETE", "/proxies/fuzz/toxics/latency_downstream"),
]
KEYS = st.sampled_from(
    ["name", "type", "stream", "toxicity", "attributes", "listen", "upstream", "enabled",
     "latency", "jitter", "rate", "delay", "timeout", "bytes", "average_size", "size_variation"]
)  # fmt: skip
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.sampled_from(
        ["latency", "bandwidth", "timeout", "noop", "upstream", "downstream", "fuzz", ""]
    )
    | st.text(max_size=12)
)
BODIES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS | st.text(max_size=5), inner, max_size=6),
    max_leaves=12,
)  # fmt: skip


def _loopback_only(body: object) -> object:
    """No listen address but loopback, no upstream that needs a DNS lookup."""
    if isinstance(body, list):
        return [_loopback_only(item) for item in body]
    if isinstance(body, dict):
        body = dict(body)
        if isinstance(body.get("listen"), str):
            body["listen"] = "127.0.0.1:0"
        if isinstance(body.get("upstream"), str):
            body["upstream"] = "127.0.0.1:9"
        if isinstance(body.get("name"), str) and "/" in body["name"]:
            body["name"] = "slash"
    return body


@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(route=st.sampled_from(ROUTES), body=BODIES)
def test_random_bodies_never_get_a_500(api, route, body):
    if api.call("GET", "/proxies/fuzz")[0] == 404:
        api.proxy("fuzz", "127.0.0.1:9")
        api.call("POST", "/proxies/fuzz/toxics", {"type": "latency"})
    method, path = route
    raw = json.dumps(_loopback_only(body), allow_nan=True).encode()
    status, answer = api.call(method, path, raw=raw)
    assert status < 500, (method, path, raw, answer)
    if status >= 400:
        assert set(answer) >= {"error", "status"}
        assert answer["status"] == status
    assert api.call("GET", "/version")[0] == 200


def test_a_bandwidth_of_zero_blocks_the_stream_as_toxiproxy_does(api, echo):
    """Users simulate a partition with ``rate: 0``: toxiproxy then lets nothing
    through, where vaurien's ``bandwidth`` at 0 would not limit at all."""
    assert behavior_of([parse_toxic({"type": "bandwidth"})], {}) == (
        "100:timeout",
        {"timeout": {"timeout": 0.0}},
    )
    api.proxy("svc", echo.distant)
    api.call("POST", "/proxies/svc/toxics", {"type": "bandwidth", "attributes": {"rate": 0}})
    _, toxics = api.call("GET", "/proxies/svc/toxics")
    assert [(t["type"], t["attributes"]) for t in toxics] == [("bandwidth", {"rate": 0})]
    with socket.create_connection(api.address("svc"), timeout=10) as sock:
        sock.sendall(b"ping")
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(10)
    api.call("DELETE", "/proxies/svc/toxics/bandwidth_downstream")
    assert roundtrip(api.address("svc")) == b"ping"
