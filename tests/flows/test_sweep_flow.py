"""The nightly sweep flow on the session's Prefect server and SeaweedFS.

The pipeline deployment is registered without a worker, so the runs the sweep starts stay
Scheduled: their parameters show what the sweep decided to promote, and nothing else runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from promotion.digest import Digest
from promotion.local_s3 import LocalS3
from promotion.sweep import ACTOR, SweepReport
from tests.flows.harness import promotion_events
from tests.promotion.test_sweep import DAY, World, make_world, seed_eligibility

DEPLOYMENT = "promote-pipeline/pipeline"


@pytest.fixture(scope="module")
def pipeline_deployment(prefect_api: str) -> str:
    """The pipeline's deployment, registered without a worker (runs stay Scheduled)."""
    from prefect.deployments.runner import RunnerDeployment

    from flows.pipeline import promote_pipeline

    # async_dispatch types these as "value or coroutine"; called from sync code they are values.
    deployment = cast(RunnerDeployment, promote_pipeline.to_deployment(name="pipeline"))
    return str(deployment.apply())


@pytest.fixture
def world(s3_server: LocalS3, prefix: str, tmp_path: Path, pipeline_deployment: str) -> World:
    return make_world(s3_server, prefix, tmp_path)


def sweep_runs(digests: set[Digest]) -> list[Any]:
    """Flow runs of the pipeline deployment, started by the sweep, for these digests."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId, FlowRunFilterTags

    wanted = {str(d) for d in digests}
    found: list[Any] = []
    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(DEPLOYMENT)
        flt = FlowRunFilter(
            deployment_id=FlowRunFilterDeploymentId(any_=[dep.id]),
            tags=FlowRunFilterTags(all_=["nightly-sweep"]),
        )
        offset = 0
        while page := client.read_flow_runs(flow_run_filter=flt, limit=200, offset=offset):
            found += [r for r in page if r.parameters.get("digest") in wanted]
            offset += len(page)
    return found


def run_sweep(w: World, **kwargs: Any) -> tuple[Any, SweepReport]:
    from flows.sweep import nightly_sweep

    state = nightly_sweep(config=str(w.config), return_state=True, **kwargs)
    assert state.is_completed(), state.message
    rep = state.result()
    assert isinstance(rep, SweepReport)
    return state, rep


def test_sweep_starts_runs_for_exactly_the_eligible_digests(world: World) -> None:
    d = seed_eligibility(world)
    state, rep = run_sweep(world)

    runs = sweep_runs(set(d.values()))
    assert {(r.parameters["service"], r.parameters["to"], r.parameters["digest"]) for r in runs} == {
        ("fresh", "dev", str(d["fresh"])),
        ("soaked", "staging", str(d["soaked"])),
        ("ready", "prod", str(d["ready"])),  # an approval stage: the run will pause for people
    }
    for r in runs:
        assert r.parameters["requested_by"] == ACTOR
        assert r.state is not None and r.state.is_scheduled()  # no worker: it waits, the sweep did not
        assert r.idempotency_key == (
            f"sweep:{DEPLOYMENT}:{rep.date}:{r.parameters['service']}:{r.parameters['to']}:{r.parameters['digest']}"
        )
    assert {r.outcome for r in rep.runs} == {"started"}
    assert state.message.startswith("7 service(s): 3 promotion(s) proposed, 3 run(s) started or open")

    # the table artifact says why for every decision
    rows = rep.rows()
    young = [x for x in rows if x["service"] == "young" and x["environment"] == "staging"]
    assert young[0]["action"] == "skip" and young[0]["reason"].startswith("not yet: soak")
    assert any(x["service"] == "ready" and x["reason"].endswith("| run started " + next(
        r.flow_run_id or "" for r in rep.runs if r.service == "ready")) for x in rows)  # fmt: skip
    from tests.flows.harness import stage_artifact

    assert str(d["ready"]) in stage_artifact("nightly-sweep")

    # the same night again: nothing is started twice
    _, again = run_sweep(world)
    assert len(sweep_runs(set(d.values()))) == 3
    assert {r.outcome for r in again.runs} == {"already open"}
    assert {r.flow_run_id for r in again.runs} == {str(r.id) for r in runs}


def test_drift_is_corrected_or_reported_and_corruption_flagged(world: World, prefect_api: str) -> None:
    good = world.publish("api")
    world.promote("api", "dev", good, ago=3 * DAY)
    world.promote("api", "staging", good, ago=2 * DAY)
    rotten = world.publish("soaked")
    world.promote("soaked", "dev", rotten, ago=2 * DAY)  # soaked: would be proposed for staging
    world.client.put_object(Bucket=world.target, Key=world.copy_key("dev", "api"), Body=b"by hand")
    world.client.put_object(Bucket=world.target, Key=world.copy_key("staging", "api"), Body=b"by hand")
    world.corrupt_blob(rotten)
    blobs_before = {k for k in world.snapshot() if "/blobs/" in k}

    _, rep = run_sweep(world, apply_retention=True)

    api = next(s for s in rep.services if s.service == "api")
    assert {(f.environment, f.action) for f in api.drift} == {("dev", "corrected"), ("staging", "report")}
    dev_copy = world.client.get_object(Bucket=world.target, Key=world.copy_key("dev", "api"))
    assert Digest.of_bytes(dev_copy["Body"].read()) == good  # restored
    staging_copy = world.client.get_object(Bucket=world.target, Key=world.copy_key("staging", "api"))
    assert staging_copy["Body"].read() == b"by hand"  # on_drift: report leaves it

    flagged = world.store.ledger.state("soaked").flagged
    assert list(flagged) == [str(rotten)] and flagged[str(rotten)].startswith(
        f"corrupted: expected {rotten}, got "
    )
    assert sweep_runs({rotten}) == []  # never proposed
    # retention applied: every blob here is referenced or young, so nothing went
    assert rep.retention.deleted == [] and {k for k in world.snapshot() if "/blobs/" in k} == blobs_before

    events = promotion_events(prefect_api, good, {"promotion.drift.detected": 2})
    drift = {
        e["resource"]["promotion.environment"]: e["payload"]
        for e in events
        if e["event"].endswith("drift.detected")
    }
    assert drift["dev"]["action"] == "corrected" and drift["staging"]["action"] == "report"
    (ev,) = [
        e
        for e in promotion_events(prefect_api, rotten, {"promotion.flagged"})
        if e["event"] == "promotion.flagged"
    ]
    assert ev["payload"]["reason"] == flagged[str(rotten)]


def test_dry_run_changes_nothing(world: World) -> None:
    d = seed_eligibility(world)
    world.client.put_object(Bucket=world.target, Key=world.copy_key("dev", "ready"), Body=b"drifted")
    world.corrupt_blob(d["young"])
    before = world.snapshot()

    state, rep = run_sweep(world, dry_run=True, apply_retention=True)

    assert world.snapshot() == before  # every object under the prefix and in the target: same bytes
    assert sweep_runs(set(d.values())) == []
    assert state.message.startswith(
        "dry run: 7 service(s): 3 promotion(s) proposed, 1 drift finding(s), 1 to flag"
    )
    assert {r.outcome for r in rep.runs} == {"not started (dry run)"}
    found = {s.service: s for s in rep.services}
    assert [(c.outcome, c.flagged) for c in found["young"].checks] == [("corrupted", False)]
    assert [f.action for f in found["ready"].drift] == ["correct"]


def test_a_missing_deployment_fails_the_sweep_after_reporting(
    s3_server: LocalS3, prefix: str, tmp_path: Path, prefect_api: str
) -> None:
    from flows.sweep import nightly_sweep

    w = make_world(s3_server, prefix, tmp_path)
    w.config.write_text(w.config.read_text() + "webhooks: {deployment: promote-pipeline/nowhere}\n")
    d = w.publish("fresh")
    state = nightly_sweep(config=str(w.config), return_state=True)
    assert state.is_failed()
    assert "deployment 'promote-pipeline/nowhere' not found" in (state.message or "")
    assert sweep_runs({d}) == []


def test_schedule_follows_the_config(world: World) -> None:
    from flows.sweep import schedule

    kwargs = schedule(world.pipeline)
    (cron,) = kwargs["schedules"]
    assert (cron.cron, cron.timezone) == ("0 2 * * *", "UTC")
    assert kwargs["concurrency_limit"] == 1


def test_promote_sweep_from_the_cli(world: World, prefect_api: str) -> None:
    import json
    import os
    import subprocess
    import sys

    def promote(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "promotion.cli", "-c", str(world.config), "sweep", *args],
            capture_output=True,
            text=True,
            env={**os.environ, "PREFECT_API_URL": prefect_api},
            timeout=300,
        )

    d = seed_eligibility(world)
    before = world.snapshot()
    both = promote("--dry-run", "--apply")
    assert both.returncode == 2 and both.stderr.startswith("UsageError: --apply deletes blobs")
    dry = promote("--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    proposed = {(r["service"], r["environment"]) for r in report["runs"]}
    assert len(proposed) == 3
    assert world.snapshot() == before and sweep_runs(set(d.values())) == []
    table = promote("--dry-run")
    assert table.returncode == 0 and "Nightly sweep (dry run)" in table.stdout
