"""A gate kind is one model, one evaluator and one registration (issue 9, item 1).

Two toy kinds are registered here, as a new module of the product would register them: an
evidence gate (``licence``: the SPDX id in an ``other`` report must be allowed) and a time gate
(``embargo``: not before a moment). Through :func:`promotion.gate_registry.register` alone they
become valid in a pipeline file, run in ``evaluate_stage``, show in ``promote plan`` and in the
sweep's decisions, and get the shared evidence expiry. Against the real SeaweedFS server.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

from promotion.config import GateBase, gate_kind_names, parse_pipeline
from promotion.digest import Digest
from promotion.errors import ConfigError
from promotion.evaluate import GateContext, evaluate_stage
from promotion.gate_registry import GateKind, gate_kind, register, registered, unregister
from promotion.gates import GateResult
from promotion.local_s3 import LocalS3
from promotion.models import Provenance
from promotion.plan import plan
from promotion.store import ArtifactStore, parse_evidence
from promotion.sweep import sweep_service


class LicenceGate(GateBase):
    """Toy evidence gate: every ``other`` report holds an SPDX licence id that must be allowed."""

    kind: Literal["licence"]
    allow: list[str]


class EmbargoGate(GateBase):
    """Toy time gate: no promotion before ``until``."""

    kind: Literal["embargo"]
    until: dt.datetime


def evaluate_licence(gate: LicenceGate, ctx: GateContext) -> GateResult:
    found = [r.decode().strip() for r in ctx.reports("other")]
    bad = [
        f"licence {lic} is not allowed (allowed: {', '.join(gate.allow)})"
        for lic in found
        if lic not in gate.allow
    ]
    if not found:
        bad = ["missing evidence: other"]
    return GateResult(
        gate=gate.name or gate.kind,
        kind=gate.kind,
        passed=not bad,
        measured={"licences": ", ".join(found) or None},
        thresholds={"allow": ", ".join(gate.allow)},
        reasons=bad or [f"licences allowed: {', '.join(found)}"],
    )


def evaluate_embargo(gate: EmbargoGate, ctx: GateContext) -> GateResult:
    waiting = ctx.now < gate.until
    return GateResult(
        gate=gate.name or gate.kind,
        kind=gate.kind,
        passed=not waiting,
        measured={"now": ctx.now.isoformat()},
        thresholds={"until": gate.until.isoformat()},
        reasons=[f"embargoed until {gate.until.isoformat()}" if waiting else "embargo over"],
    )


LICENCE = GateKind(LicenceGate, evaluate=evaluate_licence, evidence="other")
EMBARGO = GateKind(EmbargoGate, evaluate=evaluate_embargo, ready_at=lambda gate, ctx, start: gate.until)

NOW = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)
UNTIL = NOW + dt.timedelta(days=3)

PIPELINE = """
store: {{endpoint_url: "{endpoint}", bucket: {bucket}, prefix: "{prefix}"}}
services: [{{name: api}}]
environments:
  - name: dev
  - name: staging
    auto_promote: true
    gates:
      - {{kind: licence, allow: [MIT, Apache-2.0], max_age: 30d}}
  - name: prod
    gates:
      - {{kind: embargo, until: "{until}"}}
"""


@pytest.fixture
def toy_kinds() -> Iterator[None]:
    register(LICENCE)
    register(EMBARGO)
    try:
        yield
    finally:
        unregister("licence")
        unregister("embargo")


def _text(s3_server: LocalS3, prefix: str) -> str:
    return PIPELINE.format(
        endpoint=s3_server.endpoint_url, bucket=s3_server.bucket, prefix=prefix, until=UNTIL.isoformat()
    )


def _publish_in_dev(store: ArtifactStore, tmp_path: Path, licence: str) -> Digest:
    tag = uuid.uuid4().hex[:8]
    blob = tmp_path / f"app-{tag}.bin"
    blob.write_bytes(uuid.uuid4().bytes * 64)
    report = tmp_path / f"licence-{tag}.txt"
    report.write_text(f"{licence}\n")
    prov = Provenance(commit="c0ffee", build_url="https://ci/1", published_by="ci")
    evidence = parse_evidence([f"other={report}"])
    d = store.publish(blob, service="api", version=tag, provenance=prov, evidence=evidence).digest
    store.ledger.append("api", "promoted", d, actor="ci", environment="dev", version=tag, at=NOW)
    return d


def test_an_unregistered_kind_is_refused_and_a_registered_one_is_accepted(
    s3_server: LocalS3, prefix: str
) -> None:
    text = _text(s3_server, prefix)
    with pytest.raises(ConfigError) as refused:
        parse_pipeline(text)
    assert "unknown gate kind 'licence'" in str(refused.value)
    assert "licence" not in gate_kind_names()

    register(LICENCE)
    register(EMBARGO)
    try:
        assert gate_kind_names()[-2:] == ("licence", "embargo")
        pipeline = parse_pipeline(text)
        [licence] = pipeline.environment("staging").gates
        assert isinstance(licence, LicenceGate) and licence.allow == ["MIT", "Apache-2.0"]
        # A mistake in a registered kind's settings is reported like any built-in's.
        with pytest.raises(ConfigError) as bad:
            parse_pipeline(text.replace("allow: [MIT, Apache-2.0], ", ""))
        assert "environments[1](staging).gates[0].allow: Field required" in str(bad.value)
    finally:
        unregister("licence")
        unregister("embargo")
    assert "licence" not in gate_kind_names()
    with pytest.raises(ConfigError):
        parse_pipeline(text)


def test_what_a_kind_declares_is_read_from_the_registry(toy_kinds: None) -> None:
    assert gate_kind("licence").evidence == "other" and not gate_kind("licence").time_based
    assert gate_kind("embargo").time_based and not gate_kind("embargo").live
    builtin = {k.name: k for k in registered()}
    assert {n for n, k in builtin.items() if k.live} == {"http", "prometheus"}
    assert {n for n, k in builtin.items() if k.time_based} == {"soak", "window", "embargo"}
    assert {n: k.evidence for n, k in builtin.items() if k.evidence} == {
        "tests": "junit",
        "coverage": "coverage",
        "scan": "sarif",
        "perf": "perf",
        "licence": "other",
    }
    with pytest.raises(ValueError, match="already registered"):
        register(LICENCE)
    with pytest.raises(ValueError, match="exactly one of evaluate and live_check"):
        GateKind(LicenceGate)
    with pytest.raises(ValueError, match="built in"):
        unregister("soak")


def test_a_registered_kind_runs_in_evaluate_stage_plan_and_sweep(
    toy_kinds: None, s3_server: LocalS3, prefix: str, tmp_path: Path
) -> None:
    store = ArtifactStore(parse_pipeline(_text(s3_server, prefix)))
    good = _publish_in_dev(store, tmp_path, "MIT")
    bad = _publish_in_dev(store, tmp_path, "GPL-3.0")
    staging, prod = store.pipeline.environment("staging"), store.pipeline.environment("prod")

    stage = evaluate_stage(store, staging, store.record("api", bad), None, NOW, previous_env="dev")
    assert [r.kind for r in stage.hard] == ["licence"] and not stage.waiting
    assert stage.hard[0].reasons == ["licence GPL-3.0 is not allowed (allowed: MIT, Apache-2.0)"]
    timed = evaluate_stage(store, prod, store.record("api", good), None, NOW, previous_env="staging")
    assert [r.kind for r in timed.waiting] == ["embargo"] and not timed.hard
    assert timed.ready_at(NOW) == UNTIL

    # promote plan: the evidence gate blocks a bad licence; the time gate makes prod wait.
    blocked = plan(store, "api", bad, now=NOW)
    assert [(s.environment, s.action) for s in blocked.stages] == [
        ("staging", "blocked"),
        ("prod", "not_reached"),
    ]
    assert blocked.stages[0].reasons == ["licence: licence GPL-3.0 is not allowed (allowed: MIT, Apache-2.0)"]
    waits = plan(store, "api", good, now=NOW)
    assert [(s.environment, s.action) for s in waits.stages] == [("staging", "promote"), ("prod", "wait")]
    assert waits.stages[1].earliest == UNTIL
    assert waits.stages[1].reasons == [f"embargo: embargoed until {UNTIL.isoformat()}"]
    assert plan(store, "api", good, now=UNTIL).stages[1].action == "promote"

    # The evidence expiry shared by every evidence gate applies to the toy kind as declared.
    created = store.record("api", good).created_at
    late = plan(store, "api", good, now=created + dt.timedelta(days=31))
    assert late.stages[0].action == "blocked"
    assert late.stages[0].reasons[0].startswith("licence: evidence expired: other published 31d")

    # The sweep decides staging for what runs in dev (the last promoted: the bad one).
    [decision] = [
        x for x in sweep_service(store, "api", now=NOW, dry_run=True).decisions if x.environment == "staging"
    ]
    assert decision.digest == bad and decision.action == "skip"
    assert (
        decision.reason == "gate failed: licence: licence GPL-3.0 is not allowed (allowed: MIT, Apache-2.0)"
    )


def test_the_stage_flow_runs_a_registered_kind_as_a_gate_task(
    toy_kinds: None, prefect_api: str, s3_server: LocalS3, prefix: str, tmp_path: Path
) -> None:
    from flows.pipeline import promote_pipeline

    config = tmp_path / "promotion.yaml"
    config.write_text(_text(s3_server, prefix))
    store = ArtifactStore(parse_pipeline(config.read_text()))
    bad = _publish_in_dev(store, tmp_path, "GPL-3.0")

    state = promote_pipeline(service="api", digest=str(bad), config=str(config), return_state=True)
    assert state.is_failed()
    assert state.message == (
        "stopped at staging: GateFailed: gate licence failed: "
        "licence: licence GPL-3.0 is not allowed (allowed: MIT, Apache-2.0)"
    )
    rejected = store.ledger.records("api")[-1]
    assert (rejected.event, rejected.environment) == ("rejected", "staging")
    assert [(g["kind"], g["passed"]) for g in rejected.gates] == [("licence", False)]
