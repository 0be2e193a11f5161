"""JUnit XML test reports (Surefire, pytest, Gradle...): outcomes counted per ``<testcase>``."""

from __future__ import annotations

from promotion.evidence._safe import _checked, _fail, _first_char, _guarded, _walk_xml
from promotion.evidence.summaries import TestSummary

#: How many failing test names a :class:`TestSummary` keeps.
MAX_LISTED_TESTS = 50

_OUTCOME_RANK = {"passed": 0, "skipped": 1, "failure": 2, "error": 3}


def parse_junit(data: bytes) -> TestSummary:
    """Count the outcomes of the ``<testcase>`` elements of a JUnit XML report.

    Accepts a ``<testsuites>`` or a bare ``<testsuite>`` root and nested suites (pytest, Maven
    Surefire, jest-junit, go-junit-report, cargo-nextest, gotestsum...). A test case with an
    ``<error>`` child counts as an error, else with ``<failure>`` as a failure, else with
    ``<skipped>`` as skipped, else as passed. Surefire's ``<flakyFailure>``/``<rerunFailure>``
    describe earlier attempts and do not change the outcome.
    """
    fmt = "JUnit XML"
    raw = _checked(data, fmt)
    if _first_char(raw) != "<":
        _fail(fmt, "not XML (the report does not start with '<')")
    return _guarded(fmt, _parse_junit, raw)


def _parse_junit(data: bytes) -> TestSummary:
    fmt = "JUnit XML"
    counts = {"passed": 0, "skipped": 0, "failure": 0, "error": 0}
    suites: dict[str, None] = {}
    failed: list[str] = []
    case_depth = -1
    case_label = ""
    outcome = "passed"
    for event, elem, names in _walk_xml(data, fmt):
        depth = len(names) - 1
        name = names[-1]
        if event == "start":
            if depth == 0 and name not in ("testsuites", "testsuite"):
                _fail(fmt, f"the root element is <{name}>; a JUnit report has <testsuites> or <testsuite>")
            if name == "testsuite":
                suite = (elem.get("name") or "").strip()
                if suite:
                    suites.setdefault(suite)
            elif name == "testcase" and case_depth < 0:
                case_depth = depth
                outcome = "passed"
                classname = (elem.get("classname") or "").strip()
                test = (elem.get("name") or "").strip() or "(unnamed)"
                case_label = f"{classname}::{test}" if classname else test
            elif depth == case_depth + 1 and name in _OUTCOME_RANK:
                if _OUTCOME_RANK[name] > _OUTCOME_RANK[outcome]:
                    outcome = name
        elif name == "testcase" and depth == case_depth:
            counts[outcome] += 1
            if outcome in ("failure", "error") and len(failed) < MAX_LISTED_TESTS:
                failed.append(case_label)
            case_depth = -1
    return TestSummary(
        tests=sum(counts.values()),
        passed=counts["passed"],
        failures=counts["failure"],
        errors=counts["error"],
        skipped=counts["skipped"],
        suites=list(suites),
        failed_tests=failed,
    )
