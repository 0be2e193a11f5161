"""``wait_for`` on evidence gates (issue 10 item 4): a missing report means "wait", until a deadline.

Against the session's real SeaweedFS; the stage flow against the real Prefect server too. Time is
passed in as ``now`` (the artifact's own ``created_at`` plus an offset), never waited for, except
the one flow test that needs the wall clock past a 1-second deadline: it polls for that.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from promotion.config import load_pipeline, parse_pipeline
from promotion.digest import Digest
from promotion.errors import ConfigError
from promotion.evaluate import EVIDENCE_NOT_YET, StageGates, evaluate_stage
from promotion.local_s3 import LocalS3
from promotion.models import ArtifactRecord, EnvState, Provenance
from promotion.plan import plan
from promotion.store import ArtifactStore, parse_evidence
from promotion.sweep import sweep_service

PROV = Provenance(commit="c0ffee", build_url="https://ci/1", published_by="ci")

PIPELINE = """
store: {{endpoint_url: "{endpoint}", bucket: {bucket}, prefix: "{prefix}"}}
services: [{{name: api}}]
environments:
  - name: dev
    auto_promote: true
  - name: staging
    auto_promote: true
    gates:
      - {{kind: tests, name: integration, wait_for: {wait_for}}}
      - {{kind: coverage, min_line_rate: 0.5}}
  - name: prod
"""

JUNIT_OK = (
    '<testsuite name="integration" tests="1" failures="0" errors="0" skipped="0">'
    '<testcase classname="t" name="a"/></testsuite>'
)
JUNIT_FAILED = (
    '<testsuite name="integration" tests="1" failures="1" errors="0" skipped="0">'
    '<testcase classname="t" name="a"><failure message="boom">no</failure></testcase></testsuite>'
)
SARIF = '{"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "bandit"}}, "results": []}]}'
#: A real coverage.py report: the stage's other gate, which passes.
COVERAGE = Path(__file__).resolve().parents[2] / "examples" / "evidence" / "coverage.xml"


def write_config(tmp: Path, s3_server: LocalS3, prefix: str, wait_for: str = "4h") -> Path:
    path = tmp / "promotion.yaml"
    path.write_text(
        PIPELINE.format(
            endpoint=s3_server.endpoint_url, bucket=s3_server.bucket, prefix=prefix, wait_for=wait_for
        )
    )
    return path


def publish(store: ArtifactStore, tmp: Path, junit: str | None) -> Digest:
    """An artifact with coverage evidence, and a JUnit report only when ``junit`` is given."""
    tag = uuid.uuid4().hex[:8]
    f = tmp / f"api-{tag}.bin"
    f.write_bytes(uuid.uuid4().bytes * 100)
    evidence = [f"coverage={COVERAGE}"]
    if junit is not None:
        (tmp / f"junit-{tag}.xml").write_text(junit)
        evidence.append(f"junit={tmp / f'junit-{tag}.xml'}")
    return store.publish(
        f, service="api", version="1.0", provenance=PROV, evidence=parse_evidence(evidence)
    ).digest


@pytest.fixture
def config(tmp_path: Path, s3_server: LocalS3, prefix: str) -> Path:
    return write_config(tmp_path, s3_server, prefix)


@pytest.fixture
def store(config: Path) -> ArtifactStore:
    return ArtifactStore(load_pipeline(config, apply_env=False))


def stage(store: ArtifactStore, record: ArtifactRecord, now: dt.datetime) -> StageGates:
    env = store.pipeline.environment("staging")
    in_dev = EnvState(digest=record.digest, version="1.0", since=record.created_at, by="ci", seq=1)
    return evaluate_stage(store, env, record, in_dev, now, previous_env="dev")


def utc_text(t: dt.datetime) -> str:
    return f"{t.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC"


# --- the pipeline file ------------------------------------------------------------------------

BASE = """
store: {bucket: artifacts}
services: [{name: api}]
environments:
  - name: dev
    gates: [GATE]
"""


@pytest.mark.parametrize("kind", ["tests", "coverage", "scan", "perf"])
def test_wait_for_is_accepted_on_every_evidence_gate(kind: str) -> None:
    extra = ", min_line_rate: 0.8" if kind == "coverage" else ""
    cfg = parse_pipeline(BASE.replace("GATE", f"{{kind: {kind}, wait_for: 1d12h{extra}}}"))
    assert cfg.environments[0].gates[0].wait_for == dt.timedelta(days=1, hours=12)


@pytest.mark.parametrize(
    ("gate", "message"),
    [
        (
            "{kind: soak, min_duration: 1h, wait_for: 4h}",
            "environments[0](dev).gates[0]: wait_for applies only to gates that read evidence "
            "(tests, coverage, scan, perf); a soak gate reads none",
        ),
        (
            "{kind: window, wait_for: 4h, allow: [{start_day: mon, start: '08:00', end_day: fri, "
            "end: '18:00'}]}",
            "environments[0](dev).gates[0]: wait_for applies only to gates that read evidence "
            "(tests, coverage, scan, perf); a window gate reads none",
        ),
        (
            "{kind: tests, required: false, wait_for: 4h}",
            "environments[0](dev).gates[0]: wait_for needs required: true "
            "(a gate that is not required passes without evidence)",
        ),
        ("{kind: tests, wait_for: 0}", "environments[0](dev).gates[0]: wait_for must be longer than 0s"),
        ("{kind: tests, wait_for: soon}", "wait_for: 'soon' is not a duration"),
    ],
)
def test_wait_for_where_it_means_nothing_is_refused(gate: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_pipeline(BASE.replace("GATE", gate))
    assert message in str(info.value)


# --- evaluation ------------------------------------------------------------------------------


def test_missing_report_waits_until_the_deadline_then_fails(store: ArtifactStore, tmp_path: Path) -> None:
    record = store.record("api", publish(store, tmp_path, junit=None))
    deadline = record.created_at + dt.timedelta(hours=4)

    before = stage(store, record, record.created_at + dt.timedelta(hours=3, minutes=59))
    assert before.hard == []
    [waiting] = before.waiting
    assert waiting.gate == "integration" and not waiting.passed and not waiting.errored
    assert waiting.reasons == [f"waiting for junit evidence until {utc_text(deadline)}: none attached yet"]
    assert waiting.measured == {"evidence": EVIDENCE_NOT_YET}
    assert waiting.thresholds == {"wait_for": "4h", "deadline": deadline.isoformat()}
    assert before.waiting_for_evidence == [waiting]
    assert before.evidence_deadline == deadline

    at_deadline = stage(store, record, deadline)
    assert at_deadline.hard == [] and at_deadline.evidence_deadline == deadline

    after = stage(store, record, deadline + dt.timedelta(seconds=1))
    assert after.waiting == [] and after.evidence_deadline is None
    [hard] = after.hard
    assert hard.reasons == [
        f"no junit evidence attached within 4h of publish (deadline {utc_text(deadline)})"
    ]
    assert hard.measured == {"evidence": "none attached"}


def test_a_report_that_is_there_is_judged_as_always(store: ArtifactStore, tmp_path: Path) -> None:
    failed = store.record("api", publish(store, tmp_path, junit=JUNIT_FAILED))
    within = stage(store, failed, failed.created_at + dt.timedelta(minutes=5))
    [hard] = within.hard
    assert hard.gate == "integration" and "1 failed tests exceed the maximum of 0: t::a" in hard.reasons
    assert within.waiting == []

    passed = store.record("api", publish(store, tmp_path, junit=JUNIT_OK))
    ok = stage(store, passed, passed.created_at + dt.timedelta(days=3))  # long after wait_for
    assert ok.failing == []


def test_plan_says_until_when_the_stage_waits(store: ArtifactStore, tmp_path: Path) -> None:
    d = publish(store, tmp_path, junit=None)
    record = store.record("api", d)
    store.ledger.append("api", "promoted", d, actor="ci", environment="dev", version="1.0")
    deadline = record.created_at + dt.timedelta(hours=4)

    p = plan(store, "api", d, now=record.created_at + dt.timedelta(hours=1))
    staging, prod = p.stages
    assert (staging.action, staging.waits_until, staging.earliest) == ("wait", deadline, None)
    assert staging.reasons == [
        f"integration: waiting for junit evidence until {utc_text(deadline)}: none attached yet"
    ]
    assert (prod.action, prod.reasons) == ("not_reached", ["an earlier stage (staging) waits for evidence"])
    assert p.summary() == (f"staging: wait for evidence until {deadline:%Y-%m-%d %H:%M}Z; prod: not reached")
    assert p.as_dict()["stages"][0]["waits_until"] == deadline.isoformat()

    late = plan(store, "api", d, now=deadline + dt.timedelta(minutes=1))
    assert late.stages[0].action == "blocked" and late.stages[0].waits_until is None
    assert late.stages[0].reasons == [
        f"integration: no junit evidence attached within 4h of publish (deadline {utc_text(deadline)})"
    ]


def test_the_sweep_says_not_yet_then_gate_failed(store: ArtifactStore, tmp_path: Path) -> None:
    d = publish(store, tmp_path, junit=None)
    record = store.record("api", d)
    store.ledger.append("api", "promoted", d, actor="ci", environment="dev", version="1.0")
    deadline = record.created_at + dt.timedelta(hours=4)

    def staging(now: dt.datetime) -> str:
        decisions = sweep_service(store, "api", now=now, dry_run=True).decisions
        [decision] = [x for x in decisions if x.environment == "staging"]
        assert decision.action == "skip"
        return decision.reason

    assert staging(record.created_at + dt.timedelta(hours=1)) == (
        f"not yet: integration: waiting for junit evidence until {utc_text(deadline)}: none attached yet"
    )
    assert staging(deadline + dt.timedelta(hours=1)) == (
        "gate failed: integration: no junit evidence attached within 4h of publish "
        f"(deadline {utc_text(deadline)})"
    )


# --- the stage flow, on the real Prefect server ------------------------------------------------


def events(store: ArtifactStore) -> list[tuple[str, str | None]]:
    return [(r.event, r.environment) for r in store.ledger.records("api")]


def test_the_stage_waits_without_a_verdict_then_is_rejected_after_the_deadline(
    prefect_api: str, s3_server: LocalS3, prefix: str, tmp_path: Path
) -> None:
    from flows.pipeline import promote_pipeline

    config = write_config(tmp_path, s3_server, prefix, wait_for="4h")
    store = ArtifactStore(load_pipeline(config, apply_env=False))
    d = publish(store, tmp_path, junit=None)
    deadline = store.record("api", d).created_at + dt.timedelta(hours=4)

    state = promote_pipeline(service="api", digest=str(d), config=str(config), return_state=True)
    assert state.is_completed() and state.message is not None, state.message
    assert state.message.startswith(
        f"waiting at staging for evidence until {deadline.isoformat()}: integration: waiting for junit "
        f"evidence until {utc_text(deadline)}: none attached yet"
    )
    result = state.result()
    assert isinstance(result, dict)
    assert [row["outcome"] for row in result["stages"]] == ["promoted", "waiting"]
    # dev promoted; staging neither rejected nor locked: nothing but dev's promotion is recorded
    assert events(store) == [("published", None), ("promoted", "dev")]
    assert "staging" not in store.ledger.state("api").environments
    assert not list(store.s3.list_keys(store.s3.key("locks", "")))

    # The same pipeline file with a 1 s wait: its deadline has passed (polled, not slept blindly).
    config = write_config(tmp_path, s3_server, prefix, wait_for="1s")
    created = store.record("api", d).created_at
    limit = time.monotonic() + 10
    while dt.datetime.now(dt.UTC) <= created + dt.timedelta(seconds=1):
        assert time.monotonic() < limit
        time.sleep(0.05)
    state = promote_pipeline(service="api", digest=str(d), config=str(config), return_state=True)
    assert state.is_failed() and state.message is not None
    short = created + dt.timedelta(seconds=1)
    reason = f"integration: no junit evidence attached within 1s of publish (deadline {utc_text(short)})"
    assert reason in state.message
    assert events(store)[-1] == ("rejected", "staging")
    assert reason in (store.ledger.records("api")[-1].reason or "")


# --- what an attest resumes ---------------------------------------------------------------------

LATER = Provenance(commit="c0ffee", build_url="https://ci/2", published_by="nightly-integration")


def test_an_attest_says_which_waiting_stage_it_resumes_and_how(store: ArtifactStore, tmp_path: Path) -> None:
    from promotion.evidence_resume import resumed_by

    d = publish(store, tmp_path, junit=None)
    store.ledger.append("api", "promoted", d, actor="ci", environment="dev", version="1.0")
    (tmp_path / "integration.xml").write_text(JUNIT_OK)
    attested = store.attest(
        "api", d, parse_evidence([f"junit={tmp_path / 'integration.xml'}"]), provenance=LATER
    )

    [resumed] = resumed_by(store, attested)
    assert (resumed.environment, resumed.evidence, resumed.action) == ("staging", ("junit",), "promote")
    assert resumed.line() == (
        "staging was waiting for junit evidence: its gates pass now; the nightly sweep promotes it at "
        f"its next run, or now: promote run api {d}"
    )
    # the sweep proposes it the same night
    [decision] = [
        x for x in sweep_service(store, "api", dry_run=True).decisions if x.environment == "staging"
    ]
    assert (decision.action, decision.digest) == ("promote", d)

    # a second report of the same kind resumes nothing: the stage no longer waited for it
    (tmp_path / "more.xml").write_text(JUNIT_FAILED)
    again = store.attest("api", d, parse_evidence([f"junit={tmp_path / 'more.xml'}"]), provenance=LATER)
    assert resumed_by(store, again) == []


def test_an_attest_of_a_failing_report_says_the_stage_now_fails(store: ArtifactStore, tmp_path: Path) -> None:
    from promotion.evidence_resume import resumed_by

    d = publish(store, tmp_path, junit=None)
    store.ledger.append("api", "promoted", d, actor="ci", environment="dev", version="1.0")
    (tmp_path / "integration.xml").write_text(JUNIT_FAILED)
    attested = store.attest(
        "api", d, parse_evidence([f"junit={tmp_path / 'integration.xml'}"]), provenance=LATER
    )
    [resumed] = resumed_by(store, attested)
    assert resumed.action == "blocked"
    assert resumed.next_step.startswith("its gates fail now: integration: pass rate 0.00% (0/1)")


def test_a_waiting_stage_is_promoted_once_the_report_is_attested(
    prefect_api: str, s3_server: LocalS3, prefix: str, tmp_path: Path
) -> None:
    from flows.pipeline import promote_pipeline

    config = write_config(tmp_path, s3_server, prefix, wait_for="4h")
    store = ArtifactStore(load_pipeline(config, apply_env=False))
    d = publish(store, tmp_path, junit=None)
    first = promote_pipeline(service="api", digest=str(d), config=str(config), return_state=True)
    assert first.is_completed() and (first.message or "").startswith("waiting at staging for evidence")

    (tmp_path / "integration.xml").write_text(JUNIT_OK)
    store.attest("api", d, parse_evidence([f"junit={tmp_path / 'integration.xml'}"]), provenance=LATER)
    # what the sweep starts (a pipeline run aimed at staging), run here in-process
    [decision] = [
        x for x in sweep_service(store, "api", dry_run=True).decisions if x.environment == "staging"
    ]
    assert decision.action == "promote"
    state = promote_pipeline(
        service="api", digest=str(d), to="staging", config=str(config), return_state=True
    )
    assert state.is_completed(), state.message
    assert state.message == f"promoted {d.short} to staging"
    assert events(store) == [
        ("published", None),
        ("promoted", "dev"),
        ("attested", None),
        ("promoted", "staging"),
    ]
    staging = store.ledger.records("api")[-1]
    tests = next(g for g in staging.gates if g["gate"] == "integration")
    assert tests["passed"] and tests["evidence"][0]["filename"] == "integration.xml"


def test_promote_attest_prints_what_it_resumes(config: Path, store: ArtifactStore, tmp_path: Path) -> None:
    d = publish(store, tmp_path, junit=None)
    store.ledger.append("api", "promoted", d, actor="ci", environment="dev", version="1.0")
    (tmp_path / "integration.xml").write_text(JUNIT_OK)

    def promote(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "promotion.cli", "-c", str(config), *args],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    r = promote("attest", "api", str(d), "-e", f"junit={tmp_path / 'integration.xml'}", "--as", "nightly")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == (
        "staging was waiting for junit evidence: its gates pass now; the nightly sweep promotes it at "
        f"its next run, or now: promote run api {d}"
    )
    (tmp_path / "scan.sarif").write_text(SARIF)
    r = promote("attest", "api", str(d), "-e", f"sarif={tmp_path / 'scan.sarif'}", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["resumes"] == []  # nothing waited for a scan


def test_promote_plan_prints_until_when_the_stage_waits(
    config: Path, store: ArtifactStore, tmp_path: Path
) -> None:
    d = publish(store, tmp_path, junit=None)
    store.ledger.append("api", "promoted", d, actor="ci", environment="dev", version="1.0")
    deadline = store.record("api", d).created_at + dt.timedelta(hours=4)
    r = subprocess.run(
        [sys.executable, "-m", "promotion.cli", "-c", str(config), "plan", "api", str(d)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert (
        f"staging: wait — waits until {deadline:%Y-%m-%d %H:%M:%S}Z for evidence "
        "(resumed when it is attached)" in lines
    )
    assert (
        f"  WAIT  integration: waiting for junit evidence until {utc_text(deadline)}: none attached yet"
        in lines
    )
    assert "prod: not reached" in lines
