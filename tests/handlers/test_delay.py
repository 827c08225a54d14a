"""``delay``: each chunk waits ``sleep`` (+/- ``jitter``) in the chosen direction."""

from __future__ import annotations

import random

from pytest_vaurien.handlers.delay import Delay
from tests.handlers.helpers import run_inner


def test_delay_before_holds_requests_not_the_greeting(pytester, greeter):
    run_inner(
        pytester,
        f"""
        @pytest.mark.vaurien("delay", distant="{greeter.distant}", delay__sleep=0.4)
        def test_it(vaurien_proxy):
            with socket.create_connection(vaurien_proxy.address, timeout=10) as sock:
                started = time.monotonic()
                assert read_exactly(sock, 6) == b"hello\\n"
                greeting = time.monotonic() - started
                started = time.monotonic()
                sock.sendall(b"ping")
                assert read_exactly(sock, 4) == b"ping"
                echo = time.monotonic() - started
            assert greeting < 0.3, greeting
            assert 0.38 <= echo < 2.0, echo
    """,
    )


def test_delay_after_holds_replies(pytester, greeter):
    run_inner(
        pytester,
        f"""
        @pytest.mark.vaurien("delay", distant="{greeter.distant}", delay__sleep=0.4,
                             delay__before=False)
        def test_it(vaurien_proxy):
            with socket.create_connection(vaurien_proxy.address, timeout=10) as sock:
                started = time.monotonic()
                assert read_exactly(sock, 6) == b"hello\\n"
                greeting = time.monotonic() - started
            assert 0.38 <= greeting < 2.0, greeting
    """,
    )


def test_delay_jitter_varies_within_bounds(pytester, backend):
    run_inner(
        pytester,
        f"""
        @pytest.mark.vaurien("delay", distant="{backend.distant}", delay__sleep=0.15,
                             delay__jitter=0.1)
        def test_it(vaurien_proxy):
            took = []
            for _ in range(8):
                started = time.monotonic()
                assert roundtrip(vaurien_proxy.address) == b"ping"
                took.append(time.monotonic() - started)
            # one delayed chunk per roundtrip; the EOF follows it without a delay of its own
            assert all(0.04 <= t < 1.5 for t in took), took
            assert max(took) - min(took) > 0.01, took
    """,
    )


def test_pause_never_goes_below_zero():
    handler = Delay({"sleep": "0.05", "jitter": "0.2"})
    handler.__dict__["_random"] = random.Random(1)
    pauses = [handler.pause() for _ in range(500)]
    assert min(pauses) == 0.0
    assert max(pauses) <= 0.25
    assert len(set(pauses)) > 100
