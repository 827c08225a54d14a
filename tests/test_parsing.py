"""Parsing and conversion, without sockets."""

from __future__ import annotations

import random

import pytest

from pytest_vaurien import BaseHandler, ConfigError
from pytest_vaurien.address import format_address, parse_address
from pytest_vaurien.behavior import parse_behavior
from pytest_vaurien.settings import (
    Layer,
    parse_handler_assignment,
    parse_handler_lines,
    parse_marker_options,
    resolve,
)


class Typed(BaseHandler):
    name = "typed"
    options = {
        "sleep": ("Seconds", float, 1.0),
        "count": ("How many", int, 0),
        "flag": ("On or off", bool, True),
        "mode": ("Which", str, "a", ("a", "b")),
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:6379", ("127.0.0.1", 6379)),
        ("localhost:1", ("localhost", 1)),
        ("[::1]:8000", ("::1", 8000)),
        (("127.0.0.1", 80), ("127.0.0.1", 80)),
    ],
)
def test_parse_address(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("localhost", "has no port"),
        ("localhost:http", "has port 'http'; expected a number"),
        ("localhost:70000", "expected a number from 1 to 65535"),
        (":80", "has no host"),
        ("::1:80", "write an IPv6 address as [HOST]:PORT"),
        ("[::1]80", "expected [IPV6]:PORT"),
    ],
)
def test_parse_address_errors_name_the_value(text, message):
    with pytest.raises(ConfigError, match=r"^--x: .*" + message.replace("[", r"\[")):
        parse_address(text, "--x")


def test_format_address_brackets_ipv6():
    assert format_address(("::1", 5)) == "[::1]:5"
    assert format_address(("127.0.0.1", 5)) == "127.0.0.1:5"


def test_parse_behavior_entries_and_remainder():
    behavior = parse_behavior("20:delay, 10.5:error+dummy")
    assert [(e.percent, e.chain) for e in behavior.entries] == [
        (20.0, ("delay",)),
        (10.5, ("error", "dummy")),
    ]
    assert behavior.remainder == pytest.approx(69.5)
    assert behavior.names == ("delay", "error", "dummy")
    assert str(behavior) == "20:delay,10.5:error+dummy"


def test_bare_name_means_all_connections():
    behavior = parse_behavior("delay")
    assert behavior.entries[0].percent == 100
    assert behavior.choose(lambda: random.Random(1)) == ("delay",)
    assert behavior.names == ("delay",)


def test_dotted_paths_are_names():
    assert parse_behavior("20:pkg.mod.Handler").names == ("pkg.mod.Handler", "dummy")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("60:delay,50:error", "percentages add up to 110; at most 100"),
        ("abc:delay", "'abc:delay' has percentage 'abc'"),
        ("120:delay", "has percentage '120'; expected a number from 0 to 100"),
        ("20:delay,,10:error", "has an empty entry"),
        ("20:", "has handler name ''"),
        ("20:de lay", "has handler name 'de lay'"),
        ("20:delay+", "has handler name ''"),
        ("", "the behavior is empty"),
    ],
)
def test_parse_behavior_errors_point_at_the_piece(spec, message):
    with pytest.raises(ConfigError, match="^--vaurien-behavior: .*" + message):
        parse_behavior(spec, "--vaurien-behavior")


def test_choose_follows_the_weights():
    behavior = parse_behavior("25:a,25:b")
    rng = random.Random(3)
    draws = [behavior.choose(lambda: rng)[0] for _ in range(4000)]
    assert 800 < draws.count("a") < 1200
    assert 800 < draws.count("b") < 1200
    assert 1800 < draws.count("dummy") < 2200


@pytest.mark.parametrize(
    ("option", "text", "value"),
    [
        ("sleep", "2", 2.0),
        ("sleep", " 0.5 ", 0.5),
        ("sleep", 3, 3.0),
        ("count", "7", 7),
        ("count", 4, 4),
        ("flag", "yes", True),
        ("flag", "No", False),
        ("flag", "TRUE", True),
        ("flag", "off", False),
        ("flag", "1", True),
        ("flag", "0", False),
        ("flag", False, False),
        ("mode", "b", "b"),
    ],
)
def test_option_conversion_from_strings(option, text, value):
    converted = Typed({option: text}).option(option)
    assert converted == value
    assert type(converted) is type(value)


@pytest.mark.parametrize(
    ("option", "text", "expected"),
    [
        ("sleep", "soon", "expected a number"),
        ("count", "1.5", "expected an integer"),
        ("count", 1.5, "expected an integer"),
        ("flag", "maybe", "expected a boolean (yes/no, true/false, on/off, 1/0)"),
        ("mode", "c", "expected one of a, b"),
    ],
)
def test_option_conversion_errors_name_handler_option_value_and_type(option, text, expected):
    with pytest.raises(ConfigError) as info:
        Typed({option: text})
    assert str(info.value) == (
        f"handler 'typed': option {option!r} = {text!r} is not valid; {expected}"
    )


def test_unknown_option_lists_the_known_ones():
    with pytest.raises(
        ConfigError, match="has no option 'slep'; known options: count, flag, mode, sleep"
    ):
        Typed({"slep": 1})


def test_defaults_apply_when_unset():
    handler = Typed()
    assert (handler.option("sleep"), handler.option("count"), handler.option("flag")) == (
        1.0,
        0,
        True,
    )


def test_handler_assignments():
    assert parse_handler_assignment("delay.sleep=2", "x") == (("delay", "sleep"), "2")
    assert parse_handler_assignment("handlers.delay.sleep = 2 ", "x") == (("delay", "sleep"), "2")
    assert parse_handler_lines(["", "# comment", "delay.before = no"], "x") == {
        ("delay", "before"): "no"
    }
    with pytest.raises(
        ConfigError,
        match=r"^--vaurien-handler: 'delay=2' is not an option "
        "setting; expected NAME.OPTION=VALUE",
    ):
        parse_handler_assignment("delay=2", "--vaurien-handler")


def test_marker_options():
    assert parse_marker_options({"delay__sleep": 2}, "m") == {("delay", "sleep"): 2}
    with pytest.raises(ConfigError, match="unexpected keyword argument 'sleep'"):
        parse_marker_options({"sleep": 2}, "m")


def test_resolve_takes_layers_from_low_to_high():
    settings = resolve(
        [
            Layer(
                "ini", distant="127.0.0.1:1", behavior="10:delay", options={("delay", "sleep"): "1"}
            ),
            Layer("cli", behavior="20:delay", options={("delay", "sleep"): "2"}),
            Layer("marker", options={("delay", "before"): False}),
        ]
    )
    assert settings.distant == ("127.0.0.1", 1)
    assert settings.distant_source == "ini"
    assert str(settings.behavior) == "20:delay"
    assert {k: s.value for k, s in settings.options["delay"].items()} == {
        "sleep": "2",
        "before": False,
    }
    assert settings.options["delay"]["sleep"].source == "cli"
