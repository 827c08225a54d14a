"""``transient``: the first attempts fail, the retry succeeds."""

from __future__ import annotations

from tests.handlers.helpers import run_inner


def test_transient_fails_the_first_attempt_then_lets_through(pytester, backend):
    run_inner(
        pytester,
        f"""
        @pytest.mark.vaurien("transient", distant="{backend.distant}")
        def test_first(vaurien_proxy):
            replies = [roundtrip(vaurien_proxy.address) for _ in range(3)]
            assert len(replies[0]) == 1000 and replies[0] != b"ping"
            assert replies[1:] == [b"ping", b"ping"]

        @pytest.mark.vaurien("transient", distant="{backend.distant}")
        def test_a_new_test_starts_from_zero(vaurien_proxy):
            assert roundtrip(vaurien_proxy.address) != b"ping"
            assert roundtrip(vaurien_proxy.address) == b"ping"
    """,
        passed=2,
    )


def test_transient_agitate_and_warmup(pytester, backend):
    run_inner(
        pytester,
        f"""
        @pytest.mark.vaurien("transient", distant="{backend.distant}", transient__agitate=2,
                             transient__warmup=1)
        def test_it(vaurien_proxy):
            replies = [roundtrip(vaurien_proxy.address) for _ in range(5)]
            assert [r == b"ping" for r in replies] == [True, False, False, True, True]
    """,
    )
