"""``transient``: the first attempts fail, the retry succeeds."""

from __future__ import annotations

from pytest_vaurien import Proxy
from tests.client import roundtrip


def test_transient_fails_the_first_attempt_then_lets_through(backend):
    with Proxy(backend.address, "transient") as proxy:
        replies = [roundtrip(proxy.address) for _ in range(3)]
    assert len(replies[0]) == 1000
    assert replies[1:] == [b"ping", b"ping"]


def test_a_new_proxy_starts_counting_from_zero(backend):
    for _ in range(2):
        with Proxy(backend.address, "transient") as proxy:
            assert roundtrip(proxy.address) != b"ping"
            assert roundtrip(proxy.address) == b"ping"


def test_transient_agitate_and_warmup(backend):
    options = {"transient": {"agitate": 2, "warmup": 1}}
    with Proxy(backend.address, "transient", options=options) as proxy:
        replies = [roundtrip(proxy.address) for _ in range(5)]
    assert [r == b"ping" for r in replies] == [True, False, False, True, True]
