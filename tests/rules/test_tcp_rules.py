"""Rules under tcp: the unit is the connection. Through real sockets."""

from __future__ import annotations

import pytest

from pytest_vaurien import ConfigError, Proxy
from pytest_vaurien.rules import Rule
from tests.client import roundtrip, settled


def outcomes(proxy: Proxy, count: int) -> list[bool]:
    """For each of ``count`` connections in turn: did the echo come back?"""
    results = []
    for _ in range(count):
        try:
            results.append(roundtrip(proxy.address, b"ping", timeout=5) == b"ping")
        except OSError:  # reset before the request was even sent
            results.append(False)
    return results


def test_first_two_connections_get_the_fault_exactly(echo_server):
    with Proxy(echo_server.distant) as proxy:
        rule = proxy.add_rule(Rule("reset_peer", schedule="first:2"))
        assert outcomes(proxy, 5) == [False, False, True, True, True]
        records = settled(proxy)
    assert (rule.matched, rule.fired) == (5, 2)
    assert [record.handler for record in records] == ["reset_peer"] * 2 + ["dummy"] * 3


def test_rules_are_tried_in_order_then_the_behavior(echo_server):
    rules = [
        Rule("dummy", schedule="at:3", name="spare"),
        Rule("reset_peer", schedule="every:2", name="even"),
    ]
    with Proxy(echo_server.distant, "blackout") as proxy:
        proxy.set_rules(rules)
        assert outcomes(proxy, 4) == [False, False, True, False]
        records = settled(proxy)
        assert [r.handler for r in records] == ["blackout", "reset_peer", "dummy", "blackout"]
        spare, even = proxy.rules
    # a rule that fired stops the search: "even" never saw the third connection,
    # so the fourth is its third unit (ordinals count what the rule matched)
    assert (spare.matched, spare.fired) == (4, 1)
    assert (even.matched, even.fired) == (3, 1)


def _fired_ordinals(distant: str, seed: int) -> list[int]:
    with Proxy(distant, seed=seed) as proxy:
        proxy.add_rule("reset_peer; percent=40")
        results = outcomes(proxy, 30)
    return [ordinal for ordinal, ok in enumerate(results, start=1) if not ok]


def test_percent_draws_replay_with_the_seed(echo_server):
    first = _fired_ordinals(echo_server.distant, 11)
    assert 3 <= len(first) <= 25
    assert _fired_ordinals(echo_server.distant, 11) == first
    assert _fired_ordinals(echo_server.distant, 12) != first


def test_rule_options_apply_to_that_rule_only(echo_server):
    with Proxy(echo_server.distant, "delay", options={"delay": {"sleep": 0.01}}) as proxy:
        proxy.add_rule(Rule("delay", sleep=0.05, schedule="first:1"))
        assert outcomes(proxy, 2) == [True, True]
        records = settled(proxy)
    assert records[0].options["delay"]["sleep"] == 0.05
    assert records[1].options["delay"]["sleep"] == 0.01


def test_live_rules_by_name_and_as_context_managers(echo_server):
    with Proxy(echo_server.distant) as proxy:
        with proxy.add_rule("reset_peer; name=down") as rule:
            assert proxy.rule("down") is rule
            assert outcomes(proxy, 1) == [False]
        assert proxy.rules == []
        assert outcomes(proxy, 1) == [True]
        with pytest.raises(KeyError, match="no rule named 'down'; known: none"):
            proxy.rule("down")
        proxy.set_rules(["hang; schedule=first:0", "error; schedule=first:0"])
        assert [r.name for r in proxy.rules] == ["hang#1", "error#2"]
        with pytest.raises(KeyError, match="known: hang#1, error#2"):
            proxy.rule("nope")


def test_a_bad_rule_changes_nothing(echo_server):
    with Proxy(echo_server.distant) as proxy:
        kept = proxy.add_rule("reset_peer; schedule=first:0; name=kept")
        with pytest.raises(ConfigError, match="unknown handler 'nope'"):
            proxy.add_rule("nope")
        with pytest.raises(ConfigError, match="option 'slep'"):
            proxy.set_rules(["delay; slep=1"])
        with pytest.raises(ConfigError, match="needs a protocol; under tcp"):
            proxy.add_rule(Rule("error", match="GET /"))
        with pytest.raises(ConfigError, match="the name is taken"):
            proxy.add_rule("hang; name=kept")
        assert proxy.rules == [kept]


def test_a_marker_rule_object_is_copied_per_proxy(echo_server):
    shared = Rule("reset_peer", schedule="first:1")
    for _ in range(2):
        with Proxy(echo_server.distant) as proxy:
            live = proxy.add_rule(shared)
            assert outcomes(proxy, 2) == [False, True]
        assert live is not shared
        assert (live.matched, live.fired) == (2, 1)
    assert (shared.matched, shared.fired) == (0, 0)


def test_a_behavior_change_keeps_the_rules_and_their_counts(echo_server):
    with Proxy(echo_server.distant) as proxy:
        rule = proxy.add_rule("reset_peer; schedule=first:1")
        assert outcomes(proxy, 1) == [False]
        with proxy.set_behavior("blackout"):
            assert proxy.rules == [rule]
            assert outcomes(proxy, 1) == [False]
        assert outcomes(proxy, 1) == [True]
        assert proxy.rules == [rule]
    assert (rule.matched, rule.fired) == (3, 1)
