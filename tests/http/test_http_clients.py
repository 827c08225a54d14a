"""Each schedule term through HTTP with real clients: httpx (sync and async), urllib3.

A retry policy is tested against the schedule that says which requests fail;
a percentage lands near its share over 200 requests on one connection; and
the same seed fires the same ordinals alone and under xdist.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from pytest_vaurien import Proxy
from pytest_vaurien.rules import Rule


def base(proxy: Proxy) -> str:
    host, port = proxy.address
    return f"http://{host}:{port}"


# (schedule, the statuses of 6 requests in a row)
TERMS = [
    ("first:2", [503, 503, 200, 200, 200, 200]),
    ("after:4", [200, 200, 200, 200, 503, 503]),
    ("every:2", [200, 503, 200, 503, 200, 503]),
    ("every:3+1", [200, 200, 200, 503, 200, 200]),
    ("at:1,5", [503, 200, 200, 200, 503, 200]),
    ("times:1", [503, 200, 200, 200, 200, 200]),
    ("after:1&times:2", [200, 503, 503, 200, 200, 200]),
    ("window:0..", [503] * 6),
]


@pytest.mark.parametrize(("schedule", "expected"), TERMS, ids=[t for t, _ in TERMS])
def test_each_schedule_term_with_httpx(http_backend, schedule, expected):
    rules = [Rule("error", status=503, schedule=schedule)]
    with (
        Proxy(http_backend.distant, protocol="http", rules=rules) as proxy,
        httpx.Client(base_url=base(proxy)) as client,
    ):
        statuses = [client.get(f"/n{i}").status_code for i in range(6)]
        assert len(proxy.connections) == 1  # one kept-alive connection
    assert statuses == expected


def test_httpx_does_not_retry_a_request_cut_mid_flight(http_backend):
    """httpx's transport retries failed connects, not a request whose connection
    was cut: the application must, and this is how to find out."""
    rules = [Rule("blackout", schedule="first:1")]
    transport = httpx.HTTPTransport(retries=1)
    with (
        Proxy(http_backend.distant, protocol="http", rules=rules) as proxy,
        httpx.Client(base_url=base(proxy), transport=transport) as client,
    ):
        with pytest.raises(httpx.RemoteProtocolError):
            client.get("/once")
        assert client.get("/twice").status_code == 200


def test_async_httpx_with_a_retry_loop_of_its_own(http_backend):
    rules = [Rule("error", status=503, match="GET /flaky", schedule="first:2", name="flaky")]

    async def fetch_with_retry(client: httpx.AsyncClient) -> tuple[int, int]:
        for attempt in range(1, 5):
            reply = await client.get("/flaky")
            if reply.status_code != 503:
                return reply.status_code, attempt
        raise AssertionError("never got through")

    async def main(proxy: Proxy) -> list[tuple[int, int]]:
        async with httpx.AsyncClient(base_url=base(proxy)) as client:
            return [await fetch_with_retry(client), await fetch_with_retry(client)]

    with Proxy(http_backend.distant, protocol="http", rules=rules) as proxy:
        results = asyncio.run(main(proxy))
        rule = proxy.rule("flaky")
    assert results == [(200, 3), (200, 1)]
    assert (rule.matched, rule.fired) == (4, 2)


def test_a_percentage_lands_near_its_share_over_200_requests(http_backend):
    rules = [Rule("error", status=503, percent=25)]
    with (
        Proxy(http_backend.distant, protocol="http", rules=rules, seed=3) as proxy,
        httpx.Client(base_url=base(proxy)) as client,
    ):
        statuses = [client.get(f"/p{i}").status_code for i in range(200)]
        assert len(proxy.connections) == 1
    assert 30 <= statuses.count(503) <= 70  # 50 expected; the bounds are 5 sigma wide


INNER = """
import json
import os

import httpx
import pytest

from pytest_vaurien import Rule


@pytest.mark.parametrize("n", range(4))
@pytest.mark.vaurien(distant="{distant}", protocol="http", rules=[Rule("error", percent=50)])
def test_fired(vaurien_proxy, n):
    host, port = vaurien_proxy.address
    with httpx.Client(base_url=f"http://{{host}}:{{port}}") as client:
        fired = [i for i in range(1, 21) if client.get(f"/x{{i}}").status_code == 503]
    with open(os.path.join("{out}", f"fired-{{n}}.json"), "w") as out:
        json.dump(fired, out)
"""


def _fired(pytester, http_backend, *args):
    out = pytester.path / "out"
    out.mkdir(exist_ok=True)
    pytester.makepyfile(test_inner=INNER.format(distant=http_backend.distant, out=out))
    result = pytester.runpytest_subprocess("--vaurien-seed=42", "-p", "no:randomly", *args)
    result.assert_outcomes(passed=4)
    return {path.name: json.loads(path.read_text()) for path in sorted(out.glob("*.json"))}


def test_the_same_seed_fires_the_same_ordinals_alone_and_under_xdist(pytester, http_backend):
    serial = _fired(pytester, http_backend)
    parallel = _fired(pytester, http_backend, "-n", "2")
    assert serial == parallel
    assert len(serial) == 4
    assert all(3 <= len(fired) <= 17 for fired in serial.values())
    assert len({tuple(fired) for fired in serial.values()}) > 1  # each test has its own draws
