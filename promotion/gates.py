"""Gate evaluators: pure functions from a gate's configuration and its evidence to a verdict.

Nothing here touches S3, Prefect or the clock: evidence arrives as bytes, the current time as an
argument. Every evaluator returns a frozen :class:`GateResult` and never raises for bad input:
unreadable evidence yields a failed result with ``errored=True`` and the parser's message as
the reason.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from promotion.config import (
    CoverageGate,
    Environment,
    PerfGate,
    PolicyGate,
    QuarantineEntry,
    ScanGate,
    SoakGate,
    TestsGate,
    WindowGate,
    format_duration,
)
from promotion.errors import EvidenceUnreadable
from promotion.evidence import (
    MAX_LISTED_TESTS,
    SARIF_LEVELS,
    CoverageSummary,
    PerfSummary,
    ScanSummary,
    TestSummary,
    parse_coverage,
    parse_junit,
    parse_perf,
    parse_sarif,
)
from promotion.models import ArtifactRecord, EnvState
from promotion.windows import OPENING_HORIZON, Schedule, inside
from promotion.windows import label as _label
from promotion.windows import utc as _utc

Value = float | int | str | None
Values = dict[str, Value]
S = TypeVar("S")


class GateResult(BaseModel):
    """The verdict of one gate: what was measured, against which thresholds, and why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gate: str
    kind: str
    passed: bool
    measured: dict[str, float | int | str | None]
    thresholds: dict[str, float | int | str | None]
    reasons: list[str]
    errored: bool = False
    #: The reports an evidence gate read: kind, filename, digest, when, by whom and how each was
    #: attached (published or attested), from promotion.evidence_set.
    evidence: list[dict[str, str]] = Field(default_factory=list)
    #: Set on an evidence gate whose report has not arrived while its ``wait_for`` runs: the
    #: failure only means "not yet", until then (the stage waits instead of being rejected).
    waiting_until: dt.datetime | None = None


# --- shared helpers ---------------------------------------------------------------------------


def _result(
    gate: Any,
    failures: list[str],
    passes: list[str],
    measured: Values,
    thresholds: Values,
) -> GateResult:
    return GateResult(
        gate=gate.name or gate.kind,
        kind=gate.kind,
        passed=not failures,
        measured=measured,
        thresholds=thresholds,
        reasons=failures or passes,
    )


def _pct(rate: float) -> str:
    return f"{rate:.2%}"


def _names(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return f"{shown} and {len(items) - limit} more" if len(items) > limit else shown


def _evaluate_reports(
    gate: TestsGate | CoverageGate | ScanGate | PerfGate,
    evidence_kind: str,
    reports: Sequence[bytes],
    parse: Callable[[bytes], S],
    thresholds: Values,
    judge: Callable[[list[S]], tuple[Values, list[str], list[str]]],
) -> GateResult:
    if isinstance(reports, bytes | bytearray | memoryview):
        reports = [bytes(reports)]  # one report passed where a list was expected
    if not reports:
        if gate.required:
            return _result(gate, [f"missing evidence: {evidence_kind}"], [], {"reports": 0}, thresholds)
        return _result(gate, [], ["no evidence; gate not required"], {"reports": 0}, thresholds)
    summaries: list[S] = []
    problems: list[str] = []
    for i, report in enumerate(reports, 1):
        try:
            summaries.append(parse(report))
        except EvidenceUnreadable as exc:
            problems.append(str(exc) if len(reports) == 1 else f"report {i} of {len(reports)}: {exc}")
    if problems:
        return GateResult(
            gate=gate.name or gate.kind,
            kind=gate.kind,
            passed=False,
            measured={"reports": len(reports), "unreadable": len(problems)},
            thresholds=thresholds,
            reasons=problems,
            errored=True,
        )
    measured, failures, passes = judge(summaries)
    measured["reports"] = len(summaries)
    return _result(gate, failures, passes, measured, thresholds)


# --- tests ------------------------------------------------------------------------------------


def evaluate_tests(gate: TestsGate, reports: Sequence[bytes], now: dt.datetime | None = None) -> GateResult:
    """JUnit XML reports (several are merged) against pass rate, failure/error/flaky caps and suites.

    The pass rate is ``passed / (tests - skipped)``. A run in which no test executed has no pass
    rate and fails unless ``min_pass_rate`` is 0. A test that passed only on a rerun is flaky: it
    counts as passed, always appears in ``measured["flaky"]`` (and its name in the reasons), and
    fails the gate beyond ``max_flaky``. Tests matching a quarantine entry still in force at
    ``now`` (up to and including its ``until`` day, UTC) are reported, not counted; without
    ``now`` no entry applies.
    """
    # A naive ``now`` is UTC, as everything this product stores.
    today = (now.astimezone(dt.UTC) if now.tzinfo else now).date() if now is not None else None
    active = [e for e in gate.quarantine if today is not None and today <= e.until]
    expired = [e for e in gate.quarantine if e not in active]
    thresholds: Values = {
        "min_pass_rate": gate.min_pass_rate,
        "max_failures": gate.max_failures,
        "max_errors": gate.max_errors,
        "required_suites": ", ".join(gate.required_suites) or None,
        "max_flaky": gate.max_flaky,
    }
    if gate.quarantine:
        thresholds["quarantine"] = ", ".join(f"{e.test} until {e.until.isoformat()}" for e in gate.quarantine)

    def judge(summaries: list[TestSummary]) -> tuple[Values, list[str], list[str]]:
        tests = sum(s.tests for s in summaries)
        passed = sum(s.passed for s in summaries)
        failures = sum(s.failures for s in summaries)
        errors = sum(s.errors for s in summaries)
        skipped = sum(s.skipped for s in summaries)
        flaky = sum(s.flaky for s in summaries)
        suites = list(dict.fromkeys(name for s in summaries for name in s.suites))
        failing = [name for s in summaries for name in s.failed_tests]
        flaky_names = [name for s in summaries for name in s.flaky_tests][:MAX_LISTED_TESTS]
        executed = tests - skipped
        rate = passed / executed if executed else None
        measured: Values = {
            "tests": tests,
            "passed": passed,
            "failures": failures,
            "errors": errors,
            "skipped": skipped,
            "pass_rate": rate,
            "suites": ", ".join(suites) or None,
            "flaky": flaky,
        }
        if flaky_names:
            measured["flaky_tests"] = ", ".join(flaky_names)
        bad: list[str] = []
        if rate is None:
            if gate.min_pass_rate > 0:
                what = "the reports contain no test cases" if not tests else f"all {tests} tests were skipped"
                bad.append(f"no test executed ({what}); the pass rate cannot be computed")
        elif rate < gate.min_pass_rate:
            bad.append(
                f"pass rate {_pct(rate)} ({passed}/{executed}) is below "
                f"the minimum {_pct(gate.min_pass_rate)}"
            )
        if failures > gate.max_failures:
            bad.append(
                f"{failures} failed tests exceed the maximum of {gate.max_failures}"
                + (f": {_names(failing)}" if failing else "")
            )
        if errors > gate.max_errors:
            bad.append(f"{errors} tests with errors exceed the maximum of {gate.max_errors}")
        for suite in gate.required_suites:
            if suite not in suites:
                bad.append(f"required suite {suite!r} is missing (present: {_names(suites) or 'none'})")
        notes: list[str] = []
        if gate.max_flaky is not None and flaky > gate.max_flaky:
            bad.append(
                f"{flaky} flaky tests (passed only on a rerun) exceed the maximum of {gate.max_flaky}: "
                f"{_names(flaky_names)}"
            )
        elif flaky:
            notes.append(f"{flaky} flaky tests passed only on a rerun: {_names(flaky_names)}")
        notes.extend(_quarantine_notes(active, summaries, measured))
        notes.extend(
            f"the quarantine of {e.test!r} expired on {(e.until + dt.timedelta(days=1)).isoformat()} "
            f"(until {e.until.isoformat()}); its tests count again"
            if today is not None
            else f"the quarantine of {e.test!r} was not applied: the evaluation time is unknown"
            for e in expired
        )
        if expired:
            measured["quarantine_expired"] = ", ".join(e.test for e in expired)
        shown_rate = f" ({_pct(rate)})" if rate is not None else ""
        good = [
            f"{passed} of {executed} executed tests passed{shown_rate}, {skipped} skipped; "
            f"{failures} failures (max {gate.max_failures}), {errors} errors (max {gate.max_errors})"
        ]
        if gate.required_suites:
            good.append(f"required suites present: {', '.join(gate.required_suites)}")
        # Notes are not failures: they ride along with whichever list becomes the reasons.
        good.extend(notes)
        if bad:
            bad.extend(notes)
        return measured, bad, good

    patterns = [e.test for e in active]
    return _evaluate_reports(
        gate, "junit", reports, lambda report: parse_junit(report, patterns), thresholds, judge
    )


def _quarantine_notes(
    active: list[QuarantineEntry], summaries: list[TestSummary], measured: Values
) -> list[str]:
    """What the tests of each quarantine entry in force did; adds the quarantine figures to ``measured``."""
    if not active:
        return []
    notes: list[str] = []
    matched_total = failed_total = 0
    failing_names: list[str] = []
    ready: list[str] = []
    for i, entry in enumerate(active):
        # Every summary was parsed with the same patterns, so entry i is at index i in each.
        outcomes = [s.quarantined[i] for s in summaries]
        passed = sum(q.passed for q in outcomes)
        failed = sum(q.failures + q.errors for q in outcomes)
        flaky = sum(q.flaky for q in outcomes)
        matched = passed + failed + sum(q.skipped for q in outcomes)
        names = [name for q in outcomes for name in q.failed_tests]
        matched_total += matched
        failed_total += failed
        failing_names.extend(names)
        why = f"quarantined until {entry.until.isoformat()}: {entry.reason}"
        if not matched:
            notes.append(f"quarantine entry {entry.test!r} matched no test in the reports ({why})")
        elif failed:
            notes.append(
                f"{failed} of {matched} quarantined tests matching {entry.test!r} failed, not counted "
                f"({why}): {_names(names)}"
            )
        elif flaky:
            notes.append(
                f"{flaky} of {matched} quarantined tests matching {entry.test!r} passed only on a rerun, "
                f"not counted ({why})"
            )
        elif passed:
            ready.append(entry.test)
            notes.append(
                f"quarantined {entry.test!r} passed ({passed} of {matched} tests, none flaky): "
                "ready to leave quarantine"
            )
    measured["quarantined"] = matched_total
    measured["quarantined_failed"] = failed_total
    measured["quarantine_failing"] = ", ".join(failing_names[:MAX_LISTED_TESTS]) or None
    measured["quarantine_ready"] = ", ".join(ready) or None
    return notes


# --- coverage ---------------------------------------------------------------------------------


def evaluate_coverage(gate: CoverageGate, reports: Sequence[bytes]) -> GateResult:
    """Coverage reports (Cobertura, JaCoCo, coverage.py JSON, lcov) against minimum rates.

    Several reports are merged by adding their line (and branch) counts. A branch minimum fails
    when no report has branch data.
    """
    thresholds: Values = {"min_line_rate": gate.min_line_rate, "min_branch_rate": gate.min_branch_rate}

    def judge(summaries: list[CoverageSummary]) -> tuple[Values, list[str], list[str]]:
        lines_covered = sum(s.lines_covered for s in summaries)
        lines_valid = sum(s.lines_valid for s in summaries)
        with_branches = [s for s in summaries if s.branches_valid]
        branches_covered = sum(s.branches_covered or 0 for s in with_branches)
        branches_valid = sum(s.branches_valid or 0 for s in with_branches)
        line_rate = lines_covered / lines_valid if lines_valid else None
        branch_rate = branches_covered / branches_valid if branches_valid else None
        measured: Values = {
            "line_rate": line_rate,
            "lines_covered": lines_covered,
            "lines_valid": lines_valid,
            "branch_rate": branch_rate,
            "branches_covered": branches_covered if with_branches else None,
            "branches_valid": branches_valid if with_branches else None,
            "format": ", ".join(dict.fromkeys(s.format for s in summaries)),
        }
        bad: list[str] = []
        good: list[str] = []
        if gate.min_line_rate is not None:
            if line_rate is None:
                bad.append("the coverage report measures no lines")
            elif line_rate < gate.min_line_rate:
                bad.append(
                    f"line coverage {_pct(line_rate)} ({lines_covered}/{lines_valid}) is below "
                    f"the minimum {_pct(gate.min_line_rate)}"
                )
            else:
                good.append(
                    f"line coverage {_pct(line_rate)} ({lines_covered}/{lines_valid}) meets "
                    f"the minimum {_pct(gate.min_line_rate)}"
                )
        if gate.min_branch_rate is not None:
            if branch_rate is None:
                bad.append(
                    "the coverage report has no branch data; measure branches (e.g. "
                    "`coverage run --branch`) or drop min_branch_rate"
                )
            elif branch_rate < gate.min_branch_rate:
                bad.append(
                    f"branch coverage {_pct(branch_rate)} ({branches_covered}/{branches_valid}) is "
                    f"below the minimum {_pct(gate.min_branch_rate)}"
                )
            else:
                good.append(
                    f"branch coverage {_pct(branch_rate)} ({branches_covered}/{branches_valid}) "
                    f"meets the minimum {_pct(gate.min_branch_rate)}"
                )
        return measured, bad, good

    return _evaluate_reports(gate, "coverage", reports, parse_coverage, thresholds, judge)


# --- scan -------------------------------------------------------------------------------------


def evaluate_scan(gate: ScanGate, reports: Sequence[bytes]) -> GateResult:
    """SARIF logs against per-level maximums and a maximum security severity.

    Counted are the findings of the configured ``tools`` (case-insensitive; every tool when the
    list is empty) whose rule is not in ``allow_rules`` and which are neither suppressed nor
    ``baselineState: absent`` (fixed since the baseline). A configured tool without any run in
    the reports fails the gate, as does a run that did not complete.

    Scanner health: a run whose tool says it failed (``executionSuccessful: false``) or wrote an
    error-level tool notification (a target not found, a rule that did not load) fails the gate
    with the tool's own message, because its "0 findings" covers less than it was asked to;
    ``allow_tool_errors: true`` turns those into reported notes. Lower-level notifications never
    count.
    """
    thresholds: Values = {f"max_{level}": gate.max_findings[level] for level in gate.max_findings}
    thresholds["max_security_severity"] = gate.max_security_severity
    thresholds["tools"] = ", ".join(gate.tools) or None
    thresholds["allow_rules"] = ", ".join(gate.allow_rules) or None
    thresholds["allow_tool_errors"] = str(gate.allow_tool_errors).lower()
    wanted = {t.casefold() for t in gate.tools}
    allowed = set(gate.allow_rules)

    def selected(tool: str) -> bool:
        return not wanted or tool.casefold() in wanted

    def judge(summaries: list[ScanSummary]) -> tuple[Values, list[str], list[str]]:
        tools = list(dict.fromkeys(t for s in summaries for t in s.tools))
        findings = [f for s in summaries for f in s.findings if selected(f.tool)]
        counted = [
            f
            for f in findings
            if f.rule_id not in allowed and not f.suppressed and f.baseline_state != "absent"
        ]
        by_level = {level: [f for f in counted if f.level == level] for level in SARIF_LEVELS}
        severities = [f.security_severity for f in counted if f.security_severity is not None]
        measured: Values = {level: len(by_level[level]) for level in SARIF_LEVELS}
        measured.update(
            {
                "findings": len(counted),
                "ignored": len(findings) - len(counted),
                "max_security_severity": max(severities, default=None),
                "tools": ", ".join(tools) or None,
            }
        )
        bad: list[str] = []
        present = {t.casefold() for t in tools}
        for tool in gate.tools:
            if tool.casefold() not in present:
                bad.append(f"no SARIF run from tool {tool!r} (tools present: {', '.join(tools) or 'none'})")
        # Scanner health: what the tools said about their own runs.
        health = [
            f"incomplete scan from {run.tool}: {run.reason}"
            for run in (r for s in summaries for r in s.incomplete)
            if selected(run.tool) and run.execution_failed
        ]
        errors = [e for s in summaries for e in s.tool_errors if selected(e.tool)]
        # Past the listed ones only a count is kept, so their tool is unknown: counted anyway.
        unlisted = sum(s.tool_error_count - len(s.tool_errors) for s in summaries)
        for e in errors[:5]:
            # Bandit files a skipped (unparsable) file under configuration notifications.
            where = " in a tool configuration notification" if e.source == "configuration" else ""
            by = f" ({e.descriptor})" if e.descriptor else ""
            at = f" ({e.location})" if e.location and e.location not in e.message else ""
            health.append(f"{e.tool} reported an error{where}{by}: {e.message}{at}")
        if len(errors) + unlisted > 5:
            health.append(f"and {len(errors) + unlisted - 5} more error-level tool notifications")
        measured["tool_errors"] = len(errors) + unlisted
        for run in (r for s in summaries for r in s.incomplete):
            if selected(run.tool) and not run.execution_failed:
                bad.append(f"incomplete scan from {run.tool}: {run.reason}")
        for level, limit in gate.max_findings.items():
            hits = by_level[level]
            if len(hits) > limit:
                rules = list(dict.fromkeys(f.rule_id for f in hits))
                bad.append(f"{len(hits)} {level} findings exceed the maximum of {limit}: {_names(rules)}")
        if gate.max_security_severity is not None:
            over = [
                f
                for f in counted
                if f.security_severity is not None and f.security_severity > gate.max_security_severity
            ]
            if over:
                worst = sorted(over, key=lambda f: -(f.security_severity or 0.0))
                shown = list(dict.fromkeys(f"{f.rule_id} ({f.security_severity:g})" for f in worst))
                bad.append(
                    f"{len(over)} findings exceed security severity {gate.max_security_severity:g}: "
                    f"{_names(shown)}"
                )
        limits = ", ".join(f"{len(by_level[lv])} {lv} (max {n})" for lv, n in gate.max_findings.items())
        good = [
            f"{len(counted)} findings from {', '.join(tools) or 'no tool'}: {limits or 'no level limits'}"
        ]
        if health and gate.allow_tool_errors:
            good.extend(f"allowed by allow_tool_errors: {line}" for line in health)
        elif health:
            bad[:0] = health  # first: the findings counts below them may be incomplete
        if gate.max_security_severity is not None:
            top = max(severities, default=None)
            good.append(
                f"highest security severity {top:g} (max {gate.max_security_severity:g})"
                if top is not None
                else f"no finding carries a security severity (max {gate.max_security_severity:g})"
            )
        return measured, bad, good

    return _evaluate_reports(gate, "sarif", reports, parse_sarif, thresholds, judge)


# --- performance ------------------------------------------------------------------------------


def evaluate_perf(gate: PerfGate, reports: Sequence[bytes]) -> GateResult:
    """Load-test summaries (k6, Locust) against latency SLOs, error rate and request volume.

    Several reports are merged: requests and failures add up, a percentile is the worst of the
    reports. A report that lacks a percentile the gate has an SLO for fails the gate (with a
    reason), as does any failed k6 threshold.

    JMeter results count every sample except sub-results; a 5xx response JMeter marked
    successful is an error all the same, and the reasons say how many there were.
    """
    thresholds: Values = {
        "p95_ms": gate.p95_ms,
        "p99_ms": gate.p99_ms,
        "max_error_rate": gate.max_error_rate,
        "min_requests": gate.min_requests,
    }

    def judge(summaries: list[PerfSummary]) -> tuple[Values, list[str], list[str]]:
        many = len(summaries) > 1

        def label(i: int, s: PerfSummary) -> str:
            return f"report {i} ({s.format})" if many else f"the {s.format} report"

        requests = (
            None if any(s.requests is None for s in summaries) else sum(s.requests or 0 for s in summaries)
        )
        error_rate: float | None = None
        failures: int | None = None
        if all(s.failures is not None and s.requests is not None for s in summaries):
            failures = sum(s.failures or 0 for s in summaries)
            error_rate = failures / requests if requests else None
        elif not many:
            error_rate = summaries[0].error_rate
        p95 = [s.p95_ms for s in summaries]
        p99 = [s.p99_ms for s in summaries]
        measured: Values = {
            "requests": requests,
            "failures": failures,
            "error_rate": error_rate,
            "p95_ms": None if None in p95 else max(x or 0.0 for x in p95),
            "p99_ms": None if None in p99 else max(x or 0.0 for x in p99),
            "failed_thresholds": len([t for s in summaries for t in s.failed_thresholds]),
            "format": ", ".join(dict.fromkeys(s.format for s in summaries)),
        }
        # JMeter: samples the gate judges differently from the tool, said in the reasons.
        server_errors = sum(s.server_errors or 0 for s in summaries)
        if any(s.server_errors is not None for s in summaries):
            measured["server_errors"] = server_errors
            measured["sub_results"] = sum(s.sub_results or 0 for s in summaries)
        marked_ok = (
            f"{server_errors} of them 5xx responses JMeter marked successful, counted as errors"
            if server_errors
            else ""
        )
        bad: list[str] = []
        good: list[str] = []
        for name, slo, values in (("p95", gate.p95_ms, p95), ("p99", gate.p99_ms, p99)):
            if slo is None:
                continue
            for i, (s, value) in enumerate(zip(summaries, values, strict=True), 1):
                if value is None:
                    hint = " (add it to k6's summaryTrendStats)" if s.format.startswith("k6") else ""
                    bad.append(
                        f"{label(i, s)} has no {name}{hint}; the {name} SLO of {slo:g} ms cannot be checked"
                    )
            present = [v for v in values if v is not None]
            if present and max(present) > slo:
                bad.append(f"{name} latency {max(present):.1f} ms exceeds the SLO of {slo:g} ms")
            elif present and None not in values:
                good.append(f"{name} latency {max(present):.1f} ms within the SLO of {slo:g} ms")
        if gate.max_error_rate is not None:
            if error_rate is None:
                lacking = [label(i, s) for i, s in enumerate(summaries, 1) if s.error_rate is None]
                bad.append(
                    f"{', '.join(lacking) or 'a report'} has no error rate (no http_req_failed metric); "
                    f"the maximum error rate of {_pct(gate.max_error_rate)} cannot be checked"
                )
            elif error_rate > gate.max_error_rate:
                parts = [f"{failures}/{requests} requests failed"] if failures is not None else []
                parts += [e for s in summaries for e in s.errors][:5] + ([marked_ok] if marked_ok else [])
                counts = f" ({'; '.join(parts)})" if parts else ""
                bad.append(
                    f"error rate {_pct(error_rate)}{counts} exceeds the maximum {_pct(gate.max_error_rate)}"
                )
            else:
                note = f" ({marked_ok})" if marked_ok else ""
                good.append(
                    f"error rate {_pct(error_rate)}{note} within the maximum {_pct(gate.max_error_rate)}"
                )
        if gate.min_requests > 0:
            if requests is None:
                bad.append(
                    f"the report has no request count; the minimum of {gate.min_requests} cannot be checked"
                )
            elif requests < gate.min_requests:
                bad.append(f"only {requests} requests were made; the minimum is {gate.min_requests}")
            else:
                good.append(f"{requests} requests (minimum {gate.min_requests})")
        for i, s in enumerate(summaries, 1):
            for threshold in s.failed_thresholds:
                where = f" in report {i}" if many else ""
                bad.append(f"k6 threshold failed{where}: {threshold}")
        return measured, bad, good or ["no perf limits configured"]

    return _evaluate_reports(gate, "perf", reports, parse_perf, thresholds, judge)


# --- soak -------------------------------------------------------------------------------------


def soak_met_at(gate: SoakGate, previous: EnvState | None, digest: str | None = None) -> dt.datetime | None:
    """When the digest's stay in the previous environment reaches ``min_duration``.

    None when ``previous`` (what runs there) is not the digest, so no soak is under way. The one
    place the soak arithmetic lives: the soak gate and the plan's "earliest" both use it.
    """
    if previous is None or (digest is not None and str(previous.digest) != str(digest)):
        return None
    return _utc(previous.since) + gate.min_duration


def evaluate_soak(
    gate: SoakGate,
    previous: EnvState | None,
    previous_env: str | None,
    now: dt.datetime,
    *,
    digest: str | None = None,
    until: dt.datetime | None = None,
) -> GateResult:
    """Whether the digest has run in the previous environment for at least ``min_duration``.

    ``until`` is when the digest left the previous environment (a newer build replaced it there):
    its soak stopped then, and it cannot soak there any more.

    ``previous`` is the previous environment's state (None when nothing runs there). When
    ``digest`` is given, a previous environment that runs a different digest does not count.
    The first environment (``previous_env`` None) has nothing to soak in and passes.
    """
    thresholds: Values = {
        "min_duration": format_duration(gate.min_duration),
        "min_duration_s": gate.min_duration.total_seconds(),
    }
    if previous_env is None:
        return _result(
            gate, [], ["first environment: there is no previous environment to soak in"], {}, thresholds
        )
    measured: Values = {"previous_env": previous_env}
    if previous is None or (digest is not None and str(previous.digest) != str(digest)):
        if previous is None:
            missing = f"the digest never ran in {previous_env} (nothing runs there); promote it there first"
        else:
            missing = f"{previous_env} runs {previous.digest.short}, not this digest; promote it there first"
        if not gate.required:
            return _result(gate, [], [f"{missing}; gate not required"], measured, thresholds)
        return _result(
            gate,
            [f"{missing}, then let it soak {format_duration(gate.min_duration)}"],
            [],
            measured,
            thresholds,
        )
    since = _utc(previous.since)
    left = _utc(until) if until is not None and _utc(until) < _utc(now) else None
    elapsed = (left or _utc(now)) - since
    met_at = soak_met_at(gate, previous)
    assert met_at is not None  # previous runs the digest: checked above
    measured.update(
        {
            "since": since.isoformat(),
            "soaked_s": elapsed.total_seconds(),
            "met_at": met_at.isoformat(),
        }
    )
    if left is not None:
        measured["until"] = left.isoformat()
    stay = (
        f"from {since.isoformat()} until {left.isoformat()} (replaced there)"
        if left is not None
        else f"since {since.isoformat()}"
    )
    if elapsed >= gate.min_duration:
        return _result(
            gate,
            [],
            [
                f"soaked {format_duration(elapsed)} in {previous_env} {stay} "
                f"(minimum {format_duration(gate.min_duration)})"
            ],
            measured,
            thresholds,
        )
    if left is not None:
        return _result(
            gate,
            [
                f"soaked only {format_duration(elapsed)} in {previous_env} {stay} "
                f"(minimum {format_duration(gate.min_duration)}): it no longer runs there and cannot "
                f"soak any longer; promote it to {previous_env} again to let it soak"
            ],
            [],
            measured,
            thresholds,
        )
    return _result(
        gate,
        [
            f"soaked only {format_duration(elapsed)} in {previous_env} "
            f"(minimum {format_duration(gate.min_duration)}): "
            f"{format_duration(gate.min_duration - elapsed)} remaining, met at {met_at.isoformat()} (UTC)"
        ],
        [],
        measured,
        thresholds,
    )


# --- windows (the calendar is promotion.windows) ----------------------------------------------


def evaluate_window(gate: WindowGate, now: dt.datetime) -> GateResult:
    """Whether ``now`` is outside every deny window and, when allow windows exist, inside one.

    A failing reason names the blocking window and the next moment promotion becomes possible,
    e.g. ``inside freeze fri 16:00 → mon 08:00 Europe/Berlin; opens 2026-11-30T08:00:00+01:00``.
    """
    now = _utc(now)
    schedule = Schedule(gate, now)
    thresholds: Values = {
        "deny": "; ".join(_label(w) for w in gate.deny) or None,
        "allow": "; ".join(_label(w) for w in gate.allow) or None,
    }
    measured: Values = {"now": now.isoformat(timespec="seconds")}
    if schedule.blocked(now):
        opens = schedule.opening(now)
        when = (
            f"opens {opens.isoformat(timespec='seconds')}"
            if opens
            else f"does not open within {OPENING_HORIZON.days} days: the windows never allow promotion"
        )
        measured["next_opening"] = opens.isoformat(timespec="seconds") if opens else None
        bad = [f"inside freeze {_label(w)}; {when}" for w in schedule.denying(now)]
        if schedule.outside_allow(now):
            allowed = "; ".join(_label(w) for w in gate.allow)
            bad.append(f"outside every allow window ({allowed}); {when}")
        return _result(gate, bad, [], measured, thresholds)
    closes = schedule.closing(now)
    measured["closes"] = closes.isoformat(timespec="seconds") if closes else None
    good = [f"not inside any freeze ({'; '.join(_label(w) for w in gate.deny)})"] if gate.deny else []
    good += [f"inside allow window {_label(w)}" for w, spans in schedule.allow if inside(spans, now)]
    if closes:
        good.append(f"open until {closes.isoformat(timespec='seconds')}")
    return _result(gate, [], good, measured, thresholds)


# --- policy -----------------------------------------------------------------------------------


def _same(expected: object, actual: object) -> bool:
    # bool is an int in Python (True == 1); a blueprint's `debug: false` must not accept `0`.
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(expected, bool) and isinstance(actual, bool) and expected == actual
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return expected == actual
    return type(expected) is type(actual) and expected == actual


def evaluate_policy(gate: PolicyGate, artifact: ArtifactRecord, env: Environment) -> GateResult:
    """Provenance completeness and the environment's blueprint.

    Every field in ``require_provenance`` must be present and non-blank. With a blueprint, each
    blueprint setting must equal the target's unless the key is ``overridable``; a target
    setting that is neither a blueprint setting nor overridable is an undeclared override.
    """
    blueprint = env.blueprint
    thresholds: Values = {
        "require_provenance": ", ".join(gate.require_provenance) or None,
        "blueprint_settings": len(blueprint.settings) if blueprint else None,
        "overridable": ", ".join(blueprint.overridable) or None if blueprint else None,
    }
    measured: Values = {}
    bad: list[str] = []
    good: list[str] = []
    for field in gate.require_provenance:
        value = getattr(artifact.provenance, field)
        measured[field] = value
        if value is None:
            bad.append(f"provenance.{field} is missing")
        elif not str(value).strip():
            bad.append(f"provenance.{field} is empty")
    if gate.require_provenance and not bad:
        good.append(f"provenance has {', '.join(gate.require_provenance)}")
    if blueprint is None:
        good.append(f"environment {env.name} has no blueprint")
        return _result(gate, bad, good, measured, thresholds)
    actual = env.target.settings
    overridable = set(blueprint.overridable)
    mismatched = undeclared = 0
    for key, expected in blueprint.settings.items():
        if key in overridable:
            continue
        if key not in actual:
            mismatched += 1
            bad.append(f"setting {key!r} is missing: the blueprint requires {expected!r}")
        elif not _same(expected, actual[key]):
            mismatched += 1
            bad.append(f"setting {key!r}: expected {expected!r} (blueprint), actual {actual[key]!r} (target)")
    for key, value in actual.items():
        if key not in blueprint.settings and key not in overridable:
            undeclared += 1
            bad.append(
                f"setting {key!r} = {value!r} is an undeclared override: it is neither a blueprint "
                "setting nor listed in blueprint.overridable"
            )
    measured.update({"settings": len(actual), "mismatched": mismatched, "undeclared": undeclared})
    overrides = ", ".join(sorted(k for k in actual if k in overridable)) or "none"
    good.append(
        f"target settings match the blueprint of {env.name} "
        f"({len(blueprint.settings)} settings; overridden: {overrides})"
    )
    return _result(gate, bad, good, measured, thresholds)
