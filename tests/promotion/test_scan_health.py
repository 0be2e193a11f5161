"""Scanner health in the scan gate (issue 10 item 5): a tool that says its run went wrong fails it.

Real reports: Bandit is run here on a tree with a file it cannot parse (it writes an error-level
``toolConfigurationNotifications`` entry and still reports its other findings), and the shared
fixtures (CodeQL's ``none``/``note`` diagnostics, Semgrep's empty notification list) must keep
passing. Semgrep's own "target not found" log is not produced by any tool installed here; it is
written below by hand after the shape of Semgrep's snapshot ``test_sarif_output_when_errors``
(SARIF 2.1.0 section 3.20.21: ``executionSuccessful: true`` with an error-level notification).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from promotion import config as cfg
from promotion.evidence import parse_sarif
from promotion.evidence.sarif import MAX_LISTED_TOOL_ERRORS
from promotion.gates import evaluate_scan

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures"


def fixture(relpath: str) -> bytes:
    """Bytes of a shared fixture; skips the test when the fixtures folder is not checked out."""
    if not FIXTURES.is_dir():
        pytest.skip("../shared/fixtures not present")
    return (FIXTURES / relpath).read_bytes()


def scan_gate(**kw: Any) -> cfg.ScanGate:
    # No level limits by default: these tests judge scanner health, not the findings.
    return cfg.ScanGate.model_validate({"kind": "scan", "max_findings": {}, **kw})


def sarif(*runs: Mapping[str, object]) -> bytes:
    return json.dumps({"version": "2.1.0", "runs": list(runs)}).encode()


def run_with(invocation: Mapping[str, object], tool: str = "T") -> dict[str, object]:
    return {"tool": {"driver": {"name": tool}}, "invocations": [invocation], "results": []}


SEMGREP_TARGET_NOT_FOUND = {
    "tool": {"driver": {"name": "Semgrep OSS", "rules": [], "semanticVersion": "1.90.0"}},
    "invocations": [
        {
            "executionSuccessful": True,
            "toolExecutionNotifications": [
                {
                    "descriptor": {"id": "SemgrepError"},
                    "level": "error",
                    "message": {"text": "Invalid scanning root: src/does-not-exist.py"},
                }
            ],
        }
    ],
    "results": [],
}


def bandit_sarif(tree: Path) -> bytes:
    """SARIF written by the real Bandit on ``tree`` (exit 1 means it found something: fine)."""
    out = tree.parent / f"{tree.name}.sarif"
    proc = subprocess.run(
        # Relative, as CI runs it (an absolute target makes Bandit write file:// URIs).
        [sys.executable, "-m", "bandit", "-r", tree.name, "-f", "sarif", "-o", str(out), "-q"],
        cwd=tree.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr
    return out.read_bytes()


def test_bandit_skipping_an_unparsable_file_fails_the_gate_with_its_message(tmp_path: Path) -> None:
    tree = tmp_path / "src"
    tree.mkdir()
    (tree / "ok.py").write_text('import subprocess\nsubprocess.call("ls", shell=True)\n')
    (tree / "broken.py").write_text("def broken(:\n    pass\n")
    log = bandit_sarif(tree)

    errors = parse_sarif(log).tool_errors
    assert [(e.tool, e.source, e.location) for e in errors] == [("Bandit", "configuration", "src/broken.py")]
    result = evaluate_scan(scan_gate(), [log])
    assert not result.passed and not result.errored
    assert result.measured["tool_errors"] == 1
    assert result.reasons == [
        "Bandit reported an error in a tool configuration notification: "
        "syntax error while parsing AST from file (src/broken.py)"
    ]
    # The findings Bandit did report are still counted: the gate is not blind, only not trusting.
    assert result.measured["findings"] == len(parse_sarif(log).findings) > 0

    allowed = evaluate_scan(scan_gate(allow_tool_errors=True), [log])
    assert allowed.passed
    assert any(
        r.startswith("allowed by allow_tool_errors: Bandit reported an error") for r in allowed.reasons
    )


def test_bandit_on_a_healthy_tree_passes(tmp_path: Path) -> None:
    tree = tmp_path / "src"
    tree.mkdir()
    (tree / "ok.py").write_text("print('hello')\n")
    log = bandit_sarif(tree)
    assert parse_sarif(log).tool_errors == []
    result = evaluate_scan(scan_gate(), [log])
    assert result.passed, result.reasons
    assert result.measured["tool_errors"] == 0


def test_semgrep_target_not_found_is_not_zero_findings() -> None:
    log = sarif(SEMGREP_TARGET_NOT_FOUND)
    result = evaluate_scan(cfg.ScanGate.model_validate({"kind": "scan"}), [log])
    assert not result.passed
    assert result.reasons == [
        "Semgrep OSS reported an error (SemgrepError): Invalid scanning root: src/does-not-exist.py"
    ]
    assert result.measured["findings"] == 0
    assert result.thresholds["allow_tool_errors"] == "false"
    allowed = evaluate_scan(scan_gate(allow_tool_errors=True), [log])
    assert allowed.passed
    assert allowed.thresholds["allow_tool_errors"] == "true"
    assert allowed.reasons[-1] == (
        "allowed by allow_tool_errors: Semgrep OSS reported an error (SemgrepError): "
        "Invalid scanning root: src/does-not-exist.py"
    )


@pytest.mark.parametrize(
    "name",
    [
        "sarif/codeql-ruby.sarif",  # toolExecutionNotifications at levels none and note
        "sarif/semgrep-test_sarif_output_with_dataflow_traces.sarif",  # an empty list
        "sarif/bandit-results.sarif",
        "sarif/snyk-runs-1-tools-1-results-0.sarif",
    ],
)
def test_real_logs_without_tool_errors_are_healthy(name: str) -> None:
    log = fixture(name)
    summary = parse_sarif(log)
    assert summary.tool_errors == [] and summary.tool_error_count == 0
    result = evaluate_scan(scan_gate(), [log])
    assert result.passed, result.reasons
    assert result.measured["tool_errors"] == 0


def test_execution_failed_names_the_tools_own_words_and_can_be_allowed() -> None:
    log = sarif(
        run_with(
            {
                "executionSuccessful": False,
                "exitCode": 2,
                "exitCodeDescription": "Fatal: could not   read\nconfig.yml",
            }
        )
    )
    reason = "incomplete scan from T: invocation 0 reports executionSuccessful=false (exit code 2): " + (
        "Fatal: could not read config.yml"
    )
    result = evaluate_scan(scan_gate(), [log])
    assert not result.passed and result.reasons == [reason]
    allowed = evaluate_scan(scan_gate(allow_tool_errors=True), [log])
    assert allowed.passed and allowed.reasons[-1] == f"allowed by allow_tool_errors: {reason}"


def test_a_run_without_results_is_never_allowed() -> None:
    # No results array is not the tool's report on itself: there is nothing to judge at all.
    log = sarif({"tool": {"driver": {"name": "T"}}, "invocations": [{"executionSuccessful": True}]})
    result = evaluate_scan(scan_gate(allow_tool_errors=True), [log])
    assert not result.passed
    assert result.reasons == ["incomplete scan from T: run 0 has no results array (the tool did not finish)"]


@pytest.mark.parametrize(
    "notification",
    [
        {"message": {"text": "no level: the SARIF default is warning"}},
        {"level": "warning", "message": {"text": "slow file"}},
        {"level": "note", "message": {"text": "extracted 3 files"}},
        {"level": "none", "message": {"text": ""}},
    ],
)
def test_lower_level_notifications_do_not_fail(notification: dict[str, object]) -> None:
    for key in ("toolExecutionNotifications", "toolConfigurationNotifications"):
        log = sarif(run_with({"executionSuccessful": True, key: [notification]}))
        result = evaluate_scan(scan_gate(), [log])
        assert result.passed, result.reasons


def test_messages_from_exception_or_arguments_and_none() -> None:
    notes = [
        {"level": "error", "message": {"text": ""}, "exception": {"message": "java.io.IOException: disk"}},
        {"level": "error", "message": {"text": "cannot read {0}", "arguments": ["a.c"]}},
        {"level": "error"},
    ]
    summary = parse_sarif(sarif(run_with({"executionSuccessful": True, "toolExecutionNotifications": notes})))
    assert [e.message for e in summary.tool_errors] == [
        "java.io.IOException: disk",
        "cannot read a.c",
        "(the notification has no message)",
    ]


def test_tools_filter_applies_to_tool_errors() -> None:
    log = sarif(
        SEMGREP_TARGET_NOT_FOUND,
        {"tool": {"driver": {"name": "Trivy"}}, "results": []},
    )
    assert evaluate_scan(scan_gate(tools=["trivy"]), [log]).passed
    assert not evaluate_scan(scan_gate(tools=["semgrep oss"]), [log]).passed


def test_a_flood_of_tool_errors_is_capped_but_counted() -> None:
    n = 20_000
    notes = [{"level": "error", "message": {"text": f"cannot parse file{i}.py"}} for i in range(n)]
    log = sarif(run_with({"executionSuccessful": True, "toolExecutionNotifications": notes}))
    summary = parse_sarif(log)
    assert len(summary.tool_errors) == MAX_LISTED_TOOL_ERRORS
    assert summary.tool_error_count == n
    result = evaluate_scan(scan_gate(), [log])
    assert result.measured["tool_errors"] == n
    assert len(result.reasons) == 6
    assert result.reasons[-1] == f"and {n - 5} more error-level tool notifications"


@pytest.mark.parametrize(
    ("invocation", "words"),
    [
        (
            {"toolExecutionNotifications": [{"level": "fatal"}]},
            "toolExecutionNotifications[0].level is 'fatal'",
        ),
        ({"toolExecutionNotifications": {"level": "error"}}, "toolExecutionNotifications is a dict"),
        ({"toolConfigurationNotifications": ["boom"]}, "toolConfigurationNotifications[0] is a str"),
    ],
)
def test_malformed_notifications_fail_cleanly(invocation: dict[str, object], words: str) -> None:
    result = evaluate_scan(scan_gate(), [sarif(run_with(invocation))])
    assert not result.passed and result.errored
    assert len(result.reasons) == 1 and result.reasons[0].startswith("SARIF: ")
    assert words in result.reasons[0]


def test_allow_tool_errors_is_a_strict_boolean_option() -> None:
    with pytest.raises(ValueError, match="allow_tool_errors"):
        cfg.ScanGate.model_validate({"kind": "scan", "allow_tool_errors": "sometimes"})
    with pytest.raises(ValueError, match="allow_tool_error"):
        cfg.ScanGate.model_validate({"kind": "scan", "allow_tool_error": True})
