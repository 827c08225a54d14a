"""The fault plan, without sockets: built once from settings, decided per unit."""

from __future__ import annotations

import random

import pytest

from pytest_vaurien import BaseHandler, ConfigError, HandlerError
from pytest_vaurien.plan import Unit, check_settings, plan_from_settings, relayered
from pytest_vaurien.registry import make_plugin_manager, registry_from_plugins
from pytest_vaurien.settings import Layer, resolve

CONVERSIONS: list[str] = []


class Counted(str):
    """An option type that notes each conversion."""

    def __new__(cls, value: object) -> Counted:
        CONVERSIONS.append(str(value))
        return super().__new__(cls, str(value))


class Noted(BaseHandler):
    name = "noted"
    options = {"label": ("A label", Counted, "x"), "size": ("A size", int, 1)}


class Broken(BaseHandler):
    name = "broken"

    def __init__(self, settings=None, proxy=None):
        super().__init__(settings, proxy)
        raise RuntimeError("no database configured")


@pytest.fixture
def registry():
    registry = registry_from_plugins(make_plugin_manager(load_entrypoints=False))
    registry.add(Noted, "tests")
    registry.add(Broken, "tests")
    return registry


def _settings(behavior, options=None, source="--vaurien-handler"):
    return resolve(
        [
            Layer(
                source=source,
                distant="127.0.0.1:1",
                behavior=behavior,
                options=options or {},
                behavior_source="--vaurien-behavior",
            )
        ]
    )


def test_each_option_converts_once(registry):
    CONVERSIONS.clear()
    plan = plan_from_settings(_settings("50:noted,10:delay", {("noted", "label"): "a"}), registry)
    assert CONVERSIONS == ["a"]
    assert plan.handler("noted").option("label") == "a"
    assert plan.spec == "50:noted,10:delay"


def test_a_bad_option_is_one_error_naming_its_source(registry):
    with pytest.raises(ConfigError) as raised:
        plan_from_settings(_settings("noted", {("noted", "size"): "big"}), registry)
    assert str(raised.value) == (
        "--vaurien-handler: handler 'noted': option 'size' = 'big' is not valid; "
        "expected an integer"
    )


def test_options_for_an_unknown_handler_name_their_source(registry):
    with pytest.raises(
        ConfigError, match=r"^--vaurien-handler: options given for unknown handler 'nope'"
    ):
        check_settings(_settings("dummy", {("nope", "x"): 1}), registry)


def test_skip_unknown_leaves_names_a_later_conftest_may_define(registry):
    check_settings(_settings("later", {("later", "x"): 1}), registry, skip_unknown=True)
    with pytest.raises(ConfigError, match="--vaurien-behavior: unknown handler 'later'"):
        check_settings(_settings("later"), registry)


def test_a_handler_that_raises_in_init_is_one_clear_error(registry):
    with pytest.raises(HandlerError) as raised:
        check_settings(_settings("broken"), registry)
    message = str(raised.value)
    assert message.startswith("--vaurien-behavior: handler 'broken'")
    assert "no database configured" in message


def test_decide_draws_the_behavior_mix_from_the_given_source(registry):
    plan = plan_from_settings(_settings("30:delay,20:hang+noted"), registry)
    seen = []
    source = random.Random(1)
    for ordinal in range(1, 201):
        decision = plan.decide(Unit(ordinal - 1, ordinal, 0.0), lambda: source)
        seen.append(decision.chain)
        assert decision.by == "draw"
        assert [h.name for h in decision.handlers] == list(decision.names)
    counts = {name: seen.count(name) for name in set(seen)}
    assert set(counts) == {"delay", "hang+noted", "dummy"}
    assert 30 <= counts["delay"] <= 90
    assert 15 <= counts["hang+noted"] <= 70


def test_a_hundred_percent_behavior_draws_nothing(registry):
    plan = plan_from_settings(_settings("noted"), registry)

    def no_draw():
        raise AssertionError("drew a random source")

    assert plan.decide(Unit(0, 1, 0.0), no_draw).names == ("noted",)


def test_a_live_change_is_a_new_plan_that_keeps_unchanged_instances(registry):
    plan = plan_from_settings(_settings("noted"), registry)
    same = relayered(plan, "noted", {}, registry, where="set_behavior()")
    assert same is not plan
    assert same.handler("noted") is plan.handler("noted")
    changed = relayered(plan, "noted", {("noted", "size"): 3}, registry, where="set_behavior()")
    assert changed.handler("noted") is not plan.handler("noted")
    assert changed.handler("noted").option("size") == 3
    assert plan.handler("noted").option("size") == 1  # the old plan is untouched
    with pytest.raises(ConfigError, match=r"^set_behavior\(\): handler 'noted': option 'size'"):
        relayered(plan, "noted", {("noted", "size"): "x"}, registry, where="set_behavior()")
