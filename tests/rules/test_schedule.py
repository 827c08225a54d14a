"""The schedule grammar, evaluated without sockets."""

from __future__ import annotations

import pytest

from pytest_vaurien import ConfigError
from pytest_vaurien.schedule import parse_schedule


def fires(text: str, count: int = 12, times: list[float] | None = None) -> list[int]:
    """The ordinals 1..count that fire, counting fires as a rule would."""
    schedule = parse_schedule(text)
    fired: list[int] = []
    for ordinal in range(1, count + 1):
        at = times[ordinal - 1] if times else 0.0
        if schedule.holds(ordinal, at, len(fired)):
            fired.append(ordinal)
    return fired


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, list(range(1, 13))),
        ("", list(range(1, 13))),
        ("first:2", [1, 2]),
        ("first:0", []),
        ("after:10", [11, 12]),
        ("every:3", [3, 6, 9, 12]),
        ("every:3+1", [4, 7, 10]),
        ("every:1+5", [6, 7, 8, 9, 10, 11, 12]),
        ("at:1,5,9", [1, 5, 9]),
        ("times:2", [1, 2]),
        ("after:2&times:3", [3, 4, 5]),
        ("every:2&times:2", [2, 4]),
        ("after:1 & first:3", [2, 3]),
        ("FIRST:1", [1]),
    ],
)
def test_terms(text, expected):
    assert fires(text) == expected


def test_window_counts_seconds_since_the_proxy_started():
    times = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert fires("window:1..2", 6, times) == [3, 4]
    assert fires("window:1.5..", 6, times) == [4, 5, 6]
    assert fires("window:0..0", 6, times) == []


def test_str_gives_the_text_back():
    assert str(parse_schedule(" first:2&times:1 ")) == "first:2&times:1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "first:x",
            "schedule term 'first:x' is not valid; expected first:N (ordinals 1 to N), N a whole number >= 0",
        ),
        ("first:-1", "schedule term 'first:-1' is not valid"),
        ("every:0", "expected every:K or every:K+O"),
        ("at:1,,3", "schedule term 'at:1,,3' is not valid"),
        ("at:0", "schedule term 'at:0' is not valid"),
        ("window:2..1", "schedule term 'window:2..1' ends before it starts"),
        ("window:1", "expected window:T0..T1 or window:T0.."),
        ("window:nan..", "times in seconds >= 0"),
        ("sometimes:3", "schedule term 'sometimes:3' is not valid; expected one of after:N"),
        ("first", "schedule term 'first' is not valid"),
        ("first:2&", "has an empty term"),
    ],
)
def test_a_bad_term_is_named(text, message):
    with pytest.raises(ConfigError) as raised:
        parse_schedule(text, "--vaurien-rule")
    assert str(raised.value).startswith("--vaurien-rule: ")
    assert message in str(raised.value)


def test_a_schedule_must_be_a_string():
    with pytest.raises(ConfigError, match="schedule 3 is not a string"):
        parse_schedule(3)


def test_a_long_bad_term_is_cut_in_the_message():
    with pytest.raises(ConfigError) as raised:
        parse_schedule("first:" + "9x" * 3000)
    assert len(str(raised.value)) < 400
