"""Approval requests survive the process that waits on them (issue 8, items 2, 3, 6 and 8).

Real Prefect server, real SeaweedFS, `promote run` as a subprocess killed with kill -9. After the
kill the paused stage run is marked Crashed through Prefect's API, standing in for the heartbeat
automation (tests/flows/test_crashed_runs.py shows that one does it, in about two minutes).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from promotion.digest import Digest
from promotion.requests import find_request
from tests.flows.harness import Run, Setup, resume, stage_artifact

REPO = Path(__file__).resolve().parents[2]


def promote(api: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "promotion.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PREFECT_API_URL": api},
        timeout=180,
    )


def _until(condition: Callable[[], Any], what: str, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.3)  # polling for a condition, with a deadline
    raise AssertionError(f"{what} did not happen within {timeout:.0f}s")


def _paused(s: Setup, d: Digest, key: str, alive: Callable[[], None]) -> str:
    """The stage run waiting on the request of ``d`` in prod, once paused with form ``key``."""
    from prefect.client.orchestration import get_client

    from flows.approval import form_ready

    def ready() -> str | None:
        alive()
        req = find_request(s.store.ledger, "api", "prod", d)
        if req is None or req.flow_run_id is None:
            return None
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(uuid.UUID(req.flow_run_id))
            if run.state is None or run.state.state_details.pause_key != key:
                return None
            return req.flow_run_id if form_ready(client, run) else None

    return str(_until(ready, f"the prod stage pausing with form {key}"))


def _start_killable_run(s: Setup, d: Digest, log: Path, api: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "promotion.cli", "-c", str(s.config), "run", "api", str(d), "--as", "erin"],
        cwd=REPO,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PREFECT_API_URL": api},
    )


def _kill_and_mark_crashed(proc: subprocess.Popen[bytes], stage_run: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(uuid.UUID(stage_run), Crashed(message="process killed (test)"), force=True)


def _still_running(proc: subprocess.Popen[bytes], log: Path) -> Callable[[], None]:
    def check() -> None:
        if proc.poll() is not None:
            raise AssertionError(f"promote run ended ({proc.returncode}):\n{log.read_text()[-3000:]}")

    return check


def test_a_crashed_request_is_continued_with_the_decisions_kept(
    make_setup: Callable[..., Setup], tmp_path: Path, prefect_api: str
) -> None:
    from flows.pipeline import promote_pipeline

    s = make_setup(min_approvals=2, timeout="10m")
    cfg = str(s.config)
    closed = s.publish(tmp_path)  # rejected at prod: its request is closed, pending must not list it
    done = Run(promote_pipeline, service="api", digest=str(closed), requested_by="erin", config=cfg)
    resume(_paused(s, closed, "approval-1", lambda: None), "reject", "carol", "not this one")
    assert done.join().is_failed()
    assert find_request(s.store.ledger, "api", "prod", closed) is None

    d = s.publish(tmp_path)
    log = tmp_path / "run.log"
    proc = _start_killable_run(s, d, log, prefect_api)
    try:
        stage = _paused(s, d, "approval-1", _still_running(proc, log))
        # Answered by SERVICE ENV: judged against the ledger, recorded, then sent to the run.
        r = promote(prefect_api, "-c", cfg, "approve", "api", "prod", "--as", "alice", "--reason", "one")
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == (
            f"approval by alice sent to {stage}; counted (1 of 2; 1 more needed from any of bob, carol)"
        )
        assert _paused(s, d, "approval-2", _still_running(proc, log)) == stage
        _kill_and_mark_crashed(proc, stage)
    finally:
        if proc.poll() is None:
            proc.kill()

    # What waits, from the ledger: exactly this request, with alice's approval and who may still.
    r = promote(prefect_api, "-c", cfg, "pending", "--json")
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(r.stdout)
    assert (row["service"], row["environment"], row["digest"]) == ("api", "prod", str(d))
    assert row["approvals"] == "1 of 2" and row["may_still_approve"] == ["bob", "carol"]
    assert [(x["approver"], x["counted"]) for x in row["decisions"]] == [("alice", True)]
    assert row["ui_url"].endswith(f"/runs/flow-run/{stage}") and row["version"] == "1.0"
    r = promote(prefect_api, "-c", cfg, "pending", "--service", "api", "--env", "prod")
    assert r.returncode == 0 and "approvals 1 of 2: alice approve (counted)" in r.stdout, r.stdout + r.stderr
    assert f"api prod {d} (version 1.0)" in r.stdout and "may still approve: bob, carol" in r.stdout

    # The run is gone: said in one line, exit 1; the answer is still recorded (refused: alice
    # already counts) and the way on is named.
    r = promote(prefect_api, "-c", cfg, "approve", stage, "--as", "alice")
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "refused: 'alice' already approved" in r.stderr and "(it is Crashed)" in r.stderr
    assert f"continue the request with: promote run api {d} --to prod" in r.stderr

    # A re-run continues the same request and needs only the missing approval.
    rerun = Run(promote_pipeline, service="api", digest=str(d), requested_by="erin", config=cfg)
    again = _paused(s, d, "approval-1", lambda: None)
    assert again != stage
    req = find_request(s.store.ledger, "api", "prod", d)
    assert req is not None and req.flow_run_id == again and req.latest.details["continues"] == req.opened.seq
    resume(again, "approve", "alice")  # through Prefect's API, as the UI form does: counts once
    _paused(s, d, "approval-2", lambda: None)
    r = promote(prefect_api, "-c", cfg, "approve", "api", "prod", "--as", "bob")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("counted (2 of 2): approved, the run goes on to deploy")
    assert rerun.join().is_completed()
    report = stage_artifact("promotion-api-prod")
    assert "api → prod: promoted" in report
    assert report.count("- REFUSED approve by alice: 'alice' already approved") == 2

    records = [x for x in s.store.ledger.records("api") if x.digest == d]
    assert [x.event for x in records if x.event.startswith("approval")] == [
        "approval_requested", "approval", "approval", "approval_requested", "approval", "approval"
    ]  # fmt: skip
    promoted = records[-1]
    assert promoted.event == "promoted" and promoted.reason == "gates passed, approved by alice, bob"
    assert [(a["approver"], a["counted"]) for a in promoted.details["approvals"]] == [
        ("alice", True), ("alice", False), ("alice", False), ("bob", True)
    ]  # fmt: skip
    assert s.store.ledger.verify("api").ok
    r = promote(prefect_api, "-c", cfg, "pending")
    assert r.returncode == 0 and "no approval request is open" in r.stderr

    # History an auditor can read: refused answers are marked, with why.
    r = promote(prefect_api, "-c", cfg, "history", "api", "--env", "prod", "--json")
    refused = [x for x in json.loads(r.stdout) if x["event"] == "approval" and not x["counted"]]
    assert len(refused) == 2 and all("already approved" in x["why"] for x in refused)
    r = promote(prefect_api, "-c", cfg, "history", "api", "--env", "prod")
    assert r.stdout.count("approval REFUSED") == 2, r.stdout


def test_a_decision_given_while_the_run_is_gone_counts_for_the_next_run(
    make_setup: Callable[..., Setup], tmp_path: Path, prefect_api: str
) -> None:
    s = make_setup(min_approvals=1, timeout="10m")
    cfg = str(s.config)
    d = s.publish(tmp_path)
    log = tmp_path / "run.log"
    proc = _start_killable_run(s, d, log, prefect_api)
    try:
        stage = _paused(s, d, "approval-1", _still_running(proc, log))
        _kill_and_mark_crashed(proc, stage)
    finally:
        if proc.poll() is None:
            proc.kill()
    r = promote(prefect_api, "-c", cfg, "approve", "api", "prod", "--as", "carol", "--reason", "ok")
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith(
        f"PromotionError: approval by carol recorded (counted (1 of 1): approved, the run goes on to "
        f"deploy), but flow run {stage} is not waiting for it (it is Crashed)"
    )
    # The next run finds the request decided: it deploys without asking anyone again.
    r = promote(prefect_api, "-c", cfg, "run", "api", str(d), "--to", "prod", "--as", "erin")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"promoted {d.short} to prod" in r.stdout
    prod = s.store.ledger.records("api")[-1]
    assert prod.event == "promoted" and prod.reason == "gates passed, approved by carol"
