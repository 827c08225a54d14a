"""``Rule`` and its string form, without sockets."""

from __future__ import annotations

import pytest

from pytest_vaurien import ConfigError
from pytest_vaurien.rules import Rule, coerce_rules, parse_rule


def test_the_string_form_reads_rule_keys_and_fault_options():
    rule = parse_rule("error; status=503; match=POST /payments/*; schedule=first:2; name=pay")
    assert rule.fault == "error"
    assert rule.match == "POST /payments/*"
    assert str(rule.schedule) == "first:2"
    assert rule.name == "pay"
    assert rule.options == {"status": "503"}
    assert rule.handler_options == {("error", "status"): "503"}
    assert rule.percent == 100
    assert rule.per == "rule"


def test_str_round_trips():
    text = "error; status=503; match=POST /payments/*; schedule=first:2; percent=50; per=connection; name=pay"
    assert str(parse_rule(text)) == text
    assert str(parse_rule(str(Rule("hang", schedule="at:2")))) == "hang; schedule=at:2"


def test_chain_options_name_their_handler():
    rule = Rule("latency+bandwidth", latency__latency=0.1, bandwidth__rate=5)
    assert rule.handler_options == {("latency", "latency"): 0.1, ("bandwidth", "rate"): 5}
    with pytest.raises(ConfigError, match="for a chain, name the handler: NAME__OPTION=value"):
        Rule("latency+bandwidth", rate=5)


def test_a_copy_has_its_own_counters():
    rule = Rule("error", schedule="first:1")
    rule.matched = rule.fired = 3
    copy = rule.copy()
    assert (copy.matched, copy.fired) == (0, 0)
    assert str(copy) == str(rule)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is not a rule; expected the fault, then '; key=value' pairs"),
        ("error; status", "'status' is not a key=value pair"),
        ("error; percent=120", "percent='120' is not valid; expected a number from 0 to 100"),
        ("error; percent=lots", "percent='lots' is not valid"),
        ("error; per=test", "per='test' is not valid; expected 'rule' or 'connection'"),
        ("error; schedule=first:x", "schedule term 'first:x' is not valid"),
        ("err or", "fault 'err or' has handler name 'err or'"),
        ("error; name=a; name=b", "'name' is given twice"),
    ],
)
def test_a_bad_piece_is_named_with_its_source(text, message):
    with pytest.raises(ConfigError) as raised:
        parse_rule(text, "--vaurien-rule")
    assert str(raised.value).startswith("--vaurien-rule: ")
    assert message in str(raised.value)


def test_rule_objects_check_their_pieces_too():
    with pytest.raises(ConfigError, match=r"^Rule\('error'\): percent=-1 is not valid"):
        Rule("error", percent=-1)
    with pytest.raises(ConfigError, match="match=3 is not valid"):
        Rule("error", match=3)


def test_coerce_rules_takes_objects_and_strings_and_names_positions():
    rules = coerce_rules([Rule("hang"), "error; schedule=first:1"], "marker: rules")
    assert [rule.fault for rule in rules] == ["hang", "error"]
    with pytest.raises(ConfigError, match=r"^marker: rules\[1\]: 5 is not a rule"):
        coerce_rules([Rule("hang"), 5], "marker: rules")
    with pytest.raises(ConfigError, match=r"^marker: rules 'error; percent=x': percent='x'"):
        coerce_rules(["error; percent=x"], "marker: rules")
