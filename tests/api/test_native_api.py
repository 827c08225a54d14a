"""The native control API over raw HTTP: its statuses, its safety checks, and a
fuzz of every route with random JSON (never a 500, the server stays up)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pytest_vaurien.client import Client
from tests.api.conftest import ControlProcess, start_control_server
from tests.servers import EchoServer

Answer = tuple[int, dict[str, str], Any]


def call(
    server: ControlProcess,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One raw call: status, headers (lower-case names), decoded JSON (or None)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request(
            method, path, body=body, headers={"User-Agent": "test", **(headers or {})}
        )
        response = connection.getresponse()
        raw = response.read()
        answer_headers = {key.lower(): value for key, value in response.getheaders()}
    finally:
        connection.close()
    return response.status, answer_headers, json.loads(raw) if raw.strip() else None


def send_json(server: ControlProcess, method: str, path: str, body: object) -> Answer:
    return call(
        server, method, path, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )


def error_of(answer: Answer, status: int) -> dict[str, Any]:
    """The native error body of ``answer``, checked to have ``status``."""
    got, headers, body = answer
    assert got == status, body
    assert headers["content-type"] == "application/json"
    assert body["status"] == status
    assert set(body["error"]) == {"message", "field", "value"}
    return dict(body["error"])


@pytest.fixture
def db(client: Client, echo_server: EchoServer) -> str:
    client.create("db", upstream=echo_server.distant)
    return "db"


def test_each_route_answers_its_status(control_server: ControlProcess, db: str) -> None:
    status, headers, body = send_json(
        control_server, "POST", "/v1/proxies", {"name": "two", "upstream": "127.0.0.1:9"}
    )
    assert (status, headers["location"], body["name"]) == (201, "/v1/proxies/two", "two")
    assert call(control_server, "GET", "/v1/proxies/two")[0] == 200
    assert send_json(control_server, "PATCH", "/v1/proxies/two", {"behavior": "50:delay"})[0] == 200
    status, _, body = send_json(control_server, "POST", "/v1/proxies/two/rules", "dummy; name=r")
    assert (status, body["name"]) == (201, "r")
    status, _, body = send_json(
        control_server, "PUT", "/v1/proxies/two/rules", {"rules": ["abort"]}
    )
    assert (status, [r["name"] for r in body["rules"]]) == (200, ["abort#1"])
    status, headers, body = call(control_server, "DELETE", "/v1/proxies/two/rules/abort%231")
    assert (status, body, headers["content-length"]) == (204, None, "0")
    assert "content-type" not in headers
    assert call(control_server, "DELETE", "/v1/proxies/two")[0] == 204
    assert call(control_server, "POST", "/v1/reset")[0] == 204
    status, _, body = call(control_server, "GET", "/v1/proxies/")  # a trailing slash is fine
    assert (status, [p["name"] for p in body["proxies"]]) == (200, ["db"])


def test_since_gives_the_later_records(
    control_server: ControlProcess, client: Client, db: str
) -> None:
    from tests.client import roundtrip

    proxy = client.proxy(db)
    for _ in range(3):
        roundtrip(proxy.address)
    status, _, body = call(control_server, "GET", "/v1/proxies/db/connections?since=0")
    assert (status, [r["index"] for r in body["connections"]]) == (200, [1, 2])
    assert call(control_server, "GET", "/v1/proxies/db/connections?since=-1")[2]["connections"]
    assert call(control_server, "GET", "/v1/proxies/db/exchanges?since=5")[2] == {"exchanges": []}
    error = error_of(call(control_server, "GET", "/v1/proxies/db/connections?since=last"), 400)
    assert (error["field"], error["value"]) == ("since", "last")


def test_405_names_the_allowed_methods(control_server: ControlProcess, db: str) -> None:
    answer = call(control_server, "DELETE", "/v1/reset")
    assert answer[1]["allow"] == "POST"
    assert "allowed: POST" in error_of(answer, 405)["message"]
    answer = call(control_server, "DELETE", "/v1/proxies")
    assert answer[1]["allow"] == "GET, POST"
    error_of(answer, 405)
    answer = call(control_server, "PATCH", "/v1/proxies/db/rules")
    assert set(answer[1]["allow"].split(", ")) == {"GET", "PUT", "POST"}
    error_of(answer, 405)


def test_unknown_paths_and_names_are_404(control_server: ControlProcess) -> None:
    assert "no such call" in error_of(call(control_server, "GET", "/v1/nothing"), 404)["message"]
    error = error_of(call(control_server, "GET", "/v1/proxies/nope/rules"), 404)
    assert (error["field"], error["value"]) == ("name", "nope")


def test_browsers_are_refused_with_403(control_server: ControlProcess) -> None:
    agent = "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"
    answer = call(control_server, "POST", "/v1/reset", headers={"User-Agent": agent})
    assert "browsers" in error_of(answer, 403)["message"]
    assert call(control_server, "GET", "/v1", headers={"User-Agent": agent})[0] == 403


def test_a_body_over_1_mib_is_refused_with_413(control_server: ControlProcess) -> None:
    big = b'{"name": "' + b"x" * (1024 * 1024) + b'"}'
    answer = call(control_server, "POST", "/v1/proxies", big, {"Content-Type": "application/json"})
    error_of(answer, 413)
    assert call(control_server, "GET", "/v1")[0] == 200


def test_a_body_that_is_not_json_is_refused(control_server: ControlProcess, db: str) -> None:
    answer = call(
        control_server, "POST", "/v1/proxies/db/rules", b"abort", {"Content-Type": "text/plain"}
    )
    assert "application/json" in error_of(answer, 415)["message"]
    error_of(call(control_server, "POST", "/v1/proxies/db/rules", b"abort"), 415)
    answer = call(
        control_server,
        "POST",
        "/v1/proxies/db/rules",
        b"{nope",
        {"Content-Type": "application/json"},
    )
    assert "not valid JSON" in error_of(answer, 400)["message"]
    # a mutation without a body needs no type
    assert call(control_server, "POST", "/v1/reset")[0] == 204
    error = error_of(call(control_server, "POST", "/v1/proxies/db/rules"), 400)
    assert error["field"] == "rule"


def test_errors_name_the_field(control_server: ControlProcess, db: str) -> None:
    cases = [
        ("POST", "/v1/proxies", {"name": "x"}, "upstream"),
        ("POST", "/v1/proxies", {"name": "x", "upstream": "h:1", "color": 1}, "color"),
        ("POST", "/v1/proxies", {"name": "/x", "upstream": "h:1"}, "name"),
        ("POST", "/v1/proxies", {"name": "x", "upstream": "h:1", "behavior": 3}, "behavior"),
        ("POST", "/v1/proxies", {"name": "x", "upstream": "h:1", "protocol": "ftp"}, "protocol"),
        ("POST", "/v1/proxies", {"name": "x", "upstream": "h:1", "enabled": "yes"}, "enabled"),
        ("POST", "/v1/proxies", {"name": "x", "upstream": "h:1", "rules": ["x y"]}, "rules[0]"),
        ("PATCH", "/v1/proxies/db", {"options": {"delay": {"sleep": "long"}}}, "options"),
        ("PATCH", "/v1/proxies/db", {"upstream": "nowhere"}, "upstream"),
        ("POST", "/v1/proxies/db/rules", {"fault": "delay", "when": 1}, "rule.when"),
        ("POST", "/v1/proxies/db/wait", {"connections": 1, "timeout": -1}, "timeout"),
        ("POST", "/v1/proxies/db/wait", {"connections": "1"}, "connections"),
    ]
    for method, path, body, field in cases:
        error = error_of(send_json(control_server, method, path, body), 400)
        assert error["field"] == field, (body, error)
    error = error_of(
        send_json(control_server, "POST", "/v1/proxies", {"name": "db", "upstream": "h:1"}), 409
    )
    assert error["field"] == "name"


def test_wait_answers_408_with_the_counts(control_server: ControlProcess, db: str) -> None:
    status, _, body = send_json(
        control_server, "POST", "/v1/proxies/db/wait", {"connections": 1, "timeout": 0.05}
    )
    assert status == 408
    assert body["connections"] == 0
    assert "waited for 1" in body["error"]["message"]


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlProcess]:
    with start_control_server(
        tmp_path_factory.mktemp("token"), env={"VAURIEN_CONTROL_TOKEN": "s3cret"}
    ) as server:
        yield server


@pytest.mark.parametrize(
    "authorization", [None, "Bearer nope", "Basic s3cret", "s3cret", "Bearer s3cret2", "Bearer"]
)
def test_a_missing_or_wrong_token_is_401(
    token_server: ControlProcess, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    answer = call(token_server, "GET", "/v1/proxies", headers=headers)
    assert answer[1]["www-authenticate"] == 'Bearer realm="vaurien"'
    assert "token" in error_of(answer, 401)["message"]


def test_the_right_token_passes(token_server: ControlProcess) -> None:
    for authorization in ("Bearer s3cret", "bearer s3cret"):
        assert call(token_server, "GET", "/v1", headers={"Authorization": authorization})[0] == 200


def test_config_file_proxy_sections_start_with_the_server(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    config = tmp_path / "vaurien.ini"
    config.write_text(
        f"[proxy:db]\ndistant = {echo_server.distant}\nbehavior = 10:delay\n\n"
        f"[proxy:cache]\ndistant = {echo_server.distant}\nprotocol = redis\n"
    )
    with start_control_server(tmp_path / "run", "--config", str(config)) as server:
        proxies = {p.name: p for p in server.client().proxies()}
        assert sorted(proxies) == ["cache", "db"]
        assert proxies["db"].data["behavior"] == "10:delay"
        assert proxies["cache"].data["protocol"] == "redis"


# -- fuzz ------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = [
    "name",
    "listen",
    "upstream",
    "protocol",
    "behavior",
    "options",
    "rules",
    "enabled",
    "fault",
    "match",
    "schedule",
    "percent",
    "per",
    "rule",
    "fired",
    "connections",
]
#: Values a field could plausibly get: strings close to valid ones, and any JSON.
NEAR_VALID = st.sampled_from(
    [
        "fuzz",
        "127.0.0.1:0",
        "127.0.0.1:9",
        "tcp",
        "http",
        "redis",
        "100:dummy",
        "50:delay",
        "dummy",
        "abort; schedule=first:2",
        "first:2",
        "rule",
        "connection",
        0,
        1,
        2,
        True,
        False,
        [],
        {},
        {"delay": {"sleep": 0}},
        ["dummy"],
    ]
)
OBJECTS = st.dictionaries(
    st.sampled_from(FIELDS) | st.text(max_size=8), NEAR_VALID | JSON_VALUES, max_size=6
)
#: A wait must stay short whatever else the body says.
SHORT_TIMEOUTS = st.sampled_from([0, 0.01, -1, "1", None, True, 1e308, float("inf")])
ADDRESSES = st.sampled_from(
    [
        "127.0.0.1:0",
        "127.0.0.1:9",
        "[::1]:0",
        "127.0.0.1",
        "127.0.0.1:x",
        ":80",
        "",
        "127.0.0.1:99999",
    ]
)
ROUTES = [
    ("GET", "/v1"),
    ("GET", "/v1/proxies"),
    ("POST", "/v1/proxies"),
    ("GET", "/v1/proxies/{name}"),
    ("PATCH", "/v1/proxies/{name}"),
    ("DELETE", "/v1/proxies/{name}"),
    ("GET", "/v1/proxies/{name}/rules"),
    ("PUT", "/v1/proxies/{name}/rules"),
    ("POST", "/v1/proxies/{name}/rules"),
    ("DELETE", "/v1/proxies/{name}/rules/{rule}"),
    ("GET", "/v1/proxies/{name}/connections"),
    ("GET", "/v1/proxies/{name}/exchanges"),
    ("POST", "/v1/proxies/{name}/wait"),
    ("POST", "/v1/reset"),
]
ANY_NAME = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=12)
#: The proxy ``fuzz`` (and its rule ``rule``) most of the time, so that routes get past the 404.
NAMES = st.one_of(st.just("fuzz"), st.just("fuzz"), st.sampled_from(["nope", "fuzz2"]), ANY_NAME)
RULE_NAMES = st.one_of(st.just("rule"), st.sampled_from(["dummy#1", "nope"]), ANY_NAME)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes | None]:
    method, pattern = draw(st.sampled_from(ROUTES))
    from urllib.parse import quote

    path = pattern.format(name=quote(draw(NAMES), safe=""), rule=quote(draw(RULE_NAMES), safe=""))
    body: object = draw(
        st.none() | OBJECTS | JSON_VALUES | st.lists(NEAR_VALID | OBJECTS, max_size=3)
    )
    if isinstance(body, dict):  # addresses stay on 127.0.0.1 (no lookups, no other host)
        for key in ("listen", "upstream"):
            if isinstance(body.get(key), str):
                body[key] = draw(ADDRESSES)
    if pattern.endswith("/wait") and isinstance(body, dict):
        if draw(st.booleans()) or "timeout" in body:
            body["timeout"] = draw(SHORT_TIMEOUTS)
        else:
            body = {**body, "timeout": 0}
    if (
        draw(st.booleans())
        and method in ("GET",)
        and pattern.endswith(("connections", "exchanges"))
    ):
        path += "?since=" + quote(draw(st.text(max_size=6)), safe="")
    raw = None if body is None else json.dumps(body).encode()
    return method, path, raw


@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=requests())
def test_fuzz_never_a_500(
    control_server: ControlProcess, echo_server: EchoServer, request: tuple[str, str, bytes | None]
) -> None:
    method, path, raw = request
    _ensure_fuzz_proxy(control_server, echo_server)
    headers = {"Content-Type": "application/json"} if raw is not None else {}
    status, _, body = call(control_server, method, path, raw, headers)
    event(f"{method} {path.split('?')[0].count('/')} {status}")
    assert status < 500, (method, path, raw, body)
    if status >= 400:
        assert body["status"] == status
        assert isinstance(body["error"]["message"], str)


def _ensure_fuzz_proxy(server: ControlProcess, echo_server: EchoServer) -> None:
    """A proxy called ``fuzz`` for the routes to find (an earlier example may
    have deleted it, reframed it or taken it down)."""
    if call(server, "GET", "/v1/proxies/fuzz")[0] == 404:
        body = {"name": "fuzz", "upstream": echo_server.distant, "rules": ["dummy; name=rule"]}
        assert send_json(server, "POST", "/v1/proxies", body)[0] == 201


@pytest.fixture(scope="module", autouse=True)
def _fuzz_targets(control_server: ControlProcess, echo_server: EchoServer) -> Iterator[None]:
    """The fuzz finds a proxy called ``fuzz`` more often than not; whatever it
    made is deleted after the module."""
    yield
    client = control_server.client()
    for proxy in client.proxies():
        client.delete(proxy.name)


def test_after_the_fuzz_the_server_is_up_and_said_no_internal_error(
    control_server: ControlProcess, client: Client, echo_server: EchoServer
) -> None:
    assert client.info()["version"]
    proxy = client.create("after", upstream=echo_server.distant)
    from tests.client import roundtrip

    assert roundtrip(proxy.address) == b"ping"
    assert control_server.process.poll() is None
    assert "internal error" not in control_server.output()
    assert "vaurien control:" not in control_server.output()
