"""``transient`` past its ``agitate`` relays connections: they are not faults."""

from __future__ import annotations

from pytest_vaurien import Proxy
from tests.client import roundtrip, settled


def test_spared_connections_are_not_counted_as_faults(echo_server):
    options = {"transient": {"agitate": 1}}
    with Proxy(echo_server.distant, "transient", options=options) as proxy:
        replies = [roundtrip(proxy.address, b"ping") for _ in range(3)]
        records = settled(proxy)
        stats = proxy.stats
    assert replies[0] != b"ping"
    assert replies[1:] == [b"ping", b"ping"]
    assert [record.injected for record in records] == [True, False, False]
    assert stats.handlers == {"transient": 3}
    assert stats.faults == {"transient": 1}
