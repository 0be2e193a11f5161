"""The sweep's decisions against the session's real SeaweedFS, with ledgers seeded by hand.

Ledgers are built with ``Ledger.append`` (``at=`` in the past for soaked digests) and artifacts
with ``ArtifactStore.publish``; time is never waited for: ``now=`` is passed instead.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from promotion.config import Pipeline, load_pipeline
from promotion.deploy import copy_to_target, read_target_digest
from promotion.digest import Digest
from promotion.local_s3 import LocalS3
from promotion.models import Provenance, utcnow
from promotion.store import ArtifactStore, parse_evidence
from promotion.sweep import (
    ACTOR,
    BlobObject,
    ServiceRefs,
    SweepDecision,
    correct_all,
    index_key,
    load_index,
    plan_retention,
    run_retention,
    runs_to_start,
    sweep_service,
    sweep_services,
)

PROV = Provenance(commit="c0ffee", build_url="https://ci/1", published_by="ci")

PIPELINE = """
store: {{endpoint_url: "{endpoint}", bucket: {bucket}, prefix: "{prefix}"}}
services: [{services}]
sweep: {{retention: 7d, max_parallel: 4}}
environments:
  - name: dev
    auto_promote: true
    on_drift: correct
    target: {{copy_to: {{bucket: "{target}", prefix: "{prefix}dev/"}}}}
  - name: staging
    auto_promote: true
    gates:
      - {{kind: soak, min_duration: 1d}}
      - {{kind: tests, min_pass_rate: 1.0, max_age: 30d}}
    target: {{copy_to: {{bucket: "{target}", prefix: "{prefix}staging/"}}}}
  - name: prod
    auto_promote: true
    approval: {{approvers: [alice, bob]}}
    gates:
      - {{kind: soak, min_duration: 1d}}
"""

SERVICES = ("fresh", "young", "failing", "flagged", "ready", "soaked", "api")


def junit(tmp: Path, *, ok: bool = True) -> Path:
    """A JUnit report with a suite name of its own, so every report is its own evidence blob."""
    tag = uuid.uuid4().hex[:8]
    failure = "" if ok else '<failure message="boom">assert 1 == 2</failure>'
    path = tmp / f"junit-{tag}.xml"
    path.write_text(
        f'<testsuite name="suite-{tag}" tests="2" failures="{0 if ok else 1}" errors="0" skipped="0">'
        f'<testcase classname="t" name="a"/><testcase classname="t" name="b">{failure}</testcase>'
        "</testsuite>"
    )
    return path


class World:
    """A pipeline on the session's SeaweedFS with a fresh prefix and its own target bucket."""

    def __init__(self, config: Path, tmp: Path, s3_server: LocalS3, target: str) -> None:
        self.config = config
        self.tmp = tmp
        self.server = s3_server
        self.client = s3_server.client()
        self.target = target
        self.pipeline: Pipeline = load_pipeline(config, apply_env=False)
        self.store = ArtifactStore(self.pipeline)
        self.now = utcnow()

    def publish(self, service: str, version: str = "1.0", *, ok: bool = True) -> Digest:
        f = self.tmp / f"{service}-{version}-{uuid.uuid4().hex[:6]}.bin"
        f.write_bytes(f"{service} {version} {uuid.uuid4()}".encode() * 50)
        evidence = parse_evidence([f"junit={junit(self.tmp, ok=ok)}"])
        return self.store.publish(
            f, service=service, version=version, provenance=PROV, evidence=evidence
        ).digest

    def promote(self, service: str, env: str, d: Digest, *, ago: dt.timedelta, version: str = "1.0") -> None:
        """Record a promotion (as the pipeline would) and make the environment's copy."""
        self.store.ledger.append(
            service, "promoted", d, actor="ci", environment=env, version=version, at=self.now - ago
        )
        target = self.pipeline.environment(env).target.copy_to
        if target is not None:
            copy_to_target(self.store, target, service, d, version, environment=env)

    def copy_key(self, env: str, service: str) -> str:
        target = self.pipeline.environment(env).target.copy_to
        assert target is not None
        return f"{target.prefix}{service}/current"

    def corrupt_blob(self, d: Digest) -> None:
        """Other bytes under the blob's key, its metadata kept: only a re-hash can tell."""
        key = self.store.blob_key(d)
        meta = self.client.head_object(Bucket=self.server.bucket, Key=key)["Metadata"]
        self.client.put_object(Bucket=self.server.bucket, Key=key, Body=b"bit rot" * 100, Metadata=meta)

    def exists(self, key: str) -> bool:
        return self.store.s3.head(key) is not None

    def snapshot(self) -> dict[str, tuple[bytes, dict[str, str]]]:
        """Every object under the prefix, and in the target bucket: bytes and metadata."""
        out: dict[str, tuple[bytes, dict[str, str]]] = {}
        for bucket, prefix in ((self.server.bucket, self.pipeline.store.prefix), (self.target, "")):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    got = self.client.get_object(Bucket=bucket, Key=obj["Key"])
                    out[f"{bucket}/{obj['Key']}"] = (got["Body"].read(), got["Metadata"])
        return out


def make_world(
    s3_server: LocalS3, prefix: str, tmp_path: Path, services: tuple[str, ...] = SERVICES
) -> World:
    target = f"env-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=target)
    cfg = tmp_path / "promotion.yaml"
    cfg.write_text(
        PIPELINE.format(
            endpoint=s3_server.endpoint_url,
            bucket=s3_server.bucket,
            prefix=prefix,
            target=target,
            services=", ".join(f"{{name: {s}}}" for s in services),
        )
    )
    return World(cfg, tmp_path, s3_server, target)


@pytest.fixture
def world(s3_server: LocalS3, prefix: str, tmp_path: Path) -> Iterator[World]:
    yield make_world(s3_server, prefix, tmp_path)


DAY = dt.timedelta(days=1)


def seed_eligibility(w: World) -> dict[str, Digest]:
    """One service per situation; returns the digest of each."""
    d = {
        s: w.publish(s, ok=(s != "failing"))
        for s in ("fresh", "young", "failing", "flagged", "ready", "soaked")
    }
    w.promote("young", "dev", d["young"], ago=dt.timedelta(hours=1))  # has not soaked
    w.promote("failing", "dev", d["failing"], ago=2 * DAY)  # soaked, but its tests failed
    w.store.ledger.append("flagged", "flagged", d["flagged"], actor="ops", reason="corrupted: planted")
    w.promote("ready", "dev", d["ready"], ago=3 * DAY)
    w.promote("ready", "staging", d["ready"], ago=2 * DAY)  # soaked in staging: prod needs approval
    w.promote("soaked", "dev", d["soaked"], ago=2 * DAY)  # soaked in dev, tests pass
    return d


def by_env(decisions: list[SweepDecision]) -> dict[str, SweepDecision]:
    return {x.environment: x for x in decisions}


# --- decisions ------------------------------------------------------------------------------------


def test_proposes_exactly_the_eligible_digests(world: World) -> None:
    d = seed_eligibility(world)
    reports = {r.service: r for r in sweep_services(world.store, now=world.now)}

    proposed = {
        (s, x.environment, x.digest, x.action)
        for s, r in reports.items()
        for x in r.decisions
        if x.action != "skip"
    }
    assert proposed == {
        ("fresh", "dev", d["fresh"], "promote"),  # latest published, nowhere yet, dev has no gates
        ("soaked", "staging", d["soaked"], "promote"),
        ("ready", "prod", d["ready"], "open_approval"),
    }
    assert not any(r.errors for r in reports.values())

    young, failing = by_env(reports["young"].decisions), by_env(reports["failing"].decisions)
    assert young["dev"].reason.startswith("already there")
    assert young["staging"].action == "skip" and young["staging"].reason.startswith("not yet: soak: ")
    assert failing["staging"].reason.startswith("gate failed: tests: ")
    flagged = by_env(reports["flagged"].decisions)
    assert flagged["dev"].reason == "flagged: corrupted: planted"
    assert by_env(reports["fresh"].decisions)["staging"].reason == "nothing runs in dev"
    ready = by_env(reports["ready"].decisions)["prod"]
    assert ready.reason == "every gate passes; needs 1 approval(s) of alice, bob"
    assert [g.kind for g in ready.gates] == ["soak"] and ready.gates[0].passed

    # what the flow will start: one run per proposal, keyed by deployment, day, service, env, digest
    requests = runs_to_start(reports.values(), deployment="promote-pipeline/pipeline", date="2026-01-02")
    assert {(r.service, r.environment) for r in requests} == {
        ("fresh", "dev"),
        ("soaked", "staging"),
        ("ready", "prod"),
    }
    fresh = next(r for r in requests if r.service == "fresh")
    assert fresh.parameters == {
        "service": "fresh",
        "digest": str(d["fresh"]),
        "to": "dev",
        "requested_by": ACTOR,
    }
    assert fresh.idempotency_key == f"sweep:promote-pipeline/pipeline:2026-01-02:fresh:dev:{d['fresh']}"


def test_refusals_rollbacks_and_newer_builds_are_not_proposed(world: World) -> None:
    v1 = world.publish("api", "1.0")
    v2 = world.publish("api", "2.0")
    world.promote("api", "dev", v2, ago=3 * DAY, version="2.0")
    # a person rejected v2 for staging: the sweep must not ask again every night
    world.store.ledger.append(
        "api", "rejected", v2, actor="alice", environment="staging", reason="rejected by alice: slow"
    )
    staging = by_env(sweep_service(world.store, "api", now=world.now).decisions)["staging"]
    assert staging.action == "skip"
    assert (
        staging.reason.startswith("rejected for staging on ")
        and "alice: rejected by alice: slow" in staging.reason
    )

    # v2 misbehaved in dev: rolled back to v1. The latest publish (v2) is not proposed for dev again.
    world.store.ledger.append(
        "api", "rolled_back", v1, actor="ops", environment="dev", version="1.0", details={"from": str(v2)},
        at=world.now - 2 * DAY, reason="errors after deploy",
    )  # fmt: skip
    dev = by_env(sweep_service(world.store, "api", now=world.now).decisions)["dev"]
    assert (dev.digest, dev.action) == (v2, "skip")
    assert dev.reason.startswith("rolled back out of dev on ") and "ops: errors after deploy" in dev.reason

    # staging got v2 by hand; dev's v1 is older: the sweep never moves an environment back
    world.store.ledger.append("api", "promoted", v2, actor="bob", environment="staging", version="2.0")
    staging = by_env(sweep_service(world.store, "api", now=world.now).decisions)["staging"]
    assert (staging.digest, staging.action) == (v1, "skip")
    assert "published after this one: the sweep never moves an environment back" in staging.reason


# --- re-verify ------------------------------------------------------------------------------------


def test_corrupted_blob_is_flagged_once_and_never_proposed(world: World) -> None:
    d = world.publish("api")
    world.promote("api", "dev", d, ago=2 * DAY)
    world.corrupt_blob(d)

    dry = sweep_service(world.store, "api", now=world.now, dry_run=True)
    (check,) = dry.checks
    assert (check.outcome, check.roles, check.flagged) == (
        "corrupted",
        ["runs in dev", "latest published"],
        False,
    )
    assert world.store.ledger.state("api").flagged == {}  # dry run: found, not written
    assert by_env(dry.decisions)["staging"].reason.startswith("flagged: corrupted: expected ")

    report = sweep_service(world.store, "api", now=world.now)
    (check,) = report.checks
    bad = Digest.of_bytes(b"bit rot" * 100)
    assert check.flag_reason == f"corrupted: expected {d}, got {bad}" and check.flagged
    last = world.store.ledger.records("api")[-1]
    assert (last.event, last.digest, last.actor, last.reason) == ("flagged", d, ACTOR, check.flag_reason)
    assert world.store.ledger.state("api").flagged == {str(d): check.flag_reason}
    staging = by_env(report.decisions)["staging"]
    assert (staging.digest, staging.action) == (d, "skip") and staging.reason.startswith("flagged: corrupted")

    again = sweep_service(world.store, "api", now=world.now)
    assert not again.newly_flagged  # already flagged: no second event
    assert [r.event for r in world.store.ledger.records("api")].count("flagged") == 1
    assert world.store.ledger.verify("api").ok


def test_expired_evidence_is_flagged_where_the_digest_runs(world: World) -> None:
    d = world.publish("api")
    world.promote("api", "dev", d, ago=3 * DAY)
    world.promote("api", "staging", d, ago=2 * DAY)
    later = world.now + dt.timedelta(days=31)  # staging's tests gate: max_age 30d

    report = sweep_service(world.store, "api", now=later)
    (check,) = report.checks
    assert check.outcome == "expired" and check.flagged
    assert check.detail.startswith("evidence expired: junit published 31d ")
    assert check.detail.endswith("max_age 30d on the tests gate of staging")
    assert world.store.ledger.state("api").flagged == {str(d): check.detail}
    assert by_env(report.decisions)["prod"].reason.startswith("flagged: evidence expired")
    # within max_age nothing is flagged
    fresh = sweep_service(world.store, "api", now=world.now + dt.timedelta(days=29))
    assert fresh.checks[0].outcome == "ok"


# --- drift ----------------------------------------------------------------------------------------


def test_drift_is_found_and_corrected_only_where_configured(world: World) -> None:
    d = world.publish("api")
    world.promote("api", "dev", d, ago=3 * DAY)
    world.promote("api", "staging", d, ago=2 * DAY)
    assert sweep_service(world.store, "api", now=world.now).drift == []
    # behind the ledger's back: dev's copy replaced by other bytes; staging's keeps its tag, bytes differ
    world.client.put_object(Bucket=world.target, Key=world.copy_key("dev", "api"), Body=b"hotfix by hand")
    world.client.put_object(
        Bucket=world.target, Key=world.copy_key("staging", "api"), Body=b"edited", Metadata={"sha256": d.hex}
    )

    report = sweep_service(world.store, "api", now=world.now)
    drift = {f.environment: f for f in report.drift}
    assert (drift["dev"].expected, drift["dev"].actual, drift["dev"].action) == (d, None, "correct")
    assert drift["dev"].detail.startswith("the copy is missing (or not written by a promotion)")
    assert (drift["staging"].actual, drift["staging"].action) == (d, "report")  # on_drift: report
    assert drift["staging"].detail.startswith(f"the copy is tagged {d.short} but its bytes differ")

    (fixed,) = correct_all(world.store, [report])
    after = {f.environment: f for f in fixed.drift}
    assert after["dev"].action == "corrected" and after["staging"].action == "report"
    dev_target = world.pipeline.environment("dev").target.copy_to
    assert dev_target is not None
    assert read_target_digest(world.store, dev_target, "api", "1.0") == d
    body = world.client.get_object(Bucket=world.target, Key=world.copy_key("dev", "api"))["Body"].read()
    assert Digest.of_bytes(body) == d
    assert {f.environment for f in sweep_service(world.store, "api", now=world.now).drift} == {"staging"}


def test_drift_of_a_corrupted_digest_is_reported_not_recopied(world: World) -> None:
    d = world.publish("api")
    world.promote("api", "dev", d, ago=DAY)
    world.client.delete_object(Bucket=world.target, Key=world.copy_key("dev", "api"))
    world.corrupt_blob(d)
    (f,) = sweep_service(world.store, "api", now=world.now, dry_run=True).drift
    assert f.action == "report" and "not corrected: the ledger's digest failed its re-check" in f.detail


# --- the history index ----------------------------------------------------------------------------


class Requests:
    """S3 requests by operation, observed with botocore's before-send event."""

    def __init__(self, store: ArtifactStore) -> None:
        self.ops: Counter[str] = Counter()
        store.s3.client.meta.events.register("before-call.s3", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.ops[model.name] += 1

    def take(self) -> Counter[str]:
        out, self.ops = self.ops, Counter()
        return out


def test_the_ledger_is_read_incrementally_not_every_night(world: World) -> None:
    d = world.publish("api")
    for i in range(40):  # a long ledger
        world.store.ledger.append("api", "approval", d, actor=f"p{i}", environment="prod")
    first = sweep_service(world.store, "api", now=world.now)
    assert first.index == "built from the whole ledger (first sweep)"
    index = load_index(world.store, "api")
    assert index is not None and index.seq == 41 and index.approvals == [str(d)]

    short = world.publish("fresh")  # a ledger of one record, same shape otherwise
    sweep_service(world.store, "fresh", now=world.now)

    count = Requests(world.store)
    second = sweep_service(world.store, "api", now=world.now)
    long_ops = count.take()
    sweep_service(world.store, "fresh", now=world.now)
    short_ops = count.take()
    assert second.index == "up to date"
    # the same requests for 41 records as for 1: tip (head hint, last record, probe) + index, then
    # the re-hash of the latest publish, its record, and the drift checks; never a listing
    assert long_ops == short_ops and "ListObjectsV2" not in long_ops, (long_ops, short_ops)
    assert long_ops["GetObject"] == 6, long_ops
    assert short != d

    world.store.ledger.append("api", "promoted", d, actor="ci", environment="dev", version="1.0")
    third = sweep_service(world.store, "api", now=world.now)
    assert third.index == "read 1 new record(s)"
    assert "ListObjectsV2" not in count.take()
    assert load_index(world.store, "api").ran == {str(d): ["dev"]}  # type: ignore[union-attr]

    # a ledger whose records no longer chain onto what the last sweep saw: rebuilt, and said so
    stale = load_index(world.store, "api")
    assert stale is not None
    world.store.s3.put(
        index_key(world.store, "api"), stale.model_copy(update={"seq": 30}).model_dump_json().encode()
    )
    fourth = sweep_service(world.store, "api", now=world.now)
    assert fourth.index.startswith("rebuilt from the whole ledger: record 31 does not continue the chain")


# --- retention ------------------------------------------------------------------------------------


def test_retention_keeps_every_reference_and_deletes_old_orphans_only_with_apply(world: World) -> None:
    v0 = world.publish("api", "0.9")  # published, never deployed, superseded: may go
    v1 = world.publish("api", "1.0")
    v2 = world.publish("api", "2.0")
    v3 = world.publish("api", "3.0")  # latest published
    world.promote("api", "dev", v1, ago=5 * DAY)
    world.promote("api", "dev", v2, ago=4 * DAY, version="2.0")  # v1 stays a rollback target
    orphan, _ = world.store.put_blob_bytes(b"an upload whose publish never finished")
    ev = {v: world.store.record("api", v).evidence[0].digest for v in (v0, v1, v2, v3)}
    reports = sweep_services(world.store, now=world.now)

    # today every blob is younger than the retention
    assert run_retention(world.store, reports, now=world.now, apply=True).candidates == []

    later = world.now + dt.timedelta(days=30)
    listed = run_retention(world.store, reports, now=later, apply=False)
    assert {c.digest for c in listed.candidates} == {str(v0), str(ev[v0]), str(orphan.digest)}
    assert {c.action for c in listed.candidates} == {"would_delete"}
    assert all(world.exists(c.key) for c in listed.candidates)  # listed, not deleted
    assert listed.kept_by_reason == {"referenced": 6}  # v1 v2 v3 and their evidence

    done = run_retention(world.store, reports, now=later, apply=True)
    assert {c.digest for c in done.deleted} == {str(v0), str(ev[v0]), str(orphan.digest)}
    assert not any(world.exists(c.key) for c in done.deleted)
    for v in (v1, v2, v3):
        assert world.exists(world.store.blob_key(v)) and world.exists(world.store.blob_key(ev[v]))


def test_retention_rechecks_the_ledgers_before_deleting(world: World) -> None:
    v0 = world.publish("api", "0.9")
    world.publish("api", "1.0")
    reports = sweep_services(world.store, now=world.now)  # v0 unreferenced at this point
    later = world.now + dt.timedelta(days=30)
    # meanwhile someone promotes v0 by hand: it must survive the deletion that was planned
    world.store.ledger.append("api", "promoted", v0, actor="bob", environment="dev", version="0.9")
    done = run_retention(world.store, reports, now=later, apply=True)
    assert str(v0) not in {c.digest for c in done.candidates}
    assert world.exists(world.store.blob_key(v0))
    assert any("written meanwhile" in n for n in done.notes)


def test_retention_keeps_everything_when_unsure(world: World) -> None:
    world.publish("api", "0.9")
    world.publish("api", "1.0")
    # artifacts of a service nobody declared and without a ledger: cannot tell what they reference
    world.store.s3.put(world.store.s3.key("artifacts", "ghost", "sha256", "x.json"), b"{}")
    later = world.now + dt.timedelta(days=30)
    done = run_retention(world.store, sweep_services(world.store, now=world.now), now=later, apply=True)
    assert done.candidates == [] and done.kept == done.scanned == 4
    assert done.notes == ["nothing deleted: ghost: artifacts of ghost exist but it has no ledger"]


def test_plan_retention_counts_age_from_the_last_publish_and_keeps_its_evidence() -> None:
    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    old = now - dt.timedelta(days=100)
    art, ev, stale = (Digest.of_bytes(x) for x in (b"artifact", b"evidence", b"stale"))
    prefix = "p/blobs/sha256/"
    blobs = [BlobObject(key=prefix + d.hex, size=1, last_modified=old) for d in (art, ev, stale)]
    blobs.append(BlobObject(key=prefix + "not-a-digest", size=1, last_modified=old))
    # the same old bytes re-published yesterday (nothing uploaded): neither it nor its evidence may go
    from promotion.sweep import PublishedRef

    refs = {"api": ServiceRefs(published={str(art): PublishedRef(at=now - DAY, evidence=[ev])})}
    report = plan_retention(blobs, refs, now=now, retention=dt.timedelta(days=7), blob_prefix=prefix)
    assert [c.digest for c in report.candidates] == [str(stale)]
    assert report.kept_by_reason == {
        "younger than the retention": 1,
        "evidence of a recent artifact": 1,
        "not a blob name": 1,
    }
    # no retention configured: nothing is even a candidate
    assert plan_retention(blobs, refs, now=now, retention=None, blob_prefix=prefix).candidates == []
    # a retention under the floor counts as the floor
    tiny = plan_retention(
        blobs, refs, now=old + dt.timedelta(minutes=5), retention=dt.timedelta(0), blob_prefix=prefix
    )
    assert tiny.candidates == [] and tiny.notes == ["retention 0s raised to 1h"]


# --- dry run --------------------------------------------------------------------------------------


def test_dry_run_changes_nothing(world: World) -> None:
    d = seed_eligibility(world)
    world.publish("api", "0.1")
    world.publish("api", "0.2")
    world.client.put_object(Bucket=world.target, Key=world.copy_key("dev", "ready"), Body=b"drifted")
    world.corrupt_blob(d["soaked"])
    before = world.snapshot()

    # The steps as nightly_sweep takes them in a dry run (it skips correct_all then: the flow's
    # own dry-run test checks the drifted copy stays as it is); apply is asked for and ignored.
    later = world.now + dt.timedelta(days=30)
    services = sweep_services(world.store, now=later, dry_run=True)
    retention = run_retention(world.store, services, now=later, apply=True, dry_run=True)
    runs = runs_to_start(services, deployment="promote-pipeline/pipeline", date=f"{later:%Y-%m-%d}")

    assert world.snapshot() == before  # byte for byte, metadata included
    found = {s.service: s for s in services}
    assert [f.environment for f in found["ready"].drift] == ["dev"]
    assert found["ready"].drift[0].action == "correct"  # would be corrected, was not
    assert [c.outcome for c in found["soaked"].checks] == ["corrupted"]
    assert not any(c.flagged for s in services for c in s.checks)
    assert retention.candidates and {c.action for c in retention.candidates} == {"would_delete"}
    assert runs  # what the flow would start
    assert all(load_index(world.store, s) is None for s in SERVICES)  # not even the index


def test_report_rows_name_every_action() -> None:
    from promotion.sweep import RetentionReport, ServiceReport, SweepReport

    now = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    d = Digest.of_bytes(b"x")
    svc = ServiceReport(
        service="api",
        now=now,
        dry_run=False,
        decisions=[
            SweepDecision(environment="dev", digest=d, action="promote", reason="no pre-deploy gates"),
            SweepDecision(environment="staging", digest=d, action="skip", reason="not yet: soak: 2h left"),
        ],
    )
    report = SweepReport(
        now=now,
        date="2026-01-02",
        dry_run=False,
        apply_retention=False,
        services=[svc],
        retention=RetentionReport(configured=False, now=now),
        runs=runs_to_start([svc], deployment="promote-pipeline/pipeline", date="2026-01-02"),
    )
    report.runs[0].outcome, report.runs[0].flow_run_id = "started", "1234"
    rows = report.rows()
    assert [(r["kind"], r["environment"], r["action"]) for r in rows] == [
        ("promotion", "dev", "promote"),
        ("promotion", "staging", "skip"),
        ("retention", "", "keep"),
    ]
    assert rows[0]["reason"] == "no pre-deploy gates | run started 1234"
    assert report.errors == []
