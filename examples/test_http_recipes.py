"""Retry recipes, one fault per request: what docs/http.md shows, run for real.

``protocol="http"`` makes the proxy cut the traffic into requests, so a rule
can fault the first two POSTs and let the third through, on one pooled
keep-alive connection. The clients are urllib3 and requests, as in most
applications.
"""

from __future__ import annotations

import time

import pytest
import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from pytest_vaurien import Rule


def url(proxy, path):
    host, port = proxy.address
    return f"http://{host}:{port}{path}"


@pytest.fixture
def payments(http_backend):
    """What the backend received, reset for each test."""
    http_backend.payments.clear()
    return http_backend.payments


@pytest.mark.vaurien(
    protocol="http",
    rules=[Rule("error", status=503, match="POST /payments/*", schedule="first:2", name="pay")],
)
def test_urllib3_retries_a_503_until_it_goes_through(vaurien_proxy, payments):
    retries = Retry(total=3, status_forcelist=[503], allowed_methods=None, backoff_factor=0)
    pool = urllib3.PoolManager(retries=retries)
    reply = pool.request("POST", url(vaurien_proxy, "/payments/7"), body=b"10 EUR")
    assert reply.status == 201
    rule = vaurien_proxy.rule("pay")
    assert (rule.matched, rule.fired) == (3, 2)
    assert payments == [("/payments/7", b"10 EUR")]  # the two 503s never reached it


@pytest.mark.vaurien(
    protocol="http",
    rules=[Rule("error", status=503, headers={"Retry-After": "1"}, schedule="first:1")],
)
def test_retry_after_is_honoured(vaurien_proxy):
    pool = urllib3.PoolManager(retries=Retry(total=2, status_forcelist=[503]))
    started = time.monotonic()
    assert pool.request("GET", url(vaurien_proxy, "/status")).status == 200
    assert time.monotonic() - started >= 0.9  # urllib3 waited as told


@pytest.mark.vaurien(protocol="http", rules=["hang; match=GET /status"])
def test_a_request_that_hangs_hits_the_read_timeout(vaurien_proxy):
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(url(vaurien_proxy, "/status"), timeout=0.5)


@pytest.mark.vaurien(protocol="http", rules=["blackout; per=connection; schedule=at:3&times:1"])
def test_a_connection_that_dies_on_its_third_request(vaurien_proxy):
    with requests.Session() as session:
        session.mount("http://", HTTPAdapter(max_retries=Retry(total=1, connect=0, read=1)))
        codes = [session.get(url(vaurien_proxy, f"/status/{n}")).status_code for n in range(4)]
    assert codes == [200] * 4
    assert len(vaurien_proxy.connections) == 2  # the retry needed a new connection


@pytest.mark.vaurien(
    protocol="http", rules=["error; after=True; status=502; match=POST /payments/*"]
)
def test_did_my_post_happen(vaurien_proxy, payments):
    reply = requests.post(url(vaurien_proxy, "/payments/8"), data=b"5 EUR", timeout=5)
    assert reply.status_code == 502  # the client is told it failed...
    assert payments == [("/payments/8", b"5 EUR")]  # ...but the backend took the payment
