"""Rules and protocol in a real pytest run: every place a behavior can be given."""

from __future__ import annotations

import textwrap
import xml.etree.ElementTree as ET

import pytest

INNER = """
import urllib.error
import urllib.request

import pytest

from pytest_vaurien import Rule


def status(proxy, path, method="GET", data=None):
    host, port = proxy.address
    request = urllib.request.Request(f"http://{host}:{port}{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status
    except urllib.error.HTTPError as error:
        return error.code
"""


def inner(pytester: pytest.Pytester, body: str) -> None:
    pytester.makepyfile(test_inner=INNER + textwrap.dedent(body))


def test_marker_rules_and_protocol_with_the_design_example(pytester, http_backend):
    inner(
        pytester,
        f"""
        @pytest.mark.vaurien(distant="{http_backend.distant}", protocol="http", rules=[
            Rule("error", status=503, match="POST /payments/*", schedule="first:2", name="pay"),
        ])
        def test_payment_retries(vaurien_proxy):
            codes = [status(vaurien_proxy, "/payments/7", "POST", b"x") for _ in range(3)]
            assert codes == [503, 503, 201]
            rule = vaurien_proxy.rule("pay")
            assert (rule.matched, rule.fired) == (3, 2)

        @pytest.mark.vaurien("100:error", distant="{http_backend.distant}", protocol="http",
                             rules=["dummy; match=GET /health"], error__status=500)
        def test_behavior_and_string_rules_combine(vaurien_proxy):
            assert status(vaurien_proxy, "/health") == 200
            assert status(vaurien_proxy, "/other") == 500
        """,
    )
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=2)


def test_command_line_rules_replace_the_ini_rules_and_markers_replace_both(pytester, http_backend):
    pytester.makeini(
        f"""
        [pytest]
        vaurien_distant = {http_backend.distant}
        vaurien_protocol = http
        vaurien_rules =
            # the ini file's rules
            error; status=500; match=GET /ini
        """
    )
    inner(
        pytester,
        """
        def test_configured(vaurien_proxy):
            assert vaurien_proxy.plan.protocol == "http"
            names = [str(rule) for rule in vaurien_proxy.rules]
            codes = (status(vaurien_proxy, "/ini"), status(vaurien_proxy, "/cli"))
            print("RULES", names, codes)

        @pytest.mark.vaurien(rules=["error; status=418; match=GET /marker"])
        def test_marked(vaurien_proxy):
            assert [str(rule) for rule in vaurien_proxy.rules] == [
                "error; status=418; match=GET /marker"
            ]
            assert status(vaurien_proxy, "/marker") == 418
            assert status(vaurien_proxy, "/ini") == 200
        """,
    )
    result = pytester.runpytest("-p", "no:randomly", "-s")
    result.assert_outcomes(passed=2)
    assert "RULES ['error; status=500; match=GET /ini'] (500, 200)" in result.stdout.str()
    result = pytester.runpytest(
        "-p", "no:randomly", "-s", "--vaurien-rule", "error; status=502; match=GET /cli"
    )
    result.assert_outcomes(passed=2)
    assert "RULES ['error; status=502; match=GET /cli'] (200, 502)" in result.stdout.str()


def test_config_file_rule_sections(pytester, http_backend):
    pytester.path.joinpath("vaurien.ini").write_text(
        textwrap.dedent(
            f"""
            [vaurien]
            distant = {http_backend.distant}
            protocol = http

            [rule:teapot]
            fault = error
            status = 418
            match = GET /tea*
            schedule = first:1
            """
        )
    )
    pytester.makeini("[pytest]\nvaurien_config = vaurien.ini\n")
    inner(
        pytester,
        """
        def test_it(vaurien_proxy):
            assert [status(vaurien_proxy, "/tea") for _ in range(2)] == [418, 200]
            assert vaurien_proxy.rule("teapot").fired == 1
        """,
    )
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--vaurien-rule", "error; schedule=sometimes"],
            "ERROR: --vaurien-rule 'error; schedule=sometimes': schedule term 'sometimes' is not valid*",
        ),
        (
            ["--vaurien-rule", "error; match=GET /"],
            "ERROR: --vaurien-rule: rule 'error#1': match='GET /' needs a protocol; under tcp*",
        ),
        (
            ["--vaurien-protocol", "gopher"],
            "ERROR: --vaurien-protocol: unknown protocol 'gopher'; known: *http*tcp*",
        ),
        (
            ["--vaurien-protocol", "http", "--vaurien-rule", "error; match=GET /a /b"],
            "ERROR: --vaurien-rule: rule 'error#1': match: 'GET /a /b' has 3 words*",
        ),
    ],
)
def test_bad_rules_on_the_command_line_are_usage_errors(pytester, args, message):
    inner(pytester, "def test_it(vaurien_proxy):\n    pass\n")
    result = pytester.runpytest("--vaurien-distant", "127.0.0.1:9", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_a_bad_marker_rule_fails_that_test_only(pytester, http_backend):
    inner(
        pytester,
        f"""
        @pytest.mark.vaurien(distant="{http_backend.distant}", rules=["error; percent=150"])
        def test_bad(vaurien_proxy):
            pass

        @pytest.mark.vaurien(distant="{http_backend.distant}")
        def test_good(vaurien_proxy):
            pass
        """,
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*vaurien marker on test_bad: rules 'error; percent=150': percent='150' is not valid;"
            " expected a number from 0 to 100*"
        ]
    )


def test_the_failure_report_and_junit_show_the_exchanges(pytester, http_backend):
    inner(
        pytester,
        f"""
        @pytest.mark.vaurien(distant="{http_backend.distant}", protocol="http",
                             rules=["error; status=503; match=POST /payments/*; name=pay"])
        def test_fails(vaurien_proxy):
            status(vaurien_proxy, "/hello")
            status(vaurien_proxy, "/payments/7", "POST", b"x")
            assert False, "the payment failed"
        """,
    )
    result = pytester.runpytest("-p", "no:randomly", "--junitxml=out.xml")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*2 exchanges:",
            "*#*conn*request*by*fault*reply*duration*outcome",
            "*1*GET /hello*draw*dummy*200*relayed",
            "*2*POST /payments/7*pay*error*503*answered",
        ]
    )
    properties = {
        prop.get("name"): prop.get("value")
        for prop in ET.parse(pytester.path / "out.xml").iter("property")
    }
    assert properties["vaurien_exchanges"] == "2"
    assert properties["vaurien_faults"] == "1"
