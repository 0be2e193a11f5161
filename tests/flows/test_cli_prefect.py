"""The CLI commands that talk to Prefect, run as a user would, against the session's server."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from promotion.local_s3 import LocalS3
from tests.flows.harness import Run, Setup, wait_for_paused


def promote(api: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "promotion.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PREFECT_API_URL": api},
        timeout=180,
    )


def parent_of(stage_run_id: str) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        stage = client.read_flow_run(uuid.UUID(stage_run_id))
        assert stage.parent_task_run_id is not None
        return str(client.read_task_run(stage.parent_task_run_id).flow_run_id)


def test_run_plan_approve_reject_from_the_cli(
    make_setup: Callable[..., Setup], tmp_path: Path, prefect_api: str
) -> None:
    from flows.pipeline import promote_pipeline

    s = make_setup()
    d = s.publish(tmp_path)
    cfg = str(s.config)

    plan = promote(prefect_api, "-c", cfg, "plan", "api", str(d), "--json")
    assert plan.returncode == 0, plan.stderr
    stages = json.loads(plan.stdout)["stages"]
    assert [(x["environment"], x["action"]) for x in stages] == [
        ("dev", "promote"), ("staging", "promote"), ("prod", "await_approval")
    ]  # fmt: skip
    assert "1 of alice, bob, carol" in stages[2]["approval"]

    r = promote(prefect_api, "-c", cfg, "run", "api", str(d), "--to", "staging", "--as", "erin")
    assert r.returncode == 0, r.stderr
    assert f"promoted {d.short} to staging" in r.stdout

    # prod waits for a person; approve through the CLI with the *pipeline* run's id
    run = Run(promote_pipeline, service="api", digest=str(d), requested_by="erin", config=cfg)
    stage = wait_for_paused(run)
    ok = promote(prefect_api, "approve", parent_of(stage), "--as", "carol", "--reason", "ship it")
    assert ok.returncode == 0, ok.stderr
    assert f"approval by carol sent to {stage}" in ok.stdout
    assert run.join().is_completed()
    assert s.store.ledger.state("api").environments["prod"].digest == d

    done = promote(prefect_api, "approve", stage, "--as", "carol")
    assert done.returncode == 1 and "is not waiting for approval (it is Completed)" in done.stderr


def test_reject_from_the_cli_needs_a_reason(
    make_setup: Callable[..., Setup], tmp_path: Path, prefect_api: str
) -> None:
    from flows.pipeline import promote_pipeline

    s = make_setup()
    d = s.publish(tmp_path)
    run = Run(promote_pipeline, service="api", digest=str(d), config=str(s.config))
    stage = wait_for_paused(run)
    missing = promote(prefect_api, "reject", stage, "--as", "bob")
    assert missing.returncode == 2 and "--reason" in missing.stderr
    blank = promote(prefect_api, "reject", stage, "--as", "bob", "--reason", " ")
    assert blank.returncode == 2 and blank.stderr.startswith("UsageError: --reason must say why")
    r = promote(prefect_api, "reject", stage, "--as", "bob", "--reason", "not this week")
    assert r.returncode == 0, r.stderr
    final = run.join()
    assert final.is_failed() and final.message.endswith("rejected by bob: not this week")


def test_rollback_from_the_cli(make_setup: Callable[..., Setup], tmp_path: Path, prefect_api: str) -> None:
    s = make_setup()
    d1, d2 = s.publish(tmp_path), s.publish(tmp_path)
    cfg = str(s.config)
    for d in (d1, d2):
        assert promote(prefect_api, "-c", cfg, "run", "api", str(d), "--to", "dev").returncode == 0
    never = s.publish(tmp_path)
    r = promote(prefect_api, "-c", cfg, "rollback", "api", "--env", "dev", "--to", str(never))
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1].startswith(f"RollbackRefused: {never} was never deployed to dev")
    assert "Traceback" not in r.stderr
    r = promote(prefect_api, "-c", cfg, "rollback", "api", "--env", "dev", "--reason", "smoke failed")
    assert r.returncode == 0, r.stderr
    assert f"rolled back from {d2} to {d1}" in r.stdout


@pytest.mark.parametrize(
    ("args", "code", "start"),
    [
        (["approve", "not-a-run", "--as", "x"], 2, "UsageError: 'not-a-run' is not a flow run id"),
        (["approve", str(uuid.UUID(int=7)), "--as", "x"], 2, "UsageError: no flow run"),
    ],
)
def test_cli_decision_errors(prefect_api: str, args: list[str], code: int, start: str) -> None:
    r = promote(prefect_api, *args)
    assert r.returncode == code and r.stderr.startswith(start), r.stderr


def test_unreachable_prefect_is_one_line_exit_1() -> None:
    r = promote("http://127.0.0.1:9/api", "approve", str(uuid.uuid4()), "--as", "x")
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith("PrefectUnreachable: cannot reach the Prefect API at http://127.0.0.1:9/api")
    assert "Traceback" not in r.stderr


def test_plan_says_when_soak_and_windows_allow(tmp_path: Path, s3_server: LocalS3, prefix: str) -> None:
    from promotion.config import parse_pipeline
    from promotion.models import Provenance
    from promotion.plan import plan
    from promotion.store import ArtifactStore

    local = s3_server  # a LocalS3
    pipeline = parse_pipeline(
        f"""
store: {{endpoint_url: "{local.endpoint_url}", bucket: {local.bucket}, prefix: "{prefix}"}}
services: [{{name: api}}]
environments:
  - name: dev
  - name: staging
    gates: [{{kind: soak, min_duration: 2h}}]
  - name: prod
    gates:
      - {{kind: soak, min_duration: 1d}}
      - kind: window
        deny: [{{start_day: fri, start: "16:00", end_day: mon, end: "08:00", timezone: Europe/Berlin}}]
"""
    )
    store = ArtifactStore(pipeline)
    f = tmp_path / "a"
    f.write_bytes(b"x")
    d = store.publish(f, service="api", version="1", provenance=Provenance(published_by="ci")).digest
    before = {k: store.s3.get(k) for k in store.s3.list_keys(store.s3.prefix)}
    wed = dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.UTC)  # a Wednesday
    p = plan(store, "api", d, now=wed)
    assert [(s.environment, s.action) for s in p.stages] == [
        ("dev", "promote"),
        ("staging", "wait"),
        ("prod", "wait"),
    ]
    assert p.stages[1].earliest == wed + dt.timedelta(hours=2)
    # staging at 12:00 Wed + 1 day soak = Thu 12:00 UTC, outside the Fri-Mon freeze
    assert p.stages[2].earliest == wed + dt.timedelta(hours=26)
    fri = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
    p = plan(store, "api", d, now=fri)
    # soak met Sat 14:00 UTC, inside the freeze: opens Mon 08:00 Berlin = 07:00 UTC
    assert p.stages[2].earliest == dt.datetime(2026, 11, 30, 7, 0, tzinfo=dt.UTC)
    assert {k: store.s3.get(k) for k in store.s3.list_keys(store.s3.prefix)} == before
