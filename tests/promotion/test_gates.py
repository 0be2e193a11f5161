"""Gate evaluators on real CI reports (../shared/fixtures), fixed clocks and hand-made records."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from promotion import config as cfg
from promotion.digest import Digest
from promotion.evidence import MAX_EVIDENCE_BYTES
from promotion.gates import (
    GateResult,
    evaluate_coverage,
    evaluate_perf,
    evaluate_policy,
    evaluate_scan,
    evaluate_soak,
    evaluate_tests,
    evaluate_window,
)
from promotion.models import ArtifactRecord, EnvState, Provenance
from promotion.windows import next_opening

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures"
UTC = dt.UTC


def fixture(relpath: str) -> bytes:
    """Bytes of a shared fixture; skips the test when the fixtures folder is not checked out."""
    if not FIXTURES.is_dir():
        pytest.skip("../shared/fixtures not present")
    return (FIXTURES / relpath).read_bytes()


def junit_gate(**kw: Any) -> cfg.TestsGate:
    return cfg.TestsGate.model_validate({"kind": "tests", **kw})


def coverage_gate(**kw: Any) -> cfg.CoverageGate:
    return cfg.CoverageGate.model_validate({"kind": "coverage", **kw})


def scan_gate(**kw: Any) -> cfg.ScanGate:
    return cfg.ScanGate.model_validate({"kind": "scan", **kw})


def perf_gate(**kw: Any) -> cfg.PerfGate:
    return cfg.PerfGate.model_validate({"kind": "perf", **kw})


XXE = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><testsuite name="&xxe;"/>"""
BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">]>
<coverage lines-valid="1" lines-covered="1">&lol2;</coverage>"""


# --- GateResult -------------------------------------------------------------------------------


def test_gate_result_is_frozen_and_strict() -> None:
    result = evaluate_tests(junit_gate(name="unit"), [fixture("junit/jest-junit-widget.xml")])
    assert isinstance(result, GateResult)
    assert (result.gate, result.kind) == ("unit", "tests")
    with pytest.raises(ValidationError):
        result.passed = False  # type: ignore[misc]
    with pytest.raises(ValidationError):
        GateResult.model_validate({**result.model_dump(), "extra": 1})
    assert GateResult.model_validate_json(result.model_dump_json()) == result


# --- evidence common behaviour ----------------------------------------------------------------


EVALUATORS: list[tuple[str, Any, Any]] = [
    ("junit", evaluate_tests, lambda **kw: junit_gate(**kw)),
    ("coverage", evaluate_coverage, lambda **kw: coverage_gate(min_line_rate=0.5, **kw)),
    ("sarif", evaluate_scan, lambda **kw: scan_gate(**kw)),
    ("perf", evaluate_perf, lambda **kw: perf_gate(**kw)),
]


@pytest.mark.parametrize(("kind", "evaluate", "make"), EVALUATORS, ids=[e[0] for e in EVALUATORS])
def test_missing_evidence_fails_when_required(kind: str, evaluate: Any, make: Any) -> None:
    result = evaluate(make(), [])
    assert not result.passed and not result.errored
    assert result.reasons == [f"missing evidence: {kind}"]


@pytest.mark.parametrize(("kind", "evaluate", "make"), EVALUATORS, ids=[e[0] for e in EVALUATORS])
def test_missing_evidence_passes_when_not_required(kind: str, evaluate: Any, make: Any) -> None:
    result = evaluate(make(required=False), [])
    assert result.passed
    assert result.reasons == ["no evidence; gate not required"]


@pytest.mark.parametrize(("kind", "evaluate", "make"), EVALUATORS, ids=[e[0] for e in EVALUATORS])
@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "empty"),
        (b"<" + b" " * MAX_EVIDENCE_BYTES, "refused"),
        (b"\xff\xfe\x00garbage", ""),
    ],
    ids=["empty", "oversized", "garbage"],
)
def test_unreadable_evidence_is_an_errored_failure(
    kind: str, evaluate: Any, make: Any, data: bytes, words: str
) -> None:
    result = evaluate(make(), [data])
    assert not result.passed and result.errored
    assert len(result.reasons) == 1 and words in result.reasons[0]


@pytest.mark.parametrize(
    ("evaluate", "make", "data", "words"),
    [
        (evaluate_tests, junit_gate, XXE, "JUnit XML: the document declares the entity 'xxe'"),
        (evaluate_tests, junit_gate, BILLION_LAUGHS, "entity 'lol'"),
        (evaluate_coverage, lambda: coverage_gate(min_line_rate=0.1), XXE, "entity 'xxe'"),
        (evaluate_coverage, lambda: coverage_gate(min_line_rate=0.1), BILLION_LAUGHS, "entity 'lol'"),
        (evaluate_tests, junit_gate, b"<testsuites><testsuite><testcase name='x'>", "truncated"),
        (evaluate_tests, junit_gate, b"<testsuite><testcase></testsuite>", "not well-formed"),
    ],
)
def test_hostile_and_malformed_xml_fail_cleanly(evaluate: Any, make: Any, data: bytes, words: str) -> None:
    result = evaluate(make(), [data])
    assert not result.passed and result.errored
    assert words in result.reasons[0]
    assert "root:" not in " ".join(result.reasons)  # /etc/passwd was never read


def test_truncated_real_report_is_errored() -> None:
    data = fixture("sarif/codeql-ruby.sarif")
    result = evaluate_scan(scan_gate(), [data[: len(data) // 2]])
    assert result.errored
    assert result.reasons[0].startswith("SARIF: not valid JSON")


def test_one_unreadable_report_among_several_names_it() -> None:
    good = fixture("junit/jest-junit-widget.xml")
    result = evaluate_tests(junit_gate(), [good, b"<testsuite>"])
    assert result.errored and not result.passed
    assert result.reasons == [
        "report 2 of 2: JUnit XML: the XML ends early (truncated?): no element found: line 1, column 11"
    ]


def test_single_report_bytes_are_accepted() -> None:
    assert evaluate_tests(junit_gate(), fixture("junit/jest-junit-widget.xml")).passed  # type: ignore[arg-type]


# --- tests ------------------------------------------------------------------------------------


def test_tests_gate_passes_on_green_report() -> None:
    result = evaluate_tests(junit_gate(), [fixture("junit/jest-junit-widget.xml")])
    assert result.passed
    assert result.measured["tests"] == 2 and result.measured["pass_rate"] == 1.0
    assert result.reasons == [
        "2 of 2 executed tests passed (100.00%), 0 skipped; 0 failures (max 0), 0 errors (max 0)"
    ]


def test_tests_gate_fails_on_surefire_errors_and_failures() -> None:
    result = evaluate_tests(
        junit_gate(), [fixture("junit/surefire-TEST-action.surefire.report.email.EmailAddressTest.xml")]
    )
    assert not result.passed and not result.errored
    assert result.measured == {
        "tests": 9,
        "passed": 2,
        "failures": 2,
        "errors": 5,
        "skipped": 0,
        "pass_rate": pytest.approx(2 / 9),
        "suites": "action.surefire.report.email.EmailAddressTest",
        "flaky": 0,
        "reports": 1,
    }
    assert result.reasons[0] == "pass rate 22.22% (2/9) is below the minimum 100.00%"
    assert result.reasons[1].startswith("2 failed tests exceed the maximum of 0: ")
    assert "shouldBeStricterThanRfc2822" in result.reasons[1]
    assert result.reasons[2] == "5 tests with errors exceed the maximum of 0"


def test_tests_gate_pass_rate_excludes_skipped() -> None:
    report = [fixture("junit/go-junit-report-001-report.xml")]  # 2 passed, 1 failed, 2 skipped
    assert evaluate_tests(junit_gate(min_pass_rate=0.6, max_failures=1), report).passed
    failing = evaluate_tests(junit_gate(min_pass_rate=0.7, max_failures=1), report)
    assert failing.reasons == ["pass rate 66.67% (2/3) is below the minimum 70.00%"]


def test_tests_gate_merges_reports() -> None:
    result = evaluate_tests(
        junit_gate(max_failures=5, min_pass_rate=0.5),
        [fixture("junit/jest-junit-widget.xml"), fixture("junit/pytest-report.xml")],
    )
    assert result.passed
    assert (result.measured["tests"], result.measured["passed"], result.measured["failures"]) == (5, 3, 2)
    assert result.measured["reports"] == 2


def test_tests_gate_required_suites() -> None:
    reports = [fixture("junit/go-junit-report-013-report.xml")]
    gate = junit_gate(min_pass_rate=0, max_errors=3, required_suites=["package/name/passing1"])
    assert evaluate_tests(gate, reports).passed
    missing = evaluate_tests(
        junit_gate(min_pass_rate=0, max_errors=3, required_suites=["integration"]), reports
    )
    assert not missing.passed
    assert missing.reasons[0].startswith(
        "required suite 'integration' is missing (present: package/name/passing1"
    )


def test_tests_gate_with_no_executed_tests() -> None:
    all_skipped = b'<testsuite name="s"><testcase name="a"><skipped/></testcase></testsuite>'
    result = evaluate_tests(junit_gate(), [all_skipped])
    assert result.reasons == ["no test executed (all 1 tests were skipped); the pass rate cannot be computed"]
    assert evaluate_tests(junit_gate(min_pass_rate=0), [all_skipped]).passed


# --- coverage ---------------------------------------------------------------------------------


def test_coverage_gate_passes_on_real_reports() -> None:
    result = evaluate_coverage(
        coverage_gate(min_line_rate=0.85, min_branch_rate=0.8),
        [fixture("coverage/coveragepy-coverage_2.xml")],
    )
    assert result.passed
    assert result.reasons == [
        "line coverage 88.97% (1565/1759) meets the minimum 85.00%",
        "branch coverage 82.80% (361/436) meets the minimum 80.00%",
    ]
    jacoco = evaluate_coverage(
        coverage_gate(min_line_rate=0.7), [fixture("coverage/jacoco-jacocoTestReport.xml")]
    )
    assert jacoco.passed and jacoco.measured["format"] == "jacoco"


def test_coverage_gate_fails_below_minimum_and_without_branch_data() -> None:
    result = evaluate_coverage(
        coverage_gate(min_line_rate=0.8, min_branch_rate=0.5), [fixture("coverage/coveragepy-coverage_1.xml")]
    )
    assert not result.passed and not result.errored
    assert result.reasons[0] == "line coverage 31.96% (489/1530) is below the minimum 80.00%"
    assert result.reasons[1].startswith("the coverage report has no branch data")


def test_coverage_gate_branch_rate_below_minimum() -> None:
    result = evaluate_coverage(
        coverage_gate(min_line_rate=1.0, min_branch_rate=0.6), [fixture("coverage/coveragepy-coverage_3.xml")]
    )
    assert result.reasons == ["branch coverage 50.00% (2/4) is below the minimum 60.00%"]


def test_coverage_gate_merges_formats() -> None:
    result = evaluate_coverage(
        coverage_gate(min_line_rate=0.6),
        [fixture("coverage/istanbul-lcov.info"), fixture("coverage/coveragepy-nodestream-coverage.json")],
    )
    assert (result.measured["lines_covered"], result.measured["lines_valid"]) == (212, 370)
    assert (result.measured["branches_covered"], result.measured["branches_valid"]) == (8, 20)
    assert result.measured["format"] == "lcov, coveragepy-json"
    assert not result.passed  # 212/370 = 57.3 %


def test_coverage_gate_with_nothing_measured() -> None:
    result = evaluate_coverage(coverage_gate(min_line_rate=0.1), [b"SF:a\nLF:0\nLH:0\nend_of_record\n"])
    assert result.reasons == ["the coverage report measures no lines"]


# --- scan -------------------------------------------------------------------------------------


def test_scan_gate_fails_on_bandit_errors() -> None:
    result = evaluate_scan(scan_gate(), [fixture("sarif/bandit-results.sarif")])
    assert not result.passed
    assert result.reasons == ["3 error findings exceed the maximum of 0: B602, B324, B201"]
    assert (result.measured["error"], result.measured["warning"], result.measured["note"]) == (3, 2, 2)


def test_scan_gate_passes_on_trivy_warnings_within_limits() -> None:
    gate = scan_gate(max_findings={"error": 0, "warning": 5}, max_security_severity=6.9)
    result = evaluate_scan(gate, [fixture("sarif/trivy-alpine-310.sarif")])
    assert result.passed
    assert result.reasons == [
        "4 findings from Trivy: 0 error (max 0), 4 warning (max 5)",
        "highest security severity 5.3 (max 6.9)",
    ]


def test_scan_gate_security_severity() -> None:
    gate = scan_gate(max_findings={}, max_security_severity=9.0)
    result = evaluate_scan(gate, [fixture("sarif/codeql-ruby.sarif")])
    assert not result.passed
    assert result.reasons == [
        "3 findings exceed security severity 9: rb/kernel-open (9.8), rb/non-constant-kernel-open (9.8), "
        "rb/request-forgery (9.1)"
    ]
    assert result.measured["max_security_severity"] == 9.8


def test_scan_gate_allow_rules() -> None:
    gate = scan_gate(allow_rules=["B602", "B324", "B201"])
    result = evaluate_scan(gate, [fixture("sarif/bandit-results.sarif")])
    assert result.passed
    assert result.measured["ignored"] == 3


def test_scan_gate_tools_filter_is_case_insensitive() -> None:
    reports = [fixture("sarif/bandit-results.sarif"), fixture("sarif/trivy-iac.sarif")]
    only_trivy = evaluate_scan(scan_gate(tools=["TRIVY"], max_findings={"error": 1, "note": 1}), reports)
    assert only_trivy.passed
    assert (only_trivy.measured["error"], only_trivy.measured["note"]) == (1, 1)
    both = evaluate_scan(scan_gate(max_findings={"error": 1}), reports)
    assert both.reasons == ["4 error findings exceed the maximum of 1: B602, B324, B201, AVD-AWS-0132"]


def test_scan_gate_requires_runs_of_the_configured_tools() -> None:
    result = evaluate_scan(
        scan_gate(tools=["semgrep"]), [fixture("sarif/snyk-runs-1-tools-1-results-0.sarif")]
    )
    assert result.reasons == ["no SARIF run from tool 'semgrep' (tools present: Snyk Open Source)"]
    clean = evaluate_scan(scan_gate(), [fixture("sarif/snyk-runs-1-tools-1-results-0.sarif")])
    assert clean.passed


def test_scan_gate_fails_on_an_incomplete_run() -> None:
    log = (
        b'{"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "T"}}, '
        b'"invocations": [{"executionSuccessful": false}], "results": []}]}'
    )
    result = evaluate_scan(scan_gate(), [log])
    assert result.reasons == ["incomplete scan from T: invocation 0 reports executionSuccessful=false"]


def test_scan_gate_ignores_suppressed_findings() -> None:
    log = b"""{"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "T"}}, "results": [
      {"ruleId": "A", "level": "error", "message": {"text": "a"}, "suppressions": [{"kind": "inSource"}]},
      {"ruleId": "B", "level": "error", "message": {"text": "b"}, "baselineState": "absent"}]}]}"""
    result = evaluate_scan(scan_gate(), [log])
    assert result.passed and result.measured["ignored"] == 2


# --- perf -------------------------------------------------------------------------------------


def test_perf_gate_passes_on_locust_reqres() -> None:
    gate = perf_gate(p95_ms=200, p99_ms=500, max_error_rate=0.01, min_requests=100)
    result = evaluate_perf(gate, [fixture("perf/locust-reqres_results_stats.csv")])
    assert result.passed
    assert result.reasons == [
        "p95 latency 150.0 ms within the SLO of 200 ms",
        "p99 latency 320.0 ms within the SLO of 500 ms",
        "error rate 0.00% within the maximum 1.00%",
        "255 requests (minimum 100)",
    ]


def test_perf_gate_fails_on_locust_google() -> None:
    gate = perf_gate(p95_ms=2000, max_error_rate=0.05, min_requests=5000)
    result = evaluate_perf(gate, [fixture("perf/locust-google_results_stats.csv")])
    assert result.reasons == [
        "p95 latency 52000.0 ms exceeds the SLO of 2000 ms",
        "error rate 87.02% (3105/3568 requests failed) exceeds the maximum 5.00%",
        "only 3568 requests were made; the minimum is 5000",
    ]


def test_perf_gate_on_k6_summary_export() -> None:
    report = [fixture("perf/k6-summary-export.json")]
    assert evaluate_perf(perf_gate(p95_ms=4200, max_error_rate=0.01, min_requests=100), report).passed
    slow = evaluate_perf(perf_gate(p95_ms=4000), report)
    assert slow.reasons == ["p95 latency 4101.8 ms exceeds the SLO of 4000 ms"]
    assert slow.measured["p95_ms"] == pytest.approx(4101.8, abs=0.05)


def test_perf_gate_report_without_p95_fails_with_a_reason() -> None:
    result = evaluate_perf(perf_gate(p95_ms=500), [fixture("perf/k6-summary-export-qr-code-generator.json")])
    assert not result.passed and not result.errored
    assert result.reasons == [
        "the k6-summary-export report has no p95 (add it to k6's summaryTrendStats); "
        "the p95 SLO of 500 ms cannot be checked"
    ]
    assert evaluate_perf(
        perf_gate(p99_ms=500), [fixture("perf/k6-summary-export-qr-code-generator.json")]
    ).passed


def test_perf_gate_failed_k6_threshold() -> None:
    result = evaluate_perf(perf_gate(p95_ms=10), [fixture("perf/k6-handleSummary-grpc.json")])
    assert result.reasons == ["k6 threshold failed: fake_rate: rate >= 0.8"]
    assert result.measured["failed_thresholds"] == 1


def test_perf_gate_without_error_rate_cannot_check_it() -> None:
    result = evaluate_perf(perf_gate(max_error_rate=0.1), [fixture("perf/k6-handleSummary-grpc.json")])
    assert result.reasons[0].startswith("the k6-handle-summary report has no error rate")


def test_perf_gate_merges_reports_with_worst_percentile() -> None:
    reports = [
        fixture("perf/locust-reqres_results_stats.csv"),
        fixture("perf/locust-google_results_stats.csv"),
    ]
    result = evaluate_perf(perf_gate(p95_ms=100_000, max_error_rate=0.9), reports)
    assert result.measured["requests"] == 3823
    assert result.measured["p95_ms"] == 52000.0
    assert result.measured["error_rate"] == pytest.approx(3105 / 3823)
    assert result.passed


# --- soak -------------------------------------------------------------------------------------

DIGEST = Digest.of_bytes(b"artifact")
OTHER = Digest.of_bytes(b"other")


def state(since: dt.datetime, digest: Digest = DIGEST) -> EnvState:
    return EnvState(digest=digest, version="1.2.3", since=since, by="ci", seq=4)


def soak_gate(**kw: Any) -> cfg.SoakGate:
    return cfg.SoakGate.model_validate({"kind": "soak", **kw})


def test_soak_first_environment_passes() -> None:
    result = evaluate_soak(soak_gate(min_duration="1d"), None, None, dt.datetime(2026, 11, 27, tzinfo=UTC))
    assert result.passed
    assert result.reasons == ["first environment: there is no previous environment to soak in"]


def test_soak_too_short_says_what_remains_and_when() -> None:
    since = dt.datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    now = dt.datetime(2026, 11, 27, 14, 12, 30, tzinfo=UTC)
    result = evaluate_soak(soak_gate(min_duration="1d"), state(since), "staging", now, digest=DIGEST)
    assert not result.passed
    assert result.reasons == [
        "soaked only 5h 12m 30s in staging (minimum 1d): 18h 47m 30s remaining, "
        "met at 2026-11-28T09:00:00+00:00 (UTC)"
    ]
    assert result.measured["met_at"] == "2026-11-28T09:00:00+00:00"


def test_soak_long_enough_passes_and_converts_zones() -> None:
    since = dt.datetime(2026, 11, 27, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))  # 09:00 UTC
    now = dt.datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    result = evaluate_soak(soak_gate(min_duration="1d"), state(since), "staging", now)
    assert result.passed
    assert result.reasons == ["soaked 1d in staging since 2026-11-27T09:00:00+00:00 (minimum 1d)"]


def test_soak_needs_the_digest_in_the_previous_environment() -> None:
    now = dt.datetime(2026, 11, 28, tzinfo=UTC)
    nothing = evaluate_soak(soak_gate(min_duration="10s"), None, "dev", now)
    assert not nothing.passed
    assert nothing.reasons[0].startswith("the digest never ran in dev (nothing runs there)")
    other = evaluate_soak(soak_gate(min_duration="10s"), state(now, OTHER), "dev", now, digest=DIGEST)
    assert other.reasons[0].startswith(f"dev runs {OTHER.short}, not this digest")
    relaxed = evaluate_soak(soak_gate(min_duration="10s", required=False), None, "dev", now)
    assert relaxed.passed and relaxed.reasons[0].endswith("gate not required")


# --- windows ----------------------------------------------------------------------------------

BERLIN_FREEZE = {
    "start_day": "fri",
    "start": "16:00",
    "end_day": "mon",
    "end": "08:00",
    "timezone": "Europe/Berlin",
}
FREEZE_LABEL = "fri 16:00 → mon 08:00 Europe/Berlin"


def window_gate(
    deny: list[dict[str, str]] | None = None, allow: list[dict[str, str]] | None = None
) -> cfg.WindowGate:
    return cfg.WindowGate.model_validate({"kind": "window", "deny": deny or [], "allow": allow or []})


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


@pytest.mark.parametrize(
    ("now", "passed"),
    [
        ("2026-11-27T15:59:59+01:00", True),  # Friday, just before the freeze
        ("2026-11-27T16:00:00+01:00", False),  # the freeze starts
        ("2026-11-29T12:00:00+01:00", False),  # Sunday
        ("2026-11-30T07:59:59+01:00", False),
        ("2026-11-30T08:00:00+01:00", True),  # Monday, the freeze is over
        ("2026-12-02T12:00:00+01:00", True),
    ],
)
def test_berlin_freeze_boundaries(now: str, passed: bool) -> None:
    assert evaluate_window(window_gate(deny=[BERLIN_FREEZE]), at(now)).passed is passed


def test_inside_freeze_names_the_next_opening() -> None:
    gate = window_gate(deny=[BERLIN_FREEZE])
    result = evaluate_window(gate, at("2026-11-28T10:00:00+00:00"))
    assert not result.passed
    assert result.reasons == [f"inside freeze {FREEZE_LABEL}; opens 2026-11-30T08:00:00+01:00"]
    assert result.measured["next_opening"] == "2026-11-30T08:00:00+01:00"
    opening = next_opening(gate, at("2026-11-28T10:00:00+00:00"))
    assert opening == at("2026-11-30T07:00:00+00:00")
    assert opening is not None and opening.isoformat() == "2026-11-30T08:00:00+01:00"


def test_outside_freeze_says_when_it_closes() -> None:
    gate = window_gate(deny=[BERLIN_FREEZE])
    now = at("2026-11-25T09:00:00+00:00")
    result = evaluate_window(gate, now)
    assert result.reasons == [
        f"not inside any freeze ({FREEZE_LABEL})",
        "open until 2026-11-27T16:00:00+01:00",
    ]
    assert next_opening(gate, now) == now


@pytest.mark.parametrize(
    ("now", "passed"),
    [
        # Autumn: CEST (+02:00) ends on Sunday 2026-10-25, so the freeze starts at 14:00 UTC on Friday
        # and ends at 07:00 UTC (not 06:00) on Monday.
        ("2026-10-23T13:59:59+00:00", True),
        ("2026-10-23T14:00:00+00:00", False),
        ("2026-10-26T06:30:00+00:00", False),
        ("2026-10-26T07:00:00+00:00", True),
        # Spring: CEST starts on Sunday 2026-03-29; the freeze starts 15:00 UTC, ends 06:00 UTC.
        ("2026-03-27T14:59:59+00:00", True),
        ("2026-03-27T15:00:00+00:00", False),
        ("2026-03-30T05:59:59+00:00", False),
        ("2026-03-30T06:00:00+00:00", True),
    ],
)
def test_berlin_freeze_across_dst_transitions(now: str, passed: bool) -> None:
    assert evaluate_window(window_gate(deny=[BERLIN_FREEZE]), at(now)).passed is passed


def test_next_opening_across_dst_transitions() -> None:
    gate = window_gate(deny=[BERLIN_FREEZE])
    autumn = evaluate_window(gate, at("2026-10-24T12:00:00+00:00"))
    assert autumn.reasons == [f"inside freeze {FREEZE_LABEL}; opens 2026-10-26T08:00:00+01:00"]
    spring = next_opening(gate, at("2026-03-28T12:00:00+00:00"))
    assert spring is not None and spring.isoformat() == "2026-03-30T08:00:00+02:00"


def test_window_boundary_in_the_skipped_hour() -> None:
    # 02:30 does not exist in Berlin on 2026-03-29: the clock jumps from 02:00 to 03:00 CEST.
    gate = window_gate(
        deny=[{**BERLIN_FREEZE, "start_day": "sat", "start": "12:00", "end_day": "sun", "end": "02:30"}]
    )
    assert not evaluate_window(gate, at("2026-03-29T00:59:59+00:00")).passed
    assert evaluate_window(gate, at("2026-03-29T01:00:00+00:00")).passed
    opening = next_opening(gate, at("2026-03-29T00:30:00+00:00"))
    assert opening is not None and opening.isoformat() == "2026-03-29T03:00:00+02:00"


def test_window_boundary_in_the_repeated_hour_takes_the_first() -> None:
    # 02:30 happens twice in Berlin on 2026-10-25; the freeze ends at the first one (CEST).
    gate = window_gate(
        deny=[{**BERLIN_FREEZE, "start_day": "sat", "start": "12:00", "end_day": "sun", "end": "02:30"}]
    )
    opening = next_opening(gate, at("2026-10-24T20:00:00+00:00"))
    assert opening is not None and opening.isoformat() == "2026-10-25T02:30:00+02:00"
    assert evaluate_window(gate, at("2026-10-25T01:00:00+00:00")).passed  # 02:00 CET, the second pass


def test_allow_windows() -> None:
    office = {
        "start_day": "mon",
        "start": "09:00",
        "end_day": "thu",
        "end": "17:00",
        "timezone": "America/New_York",
    }
    gate = window_gate(allow=[office])
    inside = evaluate_window(gate, at("2026-11-30T15:00:00+00:00"))  # Monday 10:00 EST
    assert inside.passed
    assert inside.reasons == [
        "inside allow window mon 09:00 → thu 17:00 America/New_York",
        "open until 2026-12-03T17:00:00-05:00",
    ]
    friday = evaluate_window(gate, at("2026-11-27T15:00:00+00:00"))
    assert friday.reasons == [
        "outside every allow window (mon 09:00 → thu 17:00 America/New_York); opens 2026-11-30T09:00:00-05:00"
    ]


def test_allow_and_deny_combined() -> None:
    # Allowed on weekdays in Berlin, but a Wednesday maintenance freeze in UTC.
    weekdays = {
        "start_day": "mon",
        "start": "08:00",
        "end_day": "fri",
        "end": "16:00",
        "timezone": "Europe/Berlin",
    }
    maintenance = {"start_day": "wed", "start": "10:00", "end_day": "wed", "end": "12:00", "timezone": "UTC"}
    gate = window_gate(deny=[maintenance], allow=[weekdays])
    result = evaluate_window(gate, at("2026-12-02T11:00:00+00:00"))
    assert result.reasons == ["inside freeze wed 10:00 → wed 12:00 UTC; opens 2026-12-02T12:00:00+00:00"]
    # A freeze that ends after the allow window closed: the next opening is Monday morning.
    friday_freeze = {**maintenance, "start_day": "fri", "end_day": "fri", "start": "14:00", "end": "18:00"}
    late = window_gate(deny=[friday_freeze], allow=[weekdays])
    opening = next_opening(late, at("2026-12-04T14:30:00+00:00"))
    assert opening is not None and opening.isoformat() == "2026-12-07T08:00:00+01:00"


def test_windows_that_never_open() -> None:
    always = {"start_day": "mon", "start": "00:00", "end_day": "mon", "end": "00:00", "timezone": "UTC"}
    gate = window_gate(deny=[always])
    now = at("2026-11-27T12:00:00+00:00")
    assert next_opening(gate, now) is None
    result = evaluate_window(gate, now)
    assert result.reasons == [
        "inside freeze mon 00:00 → mon 00:00 UTC; "
        "does not open within 14 days: the windows never allow promotion"
    ]


def test_naive_now_is_utc() -> None:
    gate = window_gate(deny=[BERLIN_FREEZE])
    assert not evaluate_window(gate, dt.datetime(2026, 11, 27, 15, 0)).passed
    assert evaluate_window(gate, dt.datetime(2026, 11, 27, 14, 59)).passed


# --- policy -----------------------------------------------------------------------------------


def artifact(**provenance: Any) -> ArtifactRecord:
    fields = {
        "commit": "3484a3fb",
        "build_url": "https://ci.example/build/7",
        "published_by": "ci",
        **provenance,
    }
    return ArtifactRecord(
        service="hello",
        digest=DIGEST,
        size=8,
        media_type="application/gzip",
        version="1.2.3",
        created_at=dt.datetime(2026, 11, 27, tzinfo=UTC),
        provenance=Provenance.model_validate(fields),
    )


def environment(settings: dict[str, Any], blueprint: dict[str, Any] | None) -> cfg.Environment:
    return cfg.Environment.model_validate(
        {"name": "prod", "target": {"settings": settings}, "blueprint": blueprint}
    )


def policy_gate(**kw: Any) -> cfg.PolicyGate:
    return cfg.PolicyGate.model_validate({"kind": "policy", **kw})


def test_policy_passes_with_provenance_and_matching_blueprint() -> None:
    env = environment(
        {"replicas": 5, "log_level": "warning"},
        {"settings": {"replicas": 3, "log_level": "warning"}, "overridable": ["replicas"]},
    )
    result = evaluate_policy(policy_gate(), artifact(), env)
    assert result.passed
    assert result.reasons == [
        "provenance has commit, build_url",
        "target settings match the blueprint of prod (2 settings; overridden: replicas)",
    ]


def test_policy_missing_or_empty_provenance() -> None:
    gate = policy_gate(require_provenance=["commit", "build_url", "builder"])
    result = evaluate_policy(gate, artifact(build_url="  ", builder=None), environment({}, None))
    assert not result.passed
    assert result.reasons == ["provenance.build_url is empty", "provenance.builder is missing"]


def test_policy_blueprint_violations_name_each_key() -> None:
    env = environment(
        {"replicas": 2, "debug": 0, "feature_x": True},
        {"settings": {"replicas": 3, "log_level": "warning", "debug": False}, "overridable": []},
    )
    result = evaluate_policy(policy_gate(), artifact(), env)
    assert not result.passed
    assert result.reasons == [
        "setting 'replicas': expected 3 (blueprint), actual 2 (target)",
        "setting 'log_level' is missing: the blueprint requires 'warning'",
        "setting 'debug': expected False (blueprint), actual 0 (target)",
        "setting 'feature_x' = True is an undeclared override: it is neither a blueprint setting nor listed "
        "in blueprint.overridable",
    ]
    assert (result.measured["mismatched"], result.measured["undeclared"]) == (3, 1)


def test_policy_numbers_compare_by_value() -> None:
    env = environment({"ratio": 1.0, "name": "3"}, {"settings": {"ratio": 1, "name": 3}})
    result = evaluate_policy(policy_gate(require_provenance=[]), artifact(), env)
    assert result.reasons == ["setting 'name': expected 3 (blueprint), actual '3' (target)"]


def test_policy_overridable_key_outside_blueprint_settings_is_declared() -> None:
    env = environment({"canary_weight": 10}, {"settings": {}, "overridable": ["canary_weight"]})
    assert evaluate_policy(policy_gate(), artifact(), env).passed
