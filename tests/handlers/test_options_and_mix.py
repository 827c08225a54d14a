"""Typed options from ini and command-line strings; a behavior mix over many connections."""

from __future__ import annotations

from tests.handlers.helpers import run_inner


def test_every_typed_option_converts_from_ini_strings(pytester, backend):
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
        pytester,
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


def test_every_typed_option_converts_from_command_line_strings(pytester, backend):
    run_inner(
        pytester,
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


def test_half_delay_half_blackout_over_200_connections(pytester, backend):
    run_inner(
        pytester,
        f"""
        from concurrent.futures import ThreadPoolExecutor

        @pytest.mark.vaurien("50:delay,50:blackout", distant="{backend.distant}",
                             delay__sleep=0.01)
        def test_it(vaurien_proxy):
            with ThreadPoolExecutor(20) as pool:
                replies = list(pool.map(lambda _: roundtrip(vaurien_proxy.address), range(200)))
            delayed = replies.count(b"ping")
            assert delayed + replies.count(b"") == 200
            assert 70 <= delayed <= 130, delayed
            records = vaurien_proxy.connections
            assert sum(r.handler == "delay" for r in records) == delayed
    """,
    )
