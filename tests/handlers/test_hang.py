"""``hang``: nothing forwarded, nothing answered, the connection stays open."""

from __future__ import annotations

import socket
import time

from pytest_vaurien import Proxy
from pytest_vaurien.records import Ending
from tests.handlers.helpers import run_inner
from tests.servers import wait_until


def test_hang_times_the_client_out_and_teardown_stays_bounded(pytester, backend):
    started = time.monotonic()
    result = run_inner(
        pytester,
        f"""
        @pytest.mark.vaurien("hang", distant="{backend.distant}")
        def test_it(vaurien_proxy):
            with socket.create_connection(vaurien_proxy.address, timeout=0.5) as sock:
                sock.sendall(b"ping")
                sock.shutdown(socket.SHUT_WR)  # even EOF is swallowed
                with pytest.raises(socket.timeout):
                    sock.recv(10)
                assert vaurien_proxy.connections[0].open
    """,
        "--durations=0",
        "--durations-min=0",
    )
    assert time.monotonic() - started < 10
    teardown = [line for line in result.outlines if "teardown" in line and "test_it" in line]
    assert teardown, result.outlines
    assert float(teardown[0].split("s", 1)[0]) < 1.0, teardown
    assert backend.total_received() == 0


def test_hang_close_on_eof_frees_the_connection_when_the_client_leaves(backend):
    options = {"hang": {"close_on_eof": "yes"}}
    with Proxy(backend.address, "hang", options=options) as proxy:
        with socket.create_connection(proxy.address, timeout=5) as sock:
            sock.sendall(b"ping")
            wait_until(lambda: proxy.connections)
        wait_until(lambda: not proxy.connections[0].open)
        assert proxy.connections[0].ending is Ending.HANDLER_CLOSED
    assert backend.total_received() == 0
