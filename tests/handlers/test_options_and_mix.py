"""Typed options from ini and command-line strings; a behavior mix over many connections."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from pytest_vaurien import Proxy
from tests.client import settled, timed_roundtrip


def test_every_typed_option_converts_from_ini_strings(pytester, run_inner, backend):
    pytester.makeini(
        f"""
        [pytest]
        vaurien_distant = {backend.distant}
        vaurien_behavior = 10:delay,10:error,10:transient
        vaurien_handlers =
            delay.sleep = 0.25
            delay.before = no
            delay.jitter = 0.01
            error.inject = yes
            error.warmup = 3
            transient.agitate = 2
    """
    )
    run_inner(
        """
        def test_it(vaurien_proxy):
            delay, error, transient = (vaurien_proxy.handlers[n]
                                       for n in ("delay", "error", "transient"))
            assert (delay.option("sleep"), delay.option("before"), delay.option("jitter")) == \\
                (0.25, False, 0.01)
            assert (error.option("inject"), error.option("warmup")) == (True, 3)
            assert transient.option("agitate") == 2
    """,
    )


def test_every_typed_option_converts_from_command_line_strings(run_inner, backend):
    run_inner(
        """
        def test_it(vaurien_proxy):
            delay, transient = vaurien_proxy.handlers["delay"], vaurien_proxy.handlers["transient"]
            assert (delay.option("sleep"), delay.option("before"), delay.option("jitter")) == \\
                (0.3, True, 0.0)
            assert (transient.option("inject"), transient.option("warmup"),
                    transient.option("agitate")) == (False, 1, 4)
    """,
        "--vaurien-distant",
        backend.distant,
        "--vaurien-behavior",
        "delay+transient",
        "--vaurien-handler",
        "delay.sleep=0.3",
        "--vaurien-handler",
        "delay.before=ON",
        "--vaurien-handler",
        "transient.inject=0",
        "--vaurien-handler",
        "transient.warmup=1",
        "--vaurien-handler",
        "transient.agitate=4",
    )


def test_bad_option_values_are_usage_errors(pytester):
    pytester.makepyfile("def test_it(): pass")
    result = pytester.runpytest("--vaurien-handler", "error.warmup=soon")
    result.stderr.fnmatch_lines(
        [
            "ERROR: --vaurien-handler: handler 'error': option 'warmup' = 'soon' is not valid; "
            "expected an integer"
        ]
    )


def test_bad_direction_is_named(pytester):
    pytester.makepyfile("def test_it(): pass")
    result = pytester.runpytest("--vaurien-handler", "latency.direction=sideways")
    result.stderr.fnmatch_lines(
        [
            "ERROR: --vaurien-handler: handler 'latency': option 'direction' = 'sideways' is not "
            "valid; expected one of both, downstream, upstream"
        ]
    )


def test_half_delay_half_blackout_over_200_connections(backend):
    """Each connection gets the fault it drew, and only that one: delayed replies
    come late and whole, blacked-out ones never."""
    options = {"delay": {"sleep": 0.05}}
    with Proxy(backend.address, "50:delay,50:blackout", options=options, seed=4) as proxy:
        with ThreadPoolExecutor(20) as pool:
            results = list(pool.map(lambda _: timed_roundtrip(proxy.address), range(200)))
        records = settled(proxy)
    delayed = [seconds for reply, seconds in results if reply == b"ping"]
    blacked_out = [seconds for reply, seconds in results if reply == b""]
    assert len(delayed) + len(blacked_out) == 200
    assert 70 <= len(delayed) <= 130, len(delayed)
    assert min(delayed) >= 0.045, min(delayed)  # no delay-drawn connection went through early
    assert sum(r.handler == "delay" for r in records) == len(delayed)
    assert all(r.bytes_to_client == 0 for r in records if r.handler == "blackout")
