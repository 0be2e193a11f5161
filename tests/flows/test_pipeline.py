"""The pipeline flow against a real Prefect server and a real S3 server."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from promotion.digest import Digest
from promotion.store import ArtifactStore
from tests.flows.harness import (
    EVIDENCE,
    Run,
    Setup,
    promotion_events,
    resume,
    stage_artifact,
    wait_for_paused,
)


def events_of(store: ArtifactStore) -> list[tuple[str, str | None]]:
    return [(r.event, r.environment) for r in store.ledger.records("api")]


def test_three_stages_end_to_end_with_approval(make_setup: Callable[..., Setup], tmp_path: Path) -> None:
    from flows.pipeline import promote_pipeline

    s = make_setup()
    d = s.publish(tmp_path)
    run = Run(promote_pipeline, service="api", digest=str(d), requested_by="erin", config=str(s.config))
    paused = wait_for_paused(run)
    resume(paused, "approve", "alice", "looks good")
    state = run.join()
    assert state.is_completed(), state.message
    assert state.message == f"promoted {d.short} to prod"
    st = s.store.ledger.state("api")
    assert {e: st.environments[e].digest for e in ("dev", "staging", "prod")} == {
        "dev": d, "staging": d, "prod": d
    }  # fmt: skip
    assert events_of(s.store) == [
        ("published", None),
        ("promoted", "dev"),
        ("promoted", "staging"),
        ("approval_requested", "prod"),
        ("approval", "prod"),
        ("promoted", "prod"),
    ]
    prod = s.store.ledger.records("api")[-1]
    assert prod.details["approvals"] == [
        {"approver": "alice", "decision": "approve", "reason": "looks good", "counted": True}
    ]
    assert {g["kind"] for g in s.store.ledger.records("api")[1].gates} == {"tests", "coverage"}
    assert s.store.ledger.verify("api").ok


def test_rejection_stops_the_pipeline_and_is_recorded(
    make_setup: Callable[..., Setup], tmp_path: Path, prefect_api: str
) -> None:
    from flows.pipeline import promote_pipeline

    s = make_setup()
    d = s.publish(tmp_path)
    run = Run(promote_pipeline, service="api", digest=str(d), config=str(s.config))
    resume(wait_for_paused(run), "reject", "bob", "release freeze for the audit")
    state = run.join()
    assert state.is_failed()
    assert state.message == (
        "stopped at prod: ApprovalRejected: promotion to prod rejected by bob: release freeze for the audit"
    )
    assert "prod" not in s.store.ledger.state("api").environments
    assert events_of(s.store)[-2:] == [("approval", "prod"), ("rejected", "prod")]
    events = promotion_events(
        prefect_api, d, {"promotion.promoted", "promotion.approval.requested", "promotion.rejected"}
    )
    requested = next(e for e in events if e["event"] == "promotion.approval.requested")
    assert requested["resource"]["promotion.environment"] == "prod"
    assert requested["resource"]["promotion.digest"] == d
    assert requested["payload"]["approvers"] == ["alice", "bob", "carol"]
    report = stage_artifact("promotion-api-prod")
    assert "api → prod: rejected" in report and "rejected by bob: release freeze for the audit" in report
    assert "| bob | reject | yes |" in report


def test_approval_timeout_rejects_and_leaves_the_environment(
    make_setup: Callable[..., Setup], tmp_path: Path
) -> None:
    from flows.pipeline import promote_pipeline

    s = make_setup(timeout="3s")
    d = s.publish(tmp_path)
    state = promote_pipeline(service="api", digest=str(d), to="prod", config=str(s.config), return_state=True)
    assert state.is_failed()
    assert state.message == "stopped at prod: approval timed out after 3s: no valid decision"
    assert "prod" not in s.store.ledger.state("api").environments
    last = s.store.ledger.records("api")[-1]
    assert (last.event, last.environment) == ("rejected", "prod")
    assert "timed out" in last.reason


def test_self_approval_and_strangers_are_refused_until_a_valid_approver(
    make_setup: Callable[..., Setup], tmp_path: Path
) -> None:
    from flows.pipeline import promote_pipeline

    s = make_setup()
    d = s.publish(tmp_path, author="alice")  # alice wrote the commit
    run = Run(promote_pipeline, service="api", digest=str(d), requested_by="bob", config=str(s.config))
    seen: set[str] = set()
    # The stage subflow pauses again after each refused answer, under the same flow run.
    first = wait_for_paused(run, seen)
    resume(first, "approve", "alice", "mine, trust me")  # commit author
    second = _wait_paused_again(run, first)
    resume(second, "approve", "bob", "I asked for it")  # requester
    third = _wait_paused_again(run, first)
    resume(third, "approve", "mallory", "let me")  # not an approver
    fourth = _wait_paused_again(run, first)
    resume(fourth, "approve", "carol", "reviewed")
    state = run.join()
    assert state.is_completed(), state.message
    approvals = [r for r in s.store.ledger.records("api") if r.event == "approval"]
    assert [(r.actor, r.details["counted"]) for r in approvals] == [
        ("alice", False), ("bob", False), ("mallory", False), ("carol", True)
    ]  # fmt: skip
    assert "authored the commit" in approvals[0].details["why"]
    assert "requested this promotion" in approvals[1].details["why"]
    assert "not an allowed approver" in approvals[2].details["why"]


def _wait_paused_again(run: Run, run_id: str, timeout: float = 60) -> str:
    """Wait until the same flow run is paused again (a new pause key), after a resume."""
    from uuid import UUID

    from prefect.client.orchestration import get_client

    from flows.approval import form_ready

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        # first it leaves PAUSED (resumed), then pauses again for the next answer
        left = False
        while time.monotonic() < deadline:
            current = client.read_flow_run(UUID(run_id))
            st = current.state
            assert st is not None
            if not st.is_paused():
                left = True
            elif left and form_ready(client, current):
                return run_id
            assert run.thread.is_alive(), f"run ended: {run.state} {run.error}"
            time.sleep(0.1)  # polling the API for a condition, with a deadline
    raise AssertionError("the run did not pause again")


def test_two_of_three_approvals(make_setup: Callable[..., Setup], tmp_path: Path) -> None:
    from flows.pipeline import promote_pipeline

    s = make_setup(min_approvals=2)
    d = s.publish(tmp_path)
    run = Run(promote_pipeline, service="api", digest=str(d), config=str(s.config))
    first = wait_for_paused(run)
    resume(first, "approve", "alice", "ok")
    again = _wait_paused_again(run, first)
    resume(again, "approve", "alice", "really ok")  # the same person twice does not count twice
    again = _wait_paused_again(run, first)
    resume(again, "approve", "bob", "ok too")
    state = run.join()
    assert state.is_completed(), state.message
    approvals = [
        (r.actor, r.details["counted"]) for r in s.store.ledger.records("api") if r.event == "approval"
    ]
    assert approvals == [("alice", True), ("alice", False), ("bob", True)]
    assert s.store.ledger.state("api").environments["prod"].digest == d


def test_gate_failure_names_the_stage_and_the_reason(
    make_setup: Callable[..., Setup], tmp_path: Path, prefect_api: str
) -> None:
    from flows.pipeline import promote_pipeline

    s = make_setup()
    d = s.publish(tmp_path, evidence=[f"coverage={EVIDENCE / 'coverage.xml'}"])  # no JUnit report
    state = promote_pipeline(service="api", digest=str(d), config=str(s.config), return_state=True)
    assert state.is_failed()
    assert state.message == "stopped at dev: GateFailed: gate tests failed: tests: missing evidence: junit"
    assert events_of(s.store) == [("published", None), ("rejected", "dev")]
    assert s.store.ledger.records("api")[-1].gates[0]["reasons"] == ["missing evidence: junit"]
    (failed,) = [
        e
        for e in promotion_events(prefect_api, d, {"promotion.gate.failed"})
        if e["event"] == "promotion.gate.failed"
    ]
    assert failed["payload"]["gate"] == "tests" and failed["payload"]["reasons"] == [
        "missing evidence: junit"
    ]
    report = stage_artifact("promotion-api-dev")
    assert "| tests | tests | FAIL |" in report and "| coverage | coverage | pass |" in report


def test_unpublished_digest_is_refused_before_anything_runs(make_setup: Callable[..., Setup]) -> None:
    from flows.pipeline import promote_pipeline

    s = make_setup()
    d = Digest.of_bytes(b"never published")
    state = promote_pipeline(service="api", digest=str(d), config=str(s.config), return_state=True)
    assert state.is_failed()
    assert (state.message or "").startswith(f"ArtifactNotFound: {d} was never published for service 'api'")
    assert s.store.ledger.records("api") == []


def test_to_stops_early_and_a_rerun_continues_where_it_stopped(
    make_setup: Callable[..., Setup], tmp_path: Path
) -> None:
    from flows.pipeline import promote_pipeline

    s = make_setup()
    d = s.publish(tmp_path)
    state = promote_pipeline(service="api", digest=str(d), to="dev", config=str(s.config), return_state=True)
    assert state.is_completed() and state.message == f"promoted {d.short} to dev"
    again = promote_pipeline(service="api", digest=str(d), to="dev", config=str(s.config), return_state=True)
    assert again.message == f"{d.short} is already in dev: nothing to promote"
    state = promote_pipeline(
        service="api", digest=str(d), to="staging", config=str(s.config), return_state=True
    )
    assert state.is_completed()
    # dev was not promoted twice: the run started after dev
    assert events_of(s.store) == [("published", None), ("promoted", "dev"), ("promoted", "staging")]
