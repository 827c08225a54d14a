"""What a real HTTP client does when the network misbehaves, one fault per test.

Run with ``pytest examples``: ``conftest.py`` starts the HTTP backend and
points ``vaurien_proxy`` at it; each test picks its fault with the marker.
"""

from __future__ import annotations

import http.client
import json
import socket
import time

import pytest
from status_client import fetch_status


def test_transparent_proxy(vaurien_proxy):
    assert fetch_status(*vaurien_proxy.address) == {"status": "ok", "path": "/status"}


@pytest.mark.vaurien("delay", delay__sleep=0.5)
def test_a_slow_backend_trips_the_client_timeout(vaurien_proxy):
    with pytest.raises(TimeoutError):
        fetch_status(*vaurien_proxy.address, timeout=0.2)


@pytest.mark.vaurien("delay", delay__sleep=0.2)
def test_a_slow_backend_within_the_timeout_is_fine(vaurien_proxy):
    started = time.monotonic()
    assert fetch_status(*vaurien_proxy.address, timeout=5)["status"] == "ok"
    assert time.monotonic() - started >= 0.2


@pytest.mark.vaurien("hang")
def test_a_hung_backend_needs_a_timeout(vaurien_proxy):
    with pytest.raises(TimeoutError):
        fetch_status(*vaurien_proxy.address, timeout=0.3)


@pytest.mark.vaurien("blackout")
def test_a_dropped_connection_is_a_connection_error(vaurien_proxy):
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        fetch_status(*vaurien_proxy.address)


@pytest.mark.vaurien("error")
def test_garbage_instead_of_a_reply_is_a_protocol_error(vaurien_proxy):
    with pytest.raises((http.client.HTTPException, ConnectionError, ValueError)):
        fetch_status(*vaurien_proxy.address)


@pytest.mark.vaurien("transient")
def test_one_retry_gets_past_a_transient_failure(vaurien_proxy):
    assert fetch_status(*vaurien_proxy.address, retries=1)["status"] == "ok"
    first, second = vaurien_proxy.connections
    assert first.handler == second.handler == "transient"


@pytest.mark.vaurien("transient", transient__agitate=3)
def test_too_few_retries_give_up(vaurien_proxy):
    with pytest.raises((http.client.HTTPException, ConnectionError, ValueError)):
        fetch_status(*vaurien_proxy.address, retries=2)
    assert len(vaurien_proxy.connections) == 3


def test_a_pooled_connection_feels_a_live_change(vaurien_proxy):
    connection = http.client.HTTPConnection(*vaurien_proxy.address, timeout=0.3)
    try:
        connection.request("GET", "/one")
        assert json.loads(connection.getresponse().read())["path"] == "/one"
        with vaurien_proxy.set_behavior("hang"):
            connection.request("GET", "/two")
            with pytest.raises(socket.timeout):
                connection.getresponse()
    finally:
        connection.close()
    assert fetch_status(*vaurien_proxy.address)["status"] == "ok"  # restored


def test_several_proxies_in_one_test(vaurien_proxy_factory, vaurien_distant):
    fast = vaurien_proxy_factory(vaurien_distant)
    slow = vaurien_proxy_factory(vaurien_distant, behavior="delay", delay__sleep=0.3)
    assert fetch_status(*fast.address, timeout=0.2)["status"] == "ok"
    with pytest.raises(TimeoutError):
        fetch_status(*slow.address, timeout=0.1)


@pytest.mark.vaurien("reset_peer", reset_peer__timeout=0.05)
def test_a_reset_connection_is_a_connection_error(vaurien_proxy):
    with pytest.raises(ConnectionResetError):
        fetch_status(*vaurien_proxy.address)


def test_an_outage_refuses_connections_and_recovers(vaurien_proxy):
    with vaurien_proxy.down(), pytest.raises(ConnectionRefusedError):
        fetch_status(*vaurien_proxy.address)
    assert fetch_status(*vaurien_proxy.address)["status"] == "ok"


@pytest.mark.vaurien("latency+slicer", latency__latency=0.1, slicer__average_size=8)
def test_a_slow_and_fragmented_network_still_yields_the_document(vaurien_proxy):
    started = time.monotonic()
    assert fetch_status(*vaurien_proxy.address)["status"] == "ok"
    assert time.monotonic() - started >= 0.1
