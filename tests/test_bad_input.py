"""Bad input gets one clear line naming its source, value and expectation (issue 11).

Parsing and conversion without sockets; pytest's side through pytester
(usage errors, exit 4). The ``vaurien`` command's side is in test_command.py.
"""

from __future__ import annotations

import textwrap

import pytest

from pytest_vaurien import BaseHandler, ConfigError
from pytest_vaurien.address import parse_address
from pytest_vaurien.behavior import parse_behavior
from pytest_vaurien.config_file import read_config_file
from pytest_vaurien.echo import echo
from pytest_vaurien.errors import HandlerError
from pytest_vaurien.handlers.base import Range, convert_value
from pytest_vaurien.handlers.builtin import BUILTIN_HANDLERS
from pytest_vaurien.registry import make_plugin_manager, registry_from_plugins

NUMERIC_OPTIONS = [
    (handler, option)
    for handler in BUILTIN_HANDLERS
    for option, spec in sorted(handler.options.items())
    if spec[1] in (int, float)
]


def _ids(value: object) -> str:
    if isinstance(value, tuple):
        return f"{value[0].name}.{value[1]}"
    return str(value)


# -- option values ---------------------------------------------------------


@pytest.mark.parametrize(("handler", "option"), NUMERIC_OPTIONS, ids=_ids)
def test_every_numeric_builtin_option_declares_its_range(handler, option):
    """A new numeric option without a bound would let -1 through unnoticed."""
    spec = handler.options[option]
    assert len(spec) == 4
    assert isinstance(spec[3], Range), f"{handler.name}.{option} declares no Range"
    assert spec[2] in spec[3], "the default is inside the range"


@pytest.mark.parametrize(("handler", "option"), NUMERIC_OPTIONS, ids=_ids)
def test_negative_numbers_are_rejected_naming_handler_option_value_and_range(handler, option):
    kind = "a number" if handler.options[option][1] is float else "an integer"
    declared = handler.options[option][3]
    with pytest.raises(ConfigError) as raised:
        handler({option: "-1"})
    assert str(raised.value) == (
        f"handler {handler.name!r}: option {option!r} = '-1' is not valid; "
        f"expected {kind} {declared}"
    )


@pytest.mark.parametrize(("handler", "option"), NUMERIC_OPTIONS, ids=_ids)
def test_the_lower_bound_is_a_valid_value_of_every_numeric_option(handler, option):
    lowest = handler.options[option][3].minimum
    assert handler({option: str(lowest)}).option(option) == lowest


@pytest.mark.parametrize(
    "value", ["inf", "-inf", "nan", " Infinity ", "1e400", 10**400, float("inf"), float("nan")]
)
def test_non_finite_durations_are_rejected(value):
    """``float('1e400')`` is inf and ``float(10**400)`` raised OverflowError into gevent."""
    with pytest.raises(ConfigError) as raised:
        BUILTIN_BY_NAME["delay"]({"sleep": value})
    message = str(raised.value)
    assert message.startswith("handler 'delay': option 'sleep' = ")
    assert message.endswith("is not valid; expected a finite number >= 0")


def test_non_finite_floats_are_rejected_without_a_declared_range():
    with pytest.raises(ValueError, match="^expected a finite number$"):
        convert_value("inf", float)
    assert convert_value("1e300", float) == 1e300


def test_the_type_is_named_before_the_range():
    """'soon' is not a number at all: saying so is clearer than naming the range."""
    with pytest.raises(ValueError, match="^expected a number$"):
        convert_value("soon", float, Range(0))
    with pytest.raises(ValueError, match="^expected an integer$"):
        convert_value("1.5", int, Range(0))
    with pytest.raises(ValueError, match="^expected an integer >= 1$"):
        convert_value("0", int, Range(1))


@pytest.mark.parametrize(
    ("bounds", "inside", "outside", "text"),
    [
        (Range(0), [0, 0.0, 5, 1e300], [-1, -0.5], ">= 0"),
        (Range(1, 65535), [1, 65535], [0, 65536], "from 1 to 65535"),
        (Range(maximum=2.5), [-3, 2.5], [2.6], "<= 2.5"),
    ],
)
def test_range_holds_its_bounds(bounds, inside, outside, text):
    assert all(value in bounds for value in inside)
    assert not any(value in bounds for value in outside)
    assert "1" not in bounds
    assert str(bounds) == text


def test_a_handler_of_ours_declares_a_range_the_same_way():
    class Stutter(BaseHandler):
        name = "stutter"
        options = {"times": ("How often", int, 2, Range(1, 10))}

    assert Stutter({"times": "10"}).option("times") == 10
    with pytest.raises(ConfigError, match=r"'11' is not valid; expected an integer from 1 to 10$"):
        Stutter({"times": "11"})


# -- long values are cut ---------------------------------------------------


def test_echo_cuts_long_values_to_their_start_and_length():
    assert echo("short") == "'short'"
    assert echo("7" * 5000) == "'" + "7" * 39 + "... (5000 characters)"
    assert echo(10**5000) == "an integer of about 5001 digits"  # repr() would raise
    assert echo(10**100) == "1" + "0" * 39 + "... (101 digits)"


def test_a_5000_digit_option_value_is_not_echoed_in_full():
    with pytest.raises(ConfigError) as raised:
        BUILTIN_BY_NAME["delay"]({"sleep": "9" * 5000})
    assert len(str(raised.value)) < 200
    assert "(5000 characters)" in str(raised.value)


def test_a_long_option_name_is_not_echoed_in_full():
    with pytest.raises(ConfigError) as raised:
        BUILTIN_BY_NAME["delay"]({"x" * 5000: 1})
    assert len(str(raised.value)) < 200


@pytest.mark.parametrize(
    "spec", ["1" * 5000 + ":delay", "5:" + "d" * 5000 + "!", ",".join(["60:delay"] * 1000)]
)
def test_a_long_behavior_is_not_echoed_in_full(spec):
    with pytest.raises(ConfigError) as raised:
        parse_behavior(spec, "--behavior")
    assert len(str(raised.value)) < 400


@pytest.mark.parametrize("value", ["h" * 5000, "127.0.0.1:" + "9" * 5000, ("h", 10**5000)])
def test_a_long_address_is_not_echoed_in_full(value):
    with pytest.raises(ConfigError) as raised:
        parse_address(value, "--distant")
    assert len(str(raised.value)) < 300


# -- addresses -------------------------------------------------------------


@pytest.mark.parametrize("value", ["127.0.0.1:0", "127.0.0.1:65536", ("127.0.0.1", 0)])
def test_a_distant_port_must_be_from_1_to_65535(value):
    with pytest.raises(ConfigError, match=r"^--distant: .* expected a number from 1 to 65535$"):
        parse_address(value, "--distant")


def test_port_0_means_any_free_port_where_the_proxy_listens():
    assert parse_address("127.0.0.1:0", "--local", listen=True) == ("127.0.0.1", 0)
    with pytest.raises(ConfigError, match="expected a number from 0 to 65535$"):
        parse_address("127.0.0.1:-1", "--local", listen=True)


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_address_is_an_error(value):
    with pytest.raises(ConfigError, match=r"^--local: the address is empty; expected HOST:PORT$"):
        parse_address(value, "--local", listen=True)


@pytest.mark.parametrize("port", ["+80", " 8 0", "٨٠", True, 80.0])
def test_a_port_is_plain_digits_or_an_int(port):
    value = ("127.0.0.1", port) if not isinstance(port, str) else f"127.0.0.1:{port}"
    with pytest.raises(ConfigError, match="expected a number from 1 to 65535$"):
        parse_address(value, "--distant")


# -- config files ----------------------------------------------------------


def test_a_config_file_that_is_not_utf8_names_the_file_and_line(tmp_path):
    path = tmp_path / "latin.ini"
    path.write_bytes("[vaurien]\n# café\ndistant = 127.0.0.1:1\n".encode("latin-1"))
    with pytest.raises(ConfigError) as raised:
        read_config_file(path)
    assert str(raised.value) == (
        f"config file {str(path)!r}: line 2 is not UTF-8 text (byte 0xe9); "
        "expected a UTF-8 encoded file"
    )


def test_a_byte_order_mark_is_not_part_of_the_first_line(tmp_path):
    path = tmp_path / "bom.ini"
    path.write_bytes(b"\xef\xbb\xbf[vaurien]\ndistant = 127.0.0.1:1\n")
    assert read_config_file(path).layer.distant == "127.0.0.1:1"


@pytest.fixture
def alias_module(tmp_path, monkeypatch):
    (tmp_path / "aliased.py").write_text(
        textwrap.dedent("""
        from pytest_vaurien import BaseHandler

        class Boom(BaseHandler):
            name = "boom"

            def __init__(self, settings=None, proxy=None):
                raise RuntimeError("kaput")

        NOT_A_HANDLER = 3
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.mark.parametrize(
    ("callable_", "message"),
    [
        ("aliased.missing", "'aliased.missing': 'aliased' has no attribute 'missing'"),
        ("aliased.NOT_A_HANDLER", "'aliased.NOT_A_HANDLER' is 3; expected a subclass"),
        ("no_such_module_here.X", "unknown handler 'no_such_module_here.X'"),
        ("aliased", "callable = 'aliased' is not a dotted path; expected e.g."),
        ("aliased.Boom", None),
    ],
)
def test_alias_errors_name_the_file_and_section(alias_module, callable_, message):
    path = alias_module / "c.ini"
    path.write_text(f"[handler:foo]\ncallable = {callable_}\n")
    registry = registry_from_plugins(make_plugin_manager())
    if message is None:  # a class that fails in __init__ is an error when a plan is made
        read_config_file(path).register_aliases(registry)
        assert registry.resolve("foo").name == "boom"
        return
    with pytest.raises((ConfigError, HandlerError)) as raised:
        read_config_file(path).register_aliases(registry)
    assert str(raised.value).startswith(
        f"config file {str(path)!r}, section [handler:foo]: {message}"
    )


def test_an_alias_over_a_builtin_name_names_the_file_and_section(alias_module):
    path = alias_module / "c.ini"
    path.write_text("[handler:delay]\ncallable = aliased.Boom\n")
    registry = registry_from_plugins(make_plugin_manager())
    with pytest.raises(HandlerError) as raised:
        read_config_file(path).register_aliases(registry)
    assert str(raised.value).startswith(
        f"config file {str(path)!r}, section [handler:delay]: handler name 'delay' is defined "
        "twice: by built-in"
    )


def test_a_long_section_name_is_cut(tmp_path):
    path = tmp_path / "c.ini"
    path.write_text(f"[{'s' * 5000}]\nx = 1\n")
    with pytest.raises(ConfigError) as raised:
        read_config_file(path)
    assert len(str(raised.value)) < 300


# -- the same mistakes in pytest: one usage error, exit 4 ------------------------


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--vaurien-handler", "delay.sleep=-1"],
            "ERROR: --vaurien-handler: handler 'delay': option 'sleep' = '-1' is not valid; "
            "expected a number >= 0",
        ),
        (
            ["--vaurien-handler", "delay.sleep=1e400"],
            "ERROR: --vaurien-handler: handler 'delay': option 'sleep' = '1e400' is not valid; "
            "expected a finite number >= 0",
        ),
        (
            ["--vaurien-handler", "bandwidth.rate=-5"],
            "ERROR: --vaurien-handler: handler 'bandwidth': option 'rate' = '-5' is not valid; "
            "expected a number >= 0",
        ),
        (
            ["--vaurien-handler", "limit_data.bytes=-1"],
            "ERROR: --vaurien-handler: handler 'limit_data': option 'bytes' = '-1' is not "
            "valid; expected an integer >= 0",
        ),
        (
            ["--vaurien-distant", "127.0.0.1:0"],
            "ERROR: --vaurien-distant: '127.0.0.1:0' has port 0; expected a number from 1 to 65535",
        ),
    ],
)
def test_bad_values_on_the_pytest_command_line_are_usage_errors(pytester, args, line):
    pytester.makepyfile("def test_it(): pass")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([line])
    assert "Traceback" not in result.stderr.str()


def test_a_config_file_that_is_not_utf8_is_a_usage_error_in_pytest(pytester):
    """It was an INTERNALERROR with a UnicodeDecodeError traceback."""
    (pytester.path / "chaos.ini").write_bytes(b"[vaurien]\ndistant = caf\xe9:1\n")
    pytester.makeini("[pytest]\nvaurien_config = chaos.ini\n")
    pytester.makepyfile("def test_it(): pass")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: vaurien_config (*): config file '*chaos.ini': line 2 is not UTF-8 text "
            "(byte 0xe9); expected a UTF-8 encoded file"
        ]
    )
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


def test_an_alias_error_in_the_config_file_is_a_usage_error_naming_file_and_section(pytester):
    (pytester.path / "chaos.ini").write_text("[handler:foo]\ncallable = os.path.nothing\n")
    pytester.makeini("[pytest]\nvaurien_config = chaos.ini\n")
    pytester.makepyfile("def test_it(): pass")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: *config file '*chaos.ini', section [[]handler:foo]: 'os.path.nothing': "
            "'os.path' has no attribute 'nothing'"
        ]
    )


def test_a_huge_number_in_a_marker_fails_that_test_with_one_message(pytester, echo_server):
    """``delay__sleep=10**400`` raised OverflowError from ``float()``."""
    pytester.makepyfile(
        textwrap.dedent(f"""
        import pytest

        @pytest.mark.vaurien("delay", distant="{echo_server.distant}", delay__sleep=10**400)
        def test_huge(vaurien_proxy):
            pass

        def test_other():
            pass
    """)
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*vaurien marker on *test_huge*: handler 'delay': option 'sleep' = 1000000000*... "
            "(401 digits) is not valid; expected a finite number >= 0*"
        ]
    )
    assert "OverflowError" not in result.stdout.str()


BUILTIN_BY_NAME = {handler.name: handler for handler in BUILTIN_HANDLERS}
