"""Infrastructure errors are never verdicts: S3 faults through the real reverse proxy.

The pipeline's S3 endpoint is :class:`~tests.faultproxy.FaultProxy` in front of the session's
SeaweedFS; rules make it answer 503 to chosen requests. A promotion that cannot read its
evidence must end *errored* with nothing recorded against the digest, and go on when re-run.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from promotion.digest import Digest
from promotion.local_s3 import LocalS3
from tests.faultproxy import FaultProxy, Rule
from tests.flows import harness
from tests.flows.harness import Setup, promotion_events

#: Evidence blobs are read by GET under ``{prefix}blobs/sha256/`` (a HEAD comes first: it passes).
BLOB_GET = r"/blobs/sha256/"


@dataclass
class Proxied:
    setup: Setup
    proxy: FaultProxy

    def events(self) -> list[tuple[str, str | None]]:
        return [(r.event, r.environment) for r in self.setup.store.ledger.records("api")]

    def faults(self, path: str) -> int:
        """How many requests to ``path`` the proxy answered with a 503 of its own."""
        return sum(1 for _, p, status in self.proxy.log if status == 503 and path in p)


@pytest.fixture
def proxied(
    prefect_api: str, s3_server: LocalS3, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Proxied]:
    # Two tries per S3 request (botocore's own retry), so the task retries above it are visible
    # and the test stays short: 3 task tries x 2 requests per evidence read.
    monkeypatch.setenv("PROMOTION_S3_MAX_ATTEMPTS", "2")
    with FaultProxy(s3_server.endpoint_url) as proxy:
        cfg = tmp_path / "promotion.yaml"
        cfg.write_text(
            harness.PIPELINE.format(
                endpoint=proxy.url, bucket=s3_server.bucket, prefix=prefix, min_approvals=1, timeout="60s"
            )
        )
        yield Proxied(Setup(cfg), proxy)


def _promote(p: Proxied, digest: Digest, to: str = "dev") -> object:
    from flows.pipeline import promote_pipeline

    return promote_pipeline(
        service="api", digest=str(digest), to=to, config=str(p.setup.config), return_state=True
    )


def test_persistent_evidence_fault_errors_without_a_rejection_and_a_rerun_promotes(
    proxied: Proxied, tmp_path: Path, prefect_api: str
) -> None:
    d = proxied.setup.publish(tmp_path)
    rule = Rule("GET", BLOB_GET, "status", status=503, times=-1)
    proxied.proxy.rules.append(rule)

    state = _promote(proxied, d)

    assert state.is_failed()  # type: ignore[attr-defined]
    message = state.message  # type: ignore[attr-defined]
    assert message.startswith("errored at dev: StoreUnavailable: GET s3://"), message
    assert "503" in message
    assert message.endswith("(infrastructure, nothing recorded against the digest; re-run to continue)"), (
        message
    )
    # The ledger holds the publish only: no `rejected`, nothing else against the digest.
    assert proxied.events() == [("published", None)]
    assert proxied.setup.store.ledger.verify("api").ok
    # Each of the 2 evidence gates (junit, coverage) read its blob on 3 task tries, each try
    # 2 requests (botocore): the task retried infrastructure errors, and only those.
    assert proxied.faults(BLOB_GET) == 2 * 3 * 2
    errored = promotion_events(prefect_api, d, {"promotion.errored"})
    event = next(e for e in errored if e["event"] == "promotion.errored")
    assert event["resource"]["promotion.environment"] == "dev"
    assert event["payload"]["error"] == "StoreUnavailable"
    assert "promotion.rejected" not in {e["event"] for e in errored}

    # S3 healthy again: the re-run promotes, as if the errored run had never happened.
    proxied.proxy.rules.remove(rule)
    again = _promote(proxied, d)
    assert again.is_completed(), again.message  # type: ignore[attr-defined]
    assert proxied.events() == [("published", None), ("promoted", "dev")]
    assert {g["kind"]: g["passed"] for g in proxied.setup.store.ledger.records("api")[-1].gates} == {
        "tests": True,
        "coverage": True,
    }


def test_transient_evidence_fault_is_retried_and_the_promotion_passes(
    proxied: Proxied, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One try per request: botocore does not retry, so only the gate task's retry gets past it.
    monkeypatch.setenv("PROMOTION_S3_MAX_ATTEMPTS", "1")
    cfg = proxied.setup.config
    cfg.write_text(cfg.read_text())  # a new mtime: the flows build a store with the new setting
    d = proxied.setup.publish(tmp_path)
    proxied.proxy.rules.append(Rule("GET", BLOB_GET, "status", status=503, times=2))

    state = _promote(proxied, d)

    assert state.is_completed(), state.message  # type: ignore[attr-defined]
    assert proxied.faults(BLOB_GET) == 2
    assert proxied.events() == [("published", None), ("promoted", "dev")]


def test_ledger_write_fault_errors_and_records_nothing(proxied: Proxied, tmp_path: Path) -> None:
    d = proxied.setup.publish(tmp_path)
    # Every ledger write fails: the stage cannot record its `promoted` decision.
    rule = Rule("PUT", r"/ledger/api/", "status", status=503, times=-1)
    proxied.proxy.rules.append(rule)

    state = _promote(proxied, d)

    assert state.is_failed()  # type: ignore[attr-defined]
    assert state.message.startswith("errored at dev: StoreUnavailable: PUT s3://"), state.message  # type: ignore[attr-defined]
    assert proxied.faults("/ledger/api/") >= 2
    proxied.proxy.rules.remove(rule)
    assert proxied.events() == [("published", None)]
    assert _promote(proxied, d).is_completed()  # type: ignore[attr-defined]
    assert proxied.events() == [("published", None), ("promoted", "dev")]


def test_sweep_does_not_flag_or_refuse_a_digest_on_an_s3_error(proxied: Proxied, tmp_path: Path) -> None:
    """The sweep re-hashes deployed digests and evaluates gates: a 503 is an error, not a finding."""
    from promotion.config import load_pipeline
    from promotion.store import ArtifactStore
    from promotion.sweep import sweep_service

    d = proxied.setup.publish(tmp_path)
    assert _promote(proxied, d).is_completed()  # type: ignore[attr-defined]
    # staging auto-promotes: the sweep evaluates its gates (scan reads the SARIF evidence).
    cfg = tmp_path / "sweep.yaml"
    staging = "  - name: staging\n"
    cfg.write_text(proxied.setup.config.read_text().replace(staging, staging + "    auto_promote: true\n"))
    store = ArtifactStore(load_pipeline(cfg))
    sarif = next(e.digest for e in store.record("api", d).evidence if e.kind == "sarif")

    # 1. the evidence of a gate cannot be read: no decision against the digest, an error reported
    evidence_rule = Rule("GET", sarif.hex, "status", status=503, times=-1)
    proxied.proxy.rules.append(evidence_rule)
    report = sweep_service(store, "api", now=dt.datetime.now(dt.UTC))
    assert [c.outcome for c in report.checks] == ["ok"]
    [decision] = report.decisions
    assert decision.action == "skip" and decision.environment == "staging"
    assert "StoreUnavailable" in decision.reason and "gate failed" not in decision.reason, decision.reason
    assert any("StoreUnavailable" in e for e in report.errors), report.errors
    proxied.proxy.rules.remove(evidence_rule)

    # 2. the deployed blob cannot be re-hashed: an error, never a flag
    proxied.proxy.rules.append(Rule("GET", BLOB_GET, "status", status=503, times=-1))
    report = sweep_service(store, "api", now=dt.datetime.now(dt.UTC))
    assert [c.outcome for c in report.checks] == ["error"]
    assert not report.checks[0].flag_reason and not report.newly_flagged
    assert "StoreUnavailable" in report.checks[0].detail
    assert proxied.events() == [("published", None), ("promoted", "dev")]


def test_sweep_reports_no_drift_when_s3_fails_reading_the_copy(
    s3_server: LocalS3, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy that cannot be read is an error of the sweep, not drift (no drift.detected event)."""
    import uuid

    from promotion.config import load_pipeline
    from promotion.deploy import copy_to_target
    from promotion.models import Provenance
    from promotion.store import ArtifactStore
    from promotion.sweep import sweep_service

    monkeypatch.setenv("PROMOTION_S3_MAX_ATTEMPTS", "1")
    target = f"drift-{uuid.uuid4().hex[:10]}"
    s3_server.client().create_bucket(Bucket=target)
    with FaultProxy(s3_server.endpoint_url) as proxy:
        cfg = tmp_path / "drift.yaml"
        cfg.write_text(
            f"""
store: {{endpoint_url: "{proxy.url}", bucket: {s3_server.bucket}, prefix: "{prefix}"}}
services: [{{name: api}}]
environments:
  - name: dev
    on_drift: correct
    target: {{copy_to: {{bucket: "{target}", prefix: "{prefix}dev/"}}}}
"""
        )
        store = ArtifactStore(load_pipeline(cfg))
        artifact = tmp_path / "app.bin"
        artifact.write_bytes(uuid.uuid4().bytes * 64)
        d = store.publish(
            artifact, service="api", version="1", provenance=Provenance(published_by="ci")
        ).digest
        dev = store.pipeline.environment("dev").target.copy_to
        assert dev is not None
        copy_to_target(store, dev, "api", d, "1", environment="dev")
        store.ledger.append("api", "promoted", d, actor="ci", environment="dev", version="1")
        assert sweep_service(store, "api").drift == []  # the control: healthy, no drift

        proxy.rules.append(Rule("HEAD", f"/{target}/", "status", status=503, times=-1))
        report = sweep_service(store, "api")

    assert report.drift == []
    assert any(
        e.startswith("drift dev: cannot read the copy") and "StoreUnavailable" in e for e in report.errors
    )
