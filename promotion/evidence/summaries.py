"""The frozen summaries the evidence parsers return (what the gates judge)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

SarifLevel = Literal["error", "warning", "note", "none"]
SARIF_LEVELS: tuple[SarifLevel, ...] = ("error", "warning", "note", "none")
CoverageFormat = Literal["cobertura", "jacoco", "coveragepy-json", "lcov"]
PerfFormat = Literal["k6-summary-export", "k6-handle-summary", "locust-csv", "jmeter-csv"]


class _Summary(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QuarantinedTests(_Summary):
    """The tests one quarantine entry matched, by outcome (not counted in the summary's totals)."""

    __test__: ClassVar[bool] = False

    #: The entry's ``test`` (a name or a ``*``/``?`` glob), as written in the pipeline file.
    test: str
    passed: int
    failures: int
    errors: int
    skipped: int
    #: Of ``passed``: the tests that passed only on a rerun.
    flaky: int
    #: The first MAX_LISTED_TESTS names it matched, and of those that failed or errored.
    tests: list[str]
    failed_tests: list[str]


class TestSummary(_Summary):
    """Outcome of the tests of one JUnit XML report (or several merged); reruns counted once."""

    # Keep pytest from collecting this class when a test module imports it.
    __test__: ClassVar[bool] = False

    format: Literal["junit"] = "junit"
    #: Totals of the tests no quarantine entry matched.
    tests: int
    passed: int
    failures: int
    errors: int
    skipped: int
    suites: list[str]
    failed_tests: list[str]
    #: Of ``passed``: tests that failed first and passed on a rerun, and the first of their names.
    flaky: int = 0
    flaky_tests: list[str] = Field(default_factory=list)
    #: One entry per quarantine pattern the parser was given, in the order given.
    quarantined: list[QuarantinedTests] = Field(default_factory=list)


class CoverageSummary(_Summary):
    """Line and branch coverage totals of one report."""

    format: CoverageFormat
    line_rate: float
    lines_covered: int
    lines_valid: int
    branch_rate: float | None
    branches_covered: int | None
    branches_valid: int | None


class Finding(_Summary):
    """One SARIF result with its effective level."""

    tool: str
    rule_id: str
    level: SarifLevel
    security_severity: float | None
    message: str
    location: str | None = None
    suppressed: bool = False
    baseline_state: str | None = None


class IncompleteRun(_Summary):
    """A SARIF run that did not complete, so its results cannot be trusted to be all of them."""

    tool: str
    reason: str
    #: True when the tool itself said so (``executionSuccessful: false``): ``allow_tool_errors``
    #: waives these; a run without a ``results`` array is never waived.
    execution_failed: bool = False


class ToolError(_Summary):
    """An error-level notification a scanner wrote about its own run (not a finding).

    From ``invocations[].toolExecutionNotifications`` (a target file not found, a parser crash)
    or ``toolConfigurationNotifications`` (a rule that failed to load): the scan did not cover
    what it was asked to, although its results may say "0 findings".
    """

    tool: str
    #: The tool's own message (cut to the finding message length).
    message: str
    #: The notification's ``descriptor.id`` (Semgrep writes ``SemgrepError``), when it has one.
    descriptor: str | None = None
    #: The first location the notification names (Bandit names the file it had to skip).
    location: str | None = None
    source: Literal["execution", "configuration"] = "execution"


class ScanSummary(_Summary):
    """The results of every run of one SARIF log."""

    format: Literal["sarif"] = "sarif"
    tools: list[str]
    findings: list[Finding]
    #: Runs that did not complete: ``executionSuccessful: false`` or no ``results`` array.
    incomplete: list[IncompleteRun]
    #: Error-level tool notifications, the first MAX_LISTED_TOOL_ERRORS of them.
    tool_errors: list[ToolError] = Field(default_factory=list)
    #: How many error-level tool notifications the log holds (listed or not).
    tool_error_count: int = 0


class PerfSummary(_Summary):
    """Request count, error rate, latency percentiles (ms) and failed k6 thresholds of a load test."""

    format: PerfFormat
    requests: int | None
    failures: int | None
    error_rate: float | None
    p95_ms: float | None
    p99_ms: float | None
    median_ms: float | None
    avg_ms: float | None
    max_ms: float | None
    failed_thresholds: list[str]
    #: Which metric the latency figures come from (``http_req_duration``, ``Aggregated``...).
    latency_metric: str | None
    #: JMeter: samples with a 5xx response code that JMeter marked successful, counted in
    #: ``failures`` all the same (None for formats that do not record single samples).
    server_errors: int | None = None
    #: JMeter: sub-result rows (redirects, embedded resources) left out of ``requests``.
    sub_results: int | None = None
    #: JMeter: the most frequent failures, ``"9 with 404 on 'bad'"``.
    errors: list[str] = Field(default_factory=list)
