"""A stage run (the pipeline flow on a real Prefect server) reads evidence attested after publish."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from promotion.store import parse_evidence
from tests.flows.harness import EVIDENCE, Setup
from tests.promotion.test_attest import LATER, junit


def test_a_stage_run_reads_the_attested_report(
    make_setup: Callable[..., Setup], tmp_path: Path, prefect_api: str
) -> None:
    from flows.pipeline import promote_pipeline

    s = make_setup()
    (tmp_path / "ci").mkdir()
    failing = junit(tmp_path / "ci" / "junit.xml", "unit", failures=1)
    d = s.publish(tmp_path, evidence=[f"junit={failing}", f"coverage={EVIDENCE / 'coverage.xml'}"])
    # The re-run's passing report, same file name: it replaces the failing one.
    s.store.attest("api", d, parse_evidence([f"junit={EVIDENCE / 'junit.xml'}"]), provenance=LATER)
    state = promote_pipeline(service="api", digest=str(d), to="dev", config=str(s.config), return_state=True)
    assert state.is_completed(), state.message
    promoted = s.store.ledger.records("api")[-1]
    assert (promoted.event, promoted.environment) == ("promoted", "dev")
    [tests] = [g for g in promoted.gates if g["kind"] == "tests"]
    assert tests["passed"] and [e["filename"] for e in tests["evidence"]] == ["junit.xml"]
    assert (
        tests["evidence"][0]["how"].startswith("attested") and tests["evidence"][0]["attached_by"] == "rescan"
    )
