"""Evidence parsers against real CI reports (../shared/fixtures) and hostile or broken input."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promotion import evidence as ev
from promotion.errors import PromotionError
from promotion.evidence import EvidenceUnreadable, parse_coverage, parse_junit, parse_perf, parse_sarif
from tests.sarif_gen import write_big_sarif

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures"

PARSERS: dict[str, Callable[[bytes], object]] = {
    "junit": parse_junit,
    "coverage": parse_coverage,
    "sarif": parse_sarif,
    "perf": parse_perf,
}


def fixture(relpath: str) -> bytes:
    """Bytes of a shared fixture; skips the test when the fixtures folder is not checked out."""
    if not FIXTURES.is_dir():
        pytest.skip("../shared/fixtures not present")
    return (FIXTURES / relpath).read_bytes()


def fixture_paths(folder: str) -> list[str]:
    if not (FIXTURES / folder).is_dir():
        return []
    return sorted(f"{folder}/{p.name}" for p in (FIXTURES / folder).iterdir() if p.is_file())


def unreadable(parse: Callable[[bytes], object], data: bytes) -> EvidenceUnreadable:
    with pytest.raises(EvidenceUnreadable) as info:
        parse(data)
    return info.value


# --- JUnit ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "tests", "passed", "failures", "errors", "skipped"),
    [
        ("go-junit-report-001-report.xml", 5, 2, 1, 0, 2),
        ("go-junit-report-013-report.xml", 5, 2, 0, 3, 0),
        ("jest-junit-widget.xml", 2, 2, 0, 0, 0),
        ("jest-junit.xml", 6, 1, 4, 0, 1),
        ("nextest-basic.xml", 3, 2, 1, 0, 0),
        ("pytest-junit.fail.xml", 5, 3, 1, 0, 1),
        ("pytest-report.xml", 3, 1, 2, 0, 0),
        ("surefire-TEST-action.surefire.report.email.EmailAddressTest.xml", 9, 2, 2, 5, 0),
        ("surefire-TEST-org.apache.maven.surefire.test.FailingTest.xml", 2, 0, 2, 0, 0),
    ],
)
def test_junit_fixture_counts(
    name: str, tests: int, passed: int, failures: int, errors: int, skipped: int
) -> None:
    summary = parse_junit(fixture(f"junit/{name}"))
    assert (summary.tests, summary.passed, summary.failures, summary.errors, summary.skipped) == (
        tests,
        passed,
        failures,
        errors,
        skipped,
    )
    assert len(summary.failed_tests) == failures + errors


def test_junit_suite_names_and_failed_tests() -> None:
    go = parse_junit(fixture("junit/go-junit-report-001-report.xml"))
    assert go.suites == ["package/pass", "package/fail", "package/skip"]
    assert go.failed_tests == ["package/fail::TestOne"]
    jest = parse_junit(fixture("junit/jest-junit.xml"))
    assert jest.suites == ["__tests__\\main.test.js", "__tests__\\second.test.js"]
    bare = parse_junit(fixture("junit/surefire-TEST-org.apache.maven.surefire.test.FailingTest.xml"))
    assert bare.suites == ["org.apache.maven.surefire.test.FailingTest"]
    widget = parse_junit(fixture("junit/jest-junit-widget.xml"))
    assert widget.failed_tests == []


def test_junit_counts_testcases_not_root_attributes() -> None:
    report = b"""<?xml version="1.0"?>
<testsuites tests="99" failures="0" errors="0">
  <testsuite name="outer" tests="1">
    <testsuite name="inner">
      <testcase classname="a" name="ok"/>
      <testcase classname="a" name="flaky"><flakyFailure message="first try"/></testcase>
      <testcase classname="a" name="both"><failure/><error/></testcase>
      <testcase name="skip"><skipped/></testcase>
    </testsuite>
  </testsuite>
</testsuites>"""
    summary = parse_junit(report)
    assert (summary.tests, summary.passed, summary.failures, summary.errors, summary.skipped) == (
        4,
        2,
        0,
        1,
        1,
    )
    assert summary.suites == ["outer", "inner"]
    assert summary.failed_tests == ["a::both"]


def test_junit_namespaced_and_utf16_reports() -> None:
    namespaced = b'<t:testsuite xmlns:t="urn:x"><t:testcase name="a"><t:failure/></t:testcase></t:testsuite>'
    assert parse_junit(namespaced).failures == 1
    utf16 = '<?xml version="1.0" encoding="utf-16"?><testsuite><testcase name="ñ"/></testsuite>'
    assert parse_junit(utf16.encode("utf-16")).passed == 1


def test_junit_empty_suite_has_zero_tests() -> None:
    summary = parse_junit(b'<testsuites><testsuite name="none" tests="0"/></testsuites>')
    assert summary.tests == 0
    assert summary.suites == ["none"]


# --- coverage ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt", "lines_covered", "lines_valid", "branches_covered", "branches_valid"),
    [
        ("cobertura-Cobertura2.1.1.xml", "cobertura", 24, 36, 1, 4),
        ("coveragepy-coverage_1.xml", "cobertura", 489, 1530, None, None),
        ("coveragepy-coverage_2.xml", "cobertura", 1565, 1759, 361, 436),
        ("coveragepy-coverage_3.xml", "cobertura", 8, 8, 2, 4),
        ("coveragepy-nodestream-coverage.json", "coveragepy-json", 162, 313, None, None),
        ("dotnet-lcov.info", "lcov", 124, 199, 5, 8),
        ("istanbul-lcov.info", "lcov", 50, 57, 8, 20),
        ("jacoco-jacocoTestReport.xml", "jacoco", 5, 7, 1, 2),
        ("jacoco-report.xml", "jacoco", 12, 27, 2, 6),
    ],
)
def test_coverage_fixture_totals(
    name: str,
    fmt: str,
    lines_covered: int,
    lines_valid: int,
    branches_covered: int | None,
    branches_valid: int | None,
) -> None:
    summary = parse_coverage(fixture(f"coverage/{name}"))
    assert summary.format == fmt
    assert (summary.lines_covered, summary.lines_valid) == (lines_covered, lines_valid)
    assert summary.line_rate == pytest.approx(lines_covered / lines_valid)
    assert (summary.branches_covered, summary.branches_valid) == (branches_covered, branches_valid)
    if branches_valid is None:
        assert summary.branch_rate is None
    else:
        assert summary.branch_rate == pytest.approx((branches_covered or 0) / branches_valid)


def test_coverage_rates_match_readme() -> None:
    assert parse_coverage(fixture("coverage/cobertura-Cobertura2.1.1.xml")).line_rate == pytest.approx(
        0.667, abs=5e-4
    )
    assert parse_coverage(fixture("coverage/coveragepy-coverage_1.xml")).line_rate == pytest.approx(
        0.3196, abs=5e-5
    )
    assert parse_coverage(fixture("coverage/coveragepy-coverage_2.xml")).branch_rate == pytest.approx(
        0.828, abs=5e-4
    )
    nodestream = parse_coverage(fixture("coverage/coveragepy-nodestream-coverage.json"))
    assert nodestream.line_rate == pytest.approx(0.5176, abs=5e-5)
    assert parse_coverage(fixture("coverage/dotnet-lcov.info")).line_rate == pytest.approx(0.623, abs=5e-4)
    assert parse_coverage(fixture("coverage/istanbul-lcov.info")).line_rate == pytest.approx(0.877, abs=5e-4)
    assert parse_coverage(fixture("coverage/jacoco-report.xml")).line_rate == pytest.approx(0.444, abs=5e-4)


def test_cobertura_without_totals_counts_class_lines_once() -> None:
    report = b"""<coverage line-rate="0.5"><packages><package name="p"><classes>
      <class name="a" filename="a.py">
        <methods><method name="f"><lines><line number="1" hits="1"/></lines></method></methods>
        <lines>
          <line number="1" hits="1"/>
          <line number="2" hits="0"/>
          <line number="3" hits="2" branch="true" condition-coverage="50% (1/2)"/>
        </lines>
      </class>
    </classes></package></packages></coverage>"""
    summary = parse_coverage(report)
    assert (summary.lines_covered, summary.lines_valid) == (2, 3)
    assert (summary.branches_covered, summary.branches_valid) == (1, 2)


def test_lcov_without_summary_lines_uses_da_and_brda() -> None:
    report = b"TN:\nSF:a.js\nDA:1,1\nDA:2,0\nDA:3,5\nBRDA:1,0,0,1\nBRDA:1,0,1,-\nend_of_record\n"
    summary = parse_coverage(report)
    assert (summary.lines_covered, summary.lines_valid) == (2, 3)
    assert (summary.branches_covered, summary.branches_valid) == (1, 2)


def test_zero_branches_is_no_branch_data() -> None:
    summary = parse_coverage(b"SF:a\nLF:2\nLH:1\nBRF:0\nBRH:0\nend_of_record\n")
    assert summary.branch_rate is None
    assert summary.branches_valid is None


def test_coveragepy_json_with_branches() -> None:
    doc = {
        "meta": {"format": 3, "branch_coverage": True},
        "totals": {"covered_lines": 8, "num_statements": 10, "covered_branches": 3, "num_branches": 4},
    }
    summary = parse_coverage(json.dumps(doc).encode())
    assert (summary.line_rate, summary.branch_rate) == (0.8, 0.75)


@pytest.mark.parametrize(
    ("data", "fmt", "words"),
    [
        (b'{"files": {}}', "coverage.py JSON", "no 'totals' object"),
        (b'{"totals": {"covered_lines": 5, "num_statements": 3}}', "coverage.py JSON", "exceed"),
        (b'{"totals": {"covered_lines": NaN, "num_statements": 3}}', "coverage.py JSON", "NaN"),
        (b'{"totals": {"covered_lines": "x", "num_statements": 3}}', "coverage.py JSON", "whole number"),
        (b"SF:a\nDA:1,1\nLF:1\n", "lcov", "truncated"),
        (b"SF:a\nLF:many\nend_of_record\n", "lcov", "whole number"),
        (b"hello world\n", "lcov", "not an lcov tracefile line"),
        (b"<html><body>502</body></html>", "coverage XML", "<html>"),
        (b'<coverage lines-valid="3" lines-covered="2"><packages>', "coverage XML", "truncated"),
        (b'<report name="r"><counter type="BRANCH" missed="1" covered="1"/></report>', "JaCoCo XML", "LINE"),
        (b"[1, 2]", "coverage report", "unrecognised format"),
        (b"\x00\x01\x02", "coverage report", "unrecognised format"),
    ],
)
def test_coverage_unreadable(data: bytes, fmt: str, words: str) -> None:
    exc = unreadable(parse_coverage, data)
    assert exc.format == fmt
    assert words in str(exc)
    assert str(exc).startswith(fmt + ": ")


# --- SARIF ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "tool", "levels"),
    [
        ("bandit-results.sarif", "Bandit", {"error": 3, "note": 2, "warning": 2}),
        ("codeql-ruby.sarif", "CodeQL", {"error": 2, "warning": 2}),
        ("grype-github-actions.sarif", "grype", {"error": 1}),
        ("semgrep-test_sarif_output_with_dataflow_traces.sarif", "Semgrep OSS", {"warning": 1}),
        ("snyk-runs-1-tools-1-results-0.sarif", "Snyk Open Source", {}),
        ("trivy-alpine-310.sarif", "Trivy", {"warning": 4}),
        ("trivy-iac.sarif", "Trivy", {"error": 1, "note": 1}),
    ],
)
def test_sarif_fixture_levels(name: str, tool: str, levels: dict[str, int]) -> None:
    summary = parse_sarif(fixture(f"sarif/{name}"))
    assert summary.tools == [tool]
    assert dict(Counter(f.level for f in summary.findings)) == levels
    assert summary.incomplete == []
    assert all(f.tool == tool for f in summary.findings)


def test_sarif_bandit_levels_without_rule_default_are_warning() -> None:
    summary = parse_sarif(fixture("sarif/bandit-results.sarif"))
    by_rule = {f.rule_id: f.level for f in summary.findings}
    assert by_rule["B608"] == "warning"  # no level, no rule default
    assert by_rule["B104"] == "warning"
    assert by_rule["B602"] == "error"
    assert all(f.security_severity is None for f in summary.findings)
    assert summary.findings[0].location == "app.py:4"


def test_sarif_codeql_levels_and_severity_from_rules() -> None:
    summary = parse_sarif(fixture("sarif/codeql-ruby.sarif"))
    found = {(f.rule_id, f.level, f.security_severity) for f in summary.findings}
    assert found == {
        ("rb/request-forgery", "error", 9.1),
        ("rb/csrf-protection-not-enabled", "warning", 8.8),
        ("rb/kernel-open", "error", 9.8),
        ("rb/non-constant-kernel-open", "warning", 9.8),
    }


def test_sarif_security_severity_fixtures() -> None:
    grype = parse_sarif(fixture("sarif/grype-github-actions.sarif")).findings
    assert [(f.rule_id, f.security_severity) for f in grype] == [
        ("GHSA-cxww-7g56-2vh6-actions/download-artifact", 7.3)
    ]
    iac = parse_sarif(fixture("sarif/trivy-iac.sarif")).findings
    assert {(f.rule_id, f.level, f.security_severity) for f in iac} == {
        ("AVD-AWS-0132", "error", 8.0),
        ("s3-bucket-logging", "note", 2.0),
    }
    alpine = parse_sarif(fixture("sarif/trivy-alpine-310.sarif")).findings
    assert {f.security_severity for f in alpine} == {5.3}


def sarif(run: Mapping[str, object]) -> bytes:
    return json.dumps({"version": "2.1.0", "runs": [run]}).encode()


def test_sarif_rule_lookup_by_index_extension_and_kind() -> None:
    run = {
        "tool": {
            "driver": {
                "name": "T",
                "rules": [
                    {"id": "D0", "defaultConfiguration": {"level": "note"}},
                    {
                        "id": "D1",
                        "defaultConfiguration": {"level": "error"},
                        "properties": {"security-severity": "9.0"},
                    },
                ],
            },
            "extensions": [
                {"name": "pack", "rules": [{"id": "E0", "defaultConfiguration": {"level": "error"}}]},
            ],
        },
        "results": [
            {"ruleIndex": 1, "message": {"text": "by index"}},
            {"ruleId": "D0", "message": {"text": "by id"}},
            {"rule": {"id": "E0", "index": 0, "toolComponent": {"index": 0}}, "message": {"text": "ext"}},
            {"ruleId": "E0", "message": {"text": "ext by id"}},
            {"ruleId": "D1/sub", "message": {"text": "hierarchical"}},
            {"ruleId": "D1", "kind": "pass", "message": {"text": "a pass"}},
            {"ruleId": "unknown", "message": {"id": "m"}},
            {"ruleId": "D0", "level": "error", "message": {"text": "explicit wins {0}", "arguments": ["x"]}},
        ],
    }
    findings = parse_sarif(sarif(run)).findings
    assert [f.level for f in findings] == [
        "error",
        "note",
        "error",
        "error",
        "error",
        "none",
        "warning",
        "error",
    ]
    assert findings[0].security_severity == 9.0
    assert findings[4].rule_id == "D1/sub"
    assert findings[7].message == "explicit wins x"


def test_sarif_suppressions_baseline_and_long_messages() -> None:
    run = {
        "tool": {"driver": {"name": "T"}},
        "results": [
            {"ruleId": "A", "message": {"text": "x" * 1000}, "suppressions": [{"kind": "inSource"}]},
            {
                "ruleId": "B",
                "message": {"text": "y"},
                "suppressions": [{"kind": "external", "status": "rejected"}],
            },
            {"ruleId": "C", "message": {"text": "z"}, "baselineState": "absent"},
        ],
    }
    a, b, c = parse_sarif(sarif(run)).findings
    assert a.suppressed and not b.suppressed and not c.suppressed
    assert len(a.message) == ev.MAX_MESSAGE_CHARS
    assert c.baseline_state == "absent"


def test_sarif_incomplete_runs() -> None:
    failed = {
        "tool": {"driver": {"name": "T"}},
        "invocations": [{"executionSuccessful": False, "exitCode": 2}],
        "results": [],
    }
    summary = parse_sarif(sarif(failed))
    assert [(r.tool, r.reason) for r in summary.incomplete] == [
        ("T", "invocation 0 reports executionSuccessful=false (exit code 2)")
    ]
    no_results = parse_sarif(sarif({"tool": {"driver": {"name": "U"}}}))
    assert no_results.incomplete[0].tool == "U"
    assert "no results array" in no_results.incomplete[0].reason


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b'{"version": "2.0.0", "runs": []}', "not supported"),
        (b'{"version": "2.1.0"}', "no 'runs' array"),
        (b'{"version": "2.1.0", "runs": null}', "'runs' is null"),
        (b"[]", "the top level is a list"),
        (b'{"runs": [{"tool": {}}]}', "runs[0].tool.driver is missing"),
        (b'{"runs": [{"tool": {"driver": {"name": "T"}}, "results": {}}]}', "runs[0].results is a dict"),
        (
            b'{"runs": [{"tool": {"driver": {"name": "T"}}, "results": [{"level": "high"}]}]}',
            "runs[0].results[0].level is 'high'",
        ),
        (b'{"version": "2.1.0", "runs": [', "truncated"),
        ("{}".encode("utf-16-le"), "not UTF-8"),
    ],
)
def test_sarif_unreadable(data: bytes, words: str) -> None:
    exc = unreadable(parse_sarif, data)
    assert exc.format == "SARIF"
    assert words in str(exc)


# --- performance ------------------------------------------------------------------------------


def test_k6_summary_export() -> None:
    summary = parse_perf(fixture("perf/k6-summary-export.json"))
    assert summary.format == "k6-summary-export"
    assert summary.requests == 100
    assert summary.failures == 1
    assert summary.error_rate == pytest.approx(0.01)
    assert summary.p95_ms == pytest.approx(4101.8, abs=0.05)
    assert summary.p99_ms is None
    assert summary.avg_ms == pytest.approx(3265, abs=0.5)
    assert summary.failed_thresholds == []
    assert summary.latency_metric == "http_req_duration"


def test_k6_summary_export_with_custom_trend_stats() -> None:
    summary = parse_perf(fixture("perf/k6-summary-export-qr-code-generator.json"))
    assert summary.requests == 493_168
    assert summary.failures == 0
    assert summary.p95_ms is None
    assert summary.p99_ms == pytest.approx(348.6, abs=0.05)


def test_k6_handle_summary_failed_threshold() -> None:
    summary = parse_perf(fixture("perf/k6-handleSummary-grpc.json"))
    assert summary.format == "k6-handle-summary"
    assert summary.failed_thresholds == ["fake_rate: rate >= 0.8"]
    assert summary.latency_metric == "grpc_req_duration"
    assert summary.requests == 9615
    assert summary.error_rate is None


def test_k6_legacy_threshold_true_means_failed() -> None:
    # --summary-export writes true for a FAILED threshold (grafana/k6#1498).
    doc = {
        "metrics": {
            "http_reqs": {"count": 10, "rate": 1.0},
            "http_req_duration": {"p(95)": 120.0, "thresholds": {"p(95)<100": True, "p(95)<500": False}},
            "http_req_failed": {"passes": 0, "fails": 10, "value": 0},
        }
    }
    summary = parse_perf(json.dumps(doc).encode())
    assert summary.failed_thresholds == ["http_req_duration: p(95)<100"]


@pytest.mark.parametrize(
    ("name", "requests", "failures", "median", "p95", "p99"),
    [
        ("locust-google_results_stats.csv", 3568, 3105, 22000, 52000, 62000),
        ("locust-reqres_results_stats.csv", 255, 0, 130, 150, 320),
    ],
)
def test_locust_aggregated_row(
    name: str, requests: int, failures: int, median: float, p95: float, p99: float
) -> None:
    summary = parse_perf(fixture(f"perf/{name}"))
    assert summary.format == "locust-csv"
    assert (summary.requests, summary.failures) == (requests, failures)
    assert (summary.median_ms, summary.p95_ms, summary.p99_ms) == (median, p95, p99)
    assert summary.error_rate == pytest.approx(failures / requests)


def test_locust_old_column_names_and_missing_percentiles() -> None:
    report = (
        b'"Method","Name","# requests","# failures","Median response time","95%"\n'
        b'"GET","/a, with comma",0,0,N/A,N/A\n'
        b'"None","Total",0,0,N/A,N/A\n'
    )
    summary = parse_perf(report)
    assert (summary.requests, summary.failures, summary.error_rate, summary.p95_ms, summary.p99_ms) == (
        0,
        0,
        None,
        None,
        None,
    )


@pytest.mark.parametrize("name", ["perf/jmeter-kpi1.jtl", "perf/jmeter-results.jtl"])
def test_jmeter_jtl_is_read(name: str) -> None:
    # Read since issue 10 item 6; the traps are in tests/promotion/test_jmeter.py.
    assert parse_perf(fixture(name)).format == "jmeter-csv"


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b'{"root_group": {}}', "no 'metrics' object"),
        (b'{"metrics": {"http_reqs": {"count": -1}}}', "whole number"),
        (b'{"metrics": {"x": {"thresholds": {"rate>0": "yes"}}}}', "expected a boolean"),
        (b"Type,Name,Request Count,Failure Count\nGET,/a,1,0\n", "no 'Aggregated' row"),
        (b"Type,Name,Request Count,Failure Count\nGET,/a,1,0\n,Aggregated,1", "truncated"),
        (b"Type,Name,Request Count,Failure Count\n,Aggregated,1,5\n", "exceed"),
        (b'Type,Name,Request Count,Failure Count\n,"Aggregated,1,0\n', "not valid CSV"),
        (b"a,b\n1,2\n", "unrecognised format"),
    ],
)
def test_perf_unreadable(data: bytes, words: str) -> None:
    assert words in str(unreadable(parse_perf, data))


# --- hostile and broken input -----------------------------------------------------------------

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE testsuite [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<testsuite name="&xxe;"><testcase name="a"/></testsuite>"""
BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<coverage lines-valid="1" lines-covered="1"><source>&lol3;</source></coverage>"""
PARAMETER_ENTITY = b"""<!DOCTYPE x [<!ENTITY % remote SYSTEM "http://127.0.0.1:9/evil.dtd"> %remote;]>
<testsuite/>"""


@pytest.mark.parametrize(
    ("parse", "root"), [(parse_junit, b"testsuite"), (parse_coverage, b"coverage")], ids=["junit", "coverage"]
)
@pytest.mark.parametrize(
    ("data", "words"),
    [
        (XXE, "entity 'xxe'"),
        (BILLION_LAUGHS, "entity 'lol'"),
        (PARAMETER_ENTITY, "entity 'remote'"),
        (b"<ROOT><testcase name='a'>", "truncated"),
        (b"<ROOT><testcase></ROOT>", "mismatched tag"),
        ('<?xml version="1.0" encoding="utf-8"?><ROOT name="ñ"/>'.encode("latin-1"), "encoding"),
        (b'<?xml version="1.0" encoding="klingon"?><ROOT/>', "unknown encoding"),
        (b"<ROOT>" + b"<a>" * ev.MAX_XML_DEPTH, "nested more than"),
        (b"", "empty"),
        (b"  \n\t ", "empty"),
    ],
)
def test_hostile_or_broken_xml_is_unreadable(
    parse: Callable[[bytes], object], root: bytes, data: bytes, words: str
) -> None:
    exc = unreadable(parse, data.replace(b"ROOT", root))
    assert words in str(exc)
    assert isinstance(exc, PromotionError)


def test_xxe_never_reads_the_file() -> None:
    exc = unreadable(parse_junit, XXE)
    assert "root:" not in str(exc)
    assert "XXE" in str(exc)


def test_external_dtd_reference_is_not_fetched() -> None:
    # Cobertura 2.x and JaCoCo always name a DTD; expat must not fetch it (this one does not exist).
    report = (
        b'<!DOCTYPE testsuite SYSTEM "file:///nonexistent/x.dtd"><testsuite><testcase name="a"/></testsuite>'
    )
    assert parse_junit(report).passed == 1


@pytest.mark.parametrize("kind", list(PARSERS))
def test_oversized_report_is_refused_before_parsing(kind: str) -> None:
    data = b"<" + b" " * ev.MAX_EVIDENCE_BYTES
    exc = unreadable(PARSERS[kind], data)
    assert "refused" in str(exc)
    assert str(ev.MAX_EVIDENCE_BYTES) in str(exc)


@pytest.mark.parametrize("kind", list(PARSERS))
def test_non_bytes_input_is_unreadable(kind: str) -> None:
    exc = unreadable(PARSERS[kind], "a string")  # type: ignore[arg-type]
    assert "expected the report's bytes" in str(exc)


def test_junit_wrong_format() -> None:
    assert "<coverage>" in str(unreadable(parse_junit, fixture("coverage/coveragepy-coverage_3.xml")))
    assert "not XML" in str(unreadable(parse_junit, fixture("sarif/trivy-iac.sarif")))


@pytest.mark.parametrize(
    "relpath",
    fixture_paths("junit") + fixture_paths("coverage") + fixture_paths("sarif") + fixture_paths("perf"),
)
def test_truncated_fixtures_never_raise_raw_exceptions(relpath: str) -> None:
    data = fixture(relpath)
    for parse in PARSERS.values():
        for cut in range(0, len(data), max(1, len(data) // 25)):
            try:
                parse(data[:cut])
            except EvidenceUnreadable:
                pass


@pytest.mark.parametrize("kind", list(PARSERS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=400), st.text(max_size=400).map(str.encode)))
def test_arbitrary_bytes_never_raise_raw_exceptions(kind: str, data: bytes) -> None:
    try:
        PARSERS[kind](data)
    except EvidenceUnreadable:
        pass


@pytest.mark.parametrize("kind", list(PARSERS))
@settings(max_examples=100, deadline=None)
@given(
    doc=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "runs",
                        "tool",
                        "driver",
                        "name",
                        "results",
                        "level",
                        "rules",
                        "metrics",
                        "values",
                        "totals",
                        "thresholds",
                        "count",
                        "p(95)",
                        "ruleIndex",
                        "rule",
                        "covered_lines",
                        "num_statements",
                    ]
                ),
                inner,
                max_size=4,
            )
        ),
        max_leaves=20,
    )
)
def test_arbitrary_json_shapes_never_raise_raw_exceptions(kind: str, doc: object) -> None:
    try:
        PARSERS[kind](json.dumps(doc).encode())
    except EvidenceUnreadable:
        pass


# --- bounded memory -----------------------------------------------------------------------------

SCAN_GATE_CHILD = """
import json, sys
from promotion.config import ScanGate
from promotion.gates import evaluate_scan
with open(sys.argv[1], "rb") as f:
    data = f.read()
gate = ScanGate(kind="scan", max_findings={"error": 0}, allow_rules=["R3"])
result = evaluate_scan(gate, [data]).model_dump()
# VmHWM: this process's own peak RSS. getrusage/wait4 ru_maxrss would also count the pytest
# process image the child was forked from (Linux carries the pre-exec high-water mark over).
with open("/proc/self/status") as f:
    hwm_kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
print(json.dumps({"result": result, "peak_mib": hwm_kib / 1024}))
"""


def test_scan_gate_on_500k_results_stays_within_bounded_memory(tmp_path: Path) -> None:
    """The old json.loads design took ~890 MiB (30x the log) for this log; streaming takes ~70."""
    import subprocess
    import sys

    sarif_path = tmp_path / "big.sarif"
    write_big_sarif(sarif_path, 500_000)
    size_mib = sarif_path.stat().st_size / 2**20
    assert 20 < size_mib < ev.MAX_EVIDENCE_BYTES / 2**20
    child = subprocess.run(
        [sys.executable, "-c", SCAN_GATE_CHILD, str(sarif_path)], capture_output=True, text=True, timeout=300
    )
    assert child.returncode == 0, child.stderr
    out = json.loads(child.stdout)
    result, peak_mib = out["result"], out["peak_mib"]
    m = result["measured"]
    # 25,000 results per rule; R3 (level none) is allowed, so not counted.
    assert (m["error"], m["warning"], m["note"], m["none"]) == (125_000, 125_000, 125_000, 100_000)
    assert m["ignored"] == 25_000 and not result["passed"]
    assert "125000 error findings exceed the maximum of 0: R0, R4, R8, R12, R16" in result["reasons"][0]
    assert peak_mib < 130, f"peak RSS {peak_mib:.0f} MiB for a {size_mib:.0f} MiB log"
