"""Flaky tests in the tests gate: reruns counted as flaky, ``max_flaky``, and the quarantine list.

The pytest reports are written by real pytest with the real pytest-rerunfailures plugin, run in
a subprocess on a small test file whose tests fail once (state in a file) and then pass. The
Surefire reports follow surefire-test-report-3.0.xsd (``flakyFailure``/``flakyError`` on a test
that passed on a rerun, ``rerunFailure``/``rerunError`` beside the ``failure``/``error`` of one
that failed every run); Maven itself cannot run offline here.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from promotion import config as cfg
from promotion.digest import Digest
from promotion.errors import ConfigError
from promotion.evaluate import GateContext, evaluate
from promotion.evidence import parse_junit
from promotion.evidence.junit import MAX_DISTINCT_TESTS, MAX_TEST_NAME_CHARS
from promotion.gates import evaluate_tests
from promotion.models import ArtifactRecord, EvidenceRef, Provenance

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "junit"
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)

FLAKY_SUITE = """
import os
from pathlib import Path

import pytest

STATE = Path(os.environ["FLAKY_STATE_DIR"])


def fails_first_time(name: str) -> bool:
    marker = STATE / name
    if marker.exists():
        return False
    marker.write_text("ran")
    return True


def test_fails_once():
    assert not fails_first_time("fails_once"), "first attempt fails"


def test_errors_once():
    if fails_first_time("errors_once"):
        raise ConnectionResetError("flaky dependency")


def test_always_fails():
    assert False, "fails on every run"


@pytest.mark.parametrize("n", [1, 2])
def test_param(n):
    assert n


def test_steady():
    assert True
"""


@pytest.fixture(scope="module")
def rerun_report(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The JUnit XML real pytest + pytest-rerunfailures write for FLAKY_SUITE with --reruns 2."""
    root = tmp_path_factory.mktemp("rerun")
    (root / "state").mkdir()
    (root / "test_flaky_suite.py").write_text(FLAKY_SUITE)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "rerunfailures",
            "--reruns",
            "2",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            "--junitxml",
            str(root / "report.xml"),
            "test_flaky_suite.py",
        ],
        cwd=root,
        env={"FLAKY_STATE_DIR": str(root / "state"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        check=False,  # exits 1: test_always_fails fails
        timeout=120,
    )
    return (root / "report.xml").read_bytes()


def make_gate(**kw: Any) -> cfg.TestsGate:
    return cfg.TestsGate(kind="tests", **kw)


def quarantine(test: str, until: str = "2026-12-31", reason: str = "JIRA-1") -> dict[str, str]:
    return {"test": test, "until": until, "reason": reason}


def surefire(*cases: str, tests: int | None = None) -> bytes:
    """A Surefire/Failsafe TEST-*.xml (surefire-test-report-3.0.xsd) around ``cases``."""
    declared = len(cases) if tests is None else tests
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<testsuite xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xsi:noNamespaceSchemaLocation="https://maven.apache.org/surefire/maven-surefire-plugin/xsd/'
        f'surefire-test-report-3.0.xsd" version="3.0" name="com.acme.PaymentIT" time="4.2" '
        f'tests="{declared}" errors="0" skipped="0" failures="0">\n'
        '<properties><property name="surefire.rerunFailingTestsCount" value="4"/></properties>\n'
        + "\n".join(cases)
        + "\n</testsuite>\n"
    ).encode()


def run_element(tag: str, message: str, kind: str = "java.lang.AssertionError") -> str:
    return (
        f'<{tag} message="{message}" type="{kind}"><stackTrace><![CDATA[{kind}: {message}\n'
        "\tat com.acme.PaymentIT.charges(PaymentIT.java:42)]]></stackTrace>"
        f"<system-out><![CDATA[attempt log]]></system-out></{tag}>"
    )


# The measured case: passed only after three flakyFailure reruns and one flakyError.
SUREFIRE_FLAKY = (
    '<testcase name="charges" classname="com.acme.PaymentIT" time="1.1">'
    + run_element("flakyFailure", "expected 200 but was 503") * 3
    + run_element("flakyError", "Connection reset", "java.net.SocketException")
    + "</testcase>"
)
SUREFIRE_FAILED_EVERY_RUN = (
    '<testcase name="refunds" classname="com.acme.PaymentIT" time="0.9">'
    '<failure message="expected 1 refund" type="java.lang.AssertionError">trace</failure>'
    + run_element("rerunFailure", "expected 1 refund") * 2
    + "</testcase>"
)
SUREFIRE_ERRORED_EVERY_RUN = (
    '<testcase name="voids" classname="com.acme.PaymentIT" time="0.2">'
    '<error message="boom" type="java.lang.IllegalStateException">trace</error>'
    + run_element("rerunError", "boom", "java.lang.IllegalStateException")
    + "</testcase>"
)
SUREFIRE_PASSED = '<testcase name="lists" classname="com.acme.PaymentIT" time="0.1"/>'


# --- pytest-rerunfailures, run for real --------------------------------------------------------


def test_pytest_rerunfailures_report_shape(rerun_report: bytes) -> None:
    # What the plugin really writes (pytest-rerunfailures 16, pytest 9): every attempt is a
    # <testcase>, the failed attempts empty, and the suite's tests= does not count them.
    assert rerun_report.count(b'name="test_fails_once"') == 2
    assert rerun_report.count(b'name="test_always_fails"') == 3
    assert b'tests="6"' in rerun_report and rerun_report.count(b"<testcase") == 10


def test_pytest_rerunfailures_reruns_are_flaky_and_counted_once(rerun_report: bytes) -> None:
    summary = parse_junit(rerun_report)
    assert (summary.tests, summary.passed, summary.failures, summary.errors) == (6, 5, 1, 0)
    assert summary.flaky == 2
    assert summary.flaky_tests == ["test_flaky_suite::test_fails_once", "test_flaky_suite::test_errors_once"]
    assert summary.failed_tests == ["test_flaky_suite::test_always_fails"]


def test_flaky_names_reach_the_gate_reasons_and_measured_values(rerun_report: bytes) -> None:
    result = evaluate_tests(make_gate(max_failures=1, min_pass_rate=0.8), [rerun_report], NOW)
    assert result.passed
    assert result.measured["flaky"] == 2
    assert result.measured["flaky_tests"] == (
        "test_flaky_suite::test_fails_once, test_flaky_suite::test_errors_once"
    )
    assert result.thresholds["max_flaky"] is None
    assert (
        "2 flaky tests passed only on a rerun: test_flaky_suite::test_fails_once, "
        "test_flaky_suite::test_errors_once" in result.reasons
    )


def test_max_flaky_fails_the_gate_naming_the_flaky_tests(rerun_report: bytes) -> None:
    gate = make_gate(max_failures=1, min_pass_rate=0.8, max_flaky=1)
    result = evaluate_tests(gate, [rerun_report], NOW)
    assert not result.passed and not result.errored
    assert result.reasons == [
        "2 flaky tests (passed only on a rerun) exceed the maximum of 1: "
        "test_flaky_suite::test_fails_once, test_flaky_suite::test_errors_once"
    ]
    assert evaluate_tests(
        make_gate(max_failures=1, min_pass_rate=0.8, max_flaky=2), [rerun_report], NOW
    ).passed


# --- Surefire / Failsafe (JUnit 4 and JUnit 5 alike) ------------------------------------------


def test_surefire_flaky_failure_and_error_make_a_flaky_pass() -> None:
    summary = parse_junit(surefire(SUREFIRE_FLAKY, SUREFIRE_PASSED))
    assert (summary.tests, summary.passed, summary.failures, summary.errors) == (2, 2, 0, 0)
    assert summary.flaky == 1 and summary.flaky_tests == ["com.acme.PaymentIT::charges"]
    result = evaluate_tests(make_gate(max_flaky=0), [surefire(SUREFIRE_FLAKY, SUREFIRE_PASSED)], NOW)
    assert not result.passed
    assert result.reasons == [
        "1 flaky tests (passed only on a rerun) exceed the maximum of 0: com.acme.PaymentIT::charges"
    ]


def test_surefire_rerun_failures_are_failures_not_flaky() -> None:
    summary = parse_junit(surefire(SUREFIRE_FAILED_EVERY_RUN, SUREFIRE_ERRORED_EVERY_RUN, SUREFIRE_PASSED))
    assert (summary.tests, summary.passed, summary.failures, summary.errors) == (3, 1, 1, 1)
    assert summary.flaky == 0 and summary.flaky_tests == []
    assert summary.failed_tests == ["com.acme.PaymentIT::refunds", "com.acme.PaymentIT::voids"]


def test_shared_fixtures_have_no_flaky_tests_and_keep_their_counts() -> None:
    if not FIXTURES.is_dir():
        pytest.skip("../shared/fixtures not present")  # as tests/promotion/test_gates.py does
    for report in sorted(FIXTURES.glob("*.xml")):
        summary = parse_junit(report.read_bytes())
        assert summary.flaky == 0, report.name
        assert summary.tests == summary.passed + summary.failures + summary.errors + summary.skipped


# --- Gradle test-retry and repeated names -----------------------------------------------------


def gradle(*cases: str) -> bytes:
    # Gradle's TEST-*.xml with the test-retry plugin: each attempt is its own <testcase>.
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<testsuite name="com.acme.CartTest" tests="{len(cases)}" '
        'skipped="0" failures="1" errors="0" timestamp="2026-12-01T10:00:00" hostname="ci" time="0.3">'
        "<properties/>" + "".join(cases) + "<system-out><![CDATA[]]></system-out></testsuite>"
    ).encode()


def attempt(name: str, failed: bool) -> str:
    body = '<failure message="boom" type="java.lang.AssertionError">trace</failure>' if failed else ""
    return f'<testcase name="{name}" classname="com.acme.CartTest" time="0.1">{body}</testcase>'


def test_gradle_retry_failing_then_passing_is_one_flaky_pass() -> None:
    summary = parse_junit(gradle(attempt("adds", True), attempt("adds", True), attempt("adds", False)))
    assert (summary.tests, summary.passed, summary.failures, summary.flaky) == (1, 1, 0, 1)
    assert summary.flaky_tests == ["com.acme.CartTest::adds"]


def test_repeated_names_that_never_failed_then_passed_count_one_by_one() -> None:
    # JUnit 5 parameterized tests may share a display name; nothing here says "rerun".
    passing = parse_junit(gradle(attempt("param", False), attempt("param", False)))
    assert (passing.tests, passing.passed, passing.flaky) == (2, 2, 0)
    # Failing on every attempt: each attempt stays a failure (never fewer failures than written).
    failing = parse_junit(gradle(attempt("removes", True), attempt("removes", True)))
    assert (failing.tests, failing.failures, failing.flaky) == (2, 2, 0)


# --- quarantine -------------------------------------------------------------------------------


def test_quarantined_failures_are_reported_not_counted(rerun_report: bytes) -> None:
    gate = make_gate(quarantine=[quarantine("test_flaky_suite::test_always_fails", reason="JIRA-7 flaky db")])
    result = evaluate_tests(gate, [rerun_report], NOW)
    assert result.passed, result.reasons
    assert result.measured["failures"] == 0 and result.measured["tests"] == 5
    assert result.measured["quarantined"] == 1 and result.measured["quarantined_failed"] == 1
    assert result.measured["quarantine_failing"] == "test_flaky_suite::test_always_fails"
    assert (
        "1 of 1 quarantined tests matching 'test_flaky_suite::test_always_fails' failed, not counted "
        "(quarantined until 2026-12-31: JIRA-7 flaky db): test_flaky_suite::test_always_fails"
    ) in result.reasons
    # Without the quarantine the same report fails on that test.
    assert not evaluate_tests(make_gate(), [rerun_report], NOW).passed


def test_quarantine_notes_stay_beside_other_failures(rerun_report: bytes) -> None:
    gate = make_gate(max_flaky=0, quarantine=[quarantine("test_flaky_suite::test_always_fails")])
    result = evaluate_tests(gate, [rerun_report], NOW)
    assert not result.passed
    assert result.reasons[0].startswith("2 flaky tests (passed only on a rerun) exceed the maximum of 0")
    assert any("failed, not counted" in reason for reason in result.reasons[1:])


def test_a_quarantined_test_that_passed_is_ready_to_leave(rerun_report: bytes) -> None:
    gate = make_gate(
        max_failures=1,
        min_pass_rate=0.5,
        quarantine=[
            quarantine("test_flaky_suite::test_param[[]*]"),  # a glob: both parameters
            quarantine("test_flaky_suite::test_steady"),
            quarantine("test_flaky_suite::test_fails_once"),
        ],
    )
    result = evaluate_tests(gate, [rerun_report], NOW)
    assert result.passed
    assert result.measured["quarantine_ready"] == "test_flaky_suite::test_steady"
    assert (
        "quarantined 'test_flaky_suite::test_steady' passed (1 of 1 tests, none flaky): "
        "ready to leave quarantine"
    ) in result.reasons
    assert (
        "1 of 1 quarantined tests matching 'test_flaky_suite::test_fails_once' passed only on a "
        "rerun, not counted (quarantined until 2026-12-31: JIRA-1)"
    ) in result.reasons
    # '[' is literal, not a character class: the glob matched neither parameter...
    assert any("'test_flaky_suite::test_param[[]*]' matched no test" in r for r in result.reasons)
    # ...while the exact pytest id with its brackets does.
    exact = evaluate_tests(
        make_gate(quarantine=[quarantine("test_flaky_suite::test_param[1]")]), [rerun_report], NOW
    )
    assert "quarantined 'test_flaky_suite::test_param[1]' passed" in " ".join(exact.reasons)
    globbed = evaluate_tests(make_gate(quarantine=[quarantine("*::test_param[?]")]), [rerun_report], NOW)
    assert "quarantined '*::test_param[?]' passed (2 of 2 tests, none flaky)" in " ".join(globbed.reasons)


def test_an_expired_quarantine_no_longer_applies(rerun_report: bytes) -> None:
    entry = quarantine("test_flaky_suite::test_always_fails", until="2026-11-30")
    gate = make_gate(quarantine=[entry])
    result = evaluate_tests(gate, [rerun_report], NOW)
    assert not result.passed
    assert result.reasons[1] == "1 failed tests exceed the maximum of 0: test_flaky_suite::test_always_fails"
    assert (
        "the quarantine of 'test_flaky_suite::test_always_fails' expired on 2026-12-01 "
        "(until 2026-11-30); its tests count again"
    ) in result.reasons
    assert result.measured["quarantine_expired"] == "test_flaky_suite::test_always_fails"
    # The until day itself is still inside the quarantine (up to 23:59 UTC).
    last_day = dt.datetime(2026, 11, 30, 23, 59, tzinfo=dt.UTC)
    assert evaluate_tests(gate, [rerun_report], last_day).passed
    # A local time is read in UTC: 00:30 on Dec 1 in Berlin is still Nov 30 UTC.
    berlin = dt.datetime(2026, 12, 1, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert evaluate_tests(gate, [rerun_report], berlin).passed


def test_without_an_evaluation_time_no_quarantine_applies(rerun_report: bytes) -> None:
    gate = make_gate(quarantine=[quarantine("test_flaky_suite::test_always_fails")])
    result = evaluate_tests(gate, [rerun_report])
    assert not result.passed
    assert "was not applied: the evaluation time is unknown" in result.reasons[-1]


def test_the_registered_tests_gate_applies_quarantine_at_the_stage_time(rerun_report: bytes) -> None:
    digest = Digest.of_bytes(b"artifact")
    ref = EvidenceRef(
        kind="junit", digest=Digest.of_bytes(rerun_report), filename="r.xml", size=len(rerun_report)
    )
    artifact = ArtifactRecord(
        service="api",
        digest=digest,
        size=8,
        media_type="application/octet-stream",
        version="1",
        created_at=NOW,
        provenance=Provenance(published_by="ci"),
        evidence=[ref],
    )
    gate = make_gate(quarantine=[quarantine("test_flaky_suite::test_always_fails", until="2026-12-01")])

    def at(now: dt.datetime) -> GateContext:
        env = cfg.Environment(name="dev", gates=[gate])
        return GateContext("api", digest, env, artifact, None, None, now, lambda r: rerun_report)

    assert evaluate(gate, at(NOW)).passed
    assert not evaluate(gate, at(NOW + dt.timedelta(days=1))).passed


def test_pipeline_file_quarantine_is_strict() -> None:
    def tests_gate_yaml(body: str) -> str:
        return textwrap.dedent(
            """
            store: {bucket: artifacts}
            services: [{name: api}]
            environments:
              - name: dev
                gates:
                  - kind: tests
            """
        ) + textwrap.indent(textwrap.dedent(body), " " * 8)

    ok = cfg.parse_pipeline(
        tests_gate_yaml(
            """
            max_flaky: 3
            quarantine:
              - {test: "com.acme.PaymentIT::charges", until: 2026-12-31, reason: "JIRA-9"}
            """
        )
    )
    gate = ok.environments[0].gates[0]
    assert isinstance(gate, cfg.TestsGate) and gate.max_flaky == 3
    assert gate.quarantine[0].until == dt.date(2026, 12, 31)
    for body, words in [
        ('quarantine: [{test: "a::b", reason: "x"}]', "until"),
        ('quarantine: [{test: "a::b", until: 2026-12-31}]', "reason"),
        ('quarantine: [{test: "a::b", until: 2026-12-31, reason: x, owner: me}]', "owner"),
        ('quarantine: [{test: "a::b", until: "next week", reason: x}]', "until"),
        ('quarantine: [{test: "", until: 2026-12-31, reason: x}]', "test"),
        (
            "quarantine: [{test: a, until: 2026-12-31, reason: x}, {test: a, until: 2027-01-31, reason: y}]",
            "'a'",
        ),
        ("max_flaky: -1", "max_flaky"),
    ]:
        with pytest.raises(ConfigError) as exc:
            cfg.parse_pipeline(tests_gate_yaml(body))
        assert words in str(exc.value), body


# --- hostile reports --------------------------------------------------------------------------


# Parsed in a child process that reports its own peak RSS growth (VmHWM): tracemalloc would make
# a 100k-element parse many times slower.
PEAK_GROWTH = """
import sys
from promotion.evidence import EvidenceUnreadable, parse_junit

def hwm():
    with open("/proc/self/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("VmHWM:")))

report = sys.stdin.buffer.read()
before = hwm()
try:
    summary = parse_junit(report)
    outcome = f"{summary.tests} {summary.passed} {summary.flaky}"
except EvidenceUnreadable as exc:
    outcome = str(exc)
print((hwm() - before) // 1024)
print(outcome)
"""


def parse_in_child(report: bytes) -> tuple[int, str]:
    """(peak RSS growth in MiB while parsing, the summary's counts or the error)."""
    done = subprocess.run(
        [sys.executable, "-c", PEAK_GROWTH], input=report, capture_output=True, check=True, timeout=120
    )
    growth, outcome = done.stdout.decode().splitlines()
    return int(growth), outcome


def test_too_many_distinct_tests_fail_cleanly_with_bounded_memory() -> None:
    cases = b"".join(b'<testcase name="t%d"/>' % i for i in range(MAX_DISTINCT_TESTS + 1))
    growth, outcome = parse_in_child(b'<testsuite name="big">' + cases + b"</testsuite>")
    assert outcome == f"JUnit XML: the report holds more than {MAX_DISTINCT_TESTS} distinct test cases"
    assert growth < 150, f"peak RSS grew {growth} MiB"


def test_one_name_repeated_100k_times_stays_flat() -> None:
    report = b'<testsuite name="s" tests="1">' + b'<testcase name="t"/>' * 100_000 + b"</testsuite>"
    growth, outcome = parse_in_child(report)
    assert outcome == "1 1 1"  # tests="1": the other attempts are reruns of one flaky test
    assert growth < 20, f"peak RSS grew {growth} MiB"


@pytest.mark.parametrize(
    "tests_attr",
    ["9" * 5000, "²", "-3", "0x10", " "],
    ids=["5000-digits", "superscript", "negative", "hex", "blank"],
)
def test_odd_tests_attributes_are_ignored(tests_attr: str) -> None:
    report = f'<testsuite tests="{tests_attr}"><testcase name="a"/><testcase name="a"/></testsuite>'.encode()
    assert parse_junit(report).tests == 2


def test_huge_test_names_are_cut_and_quarantine_matching_stays_fast() -> None:
    name = "x" * 2_000_000
    report = f'<testsuite><testcase name="{name}"><failure/></testcase></testsuite>'.encode()
    started = time.monotonic()
    summary = parse_junit(report, quarantine=["*x*x*x*x*y"])
    assert time.monotonic() - started < 5
    assert summary.failed_tests == ["x" * MAX_TEST_NAME_CHARS]
    assert summary.failures == 1 and summary.quarantined[0].failures == 0
