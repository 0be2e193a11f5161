"""Promotions while S3 fails one request in five (or two): each completes or ends *errored*.

Real Prefect server; SeaweedFS behind the fault proxy, which answers 503 SlowDown, resets
connections, drops responses after the write landed and delays, at random (seeded). Then the
faults stop, every run that did not finish is run again, and everything must have converged:
each digest in staging exactly once, no rejection that blames S3, a ledger that verifies.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from promotion.config import load_pipeline
from promotion.digest import Digest
from promotion.local_s3 import LocalS3
from promotion.reach import digest_history
from promotion.store import ArtifactStore
from tests.faultproxy import FaultProxy
from tests.flows import harness
from tests.flows.harness import Setup


@pytest.mark.parametrize("rate", [0.2, 0.5], ids=["20pct", "50pct"])
def test_promotions_under_s3_faults_converge_without_false_verdicts(
    rate: float, make_setup: Callable[..., Setup], s3_server: LocalS3, prefix: str, tmp_path: Path
) -> None:
    """At 20 % the retries absorb most faults; at 50 % runs end errored and the re-runs go on."""
    from flows.pipeline import promote_pipeline

    direct = make_setup()  # publishes and checks go straight to SeaweedFS
    digests: list[Digest] = [direct.publish(tmp_path) for _ in range(5)]

    with FaultProxy(s3_server.endpoint_url) as proxy:
        faulty_cfg = tmp_path / "faulty.yaml"
        faulty_cfg.write_text(
            harness.PIPELINE.format(
                endpoint=proxy.url, bucket=s3_server.bucket, prefix=prefix, min_approvals=1, timeout="60s"
            )
        )
        proxy.random_faults(rate=rate, seed=20261201)
        first = {
            d: promote_pipeline(
                service="api", digest=str(d), to="staging", config=str(faulty_cfg), return_state=True
            )
            for d in digests
        }
        faults = sum(proxy.stats.values())
    assert faults > 0, "the proxy injected no fault: the test proved nothing"

    for d, state in first.items():
        msg = state.message or ""
        # Completed, held back behind a newer build, or errored on infrastructure: never a verdict.
        assert state.is_completed() or "errored" in msg or "StageHeldBack" in msg, (str(d), msg)

    store = ArtifactStore(load_pipeline(direct.config))
    rejected = [r for r in store.ledger.records("api") if r.event == "rejected"]
    assert rejected == [], [r.reason for r in rejected]

    # The faults are gone: every run that did not complete goes on from where it stopped.
    last = dict(first)
    for d, state in first.items():
        if not state.is_completed():
            last[d] = promote_pipeline(
                service="api", digest=str(d), to="staging", config=str(direct.config), return_state=True
            )
    for d, state in last.items():
        msg = state.message or ""
        assert state.is_completed() or "StageHeldBack" in msg, (str(d), msg)
        if state.is_completed():
            assert digest_history(store.ledger, "api", d).reached("staging"), str(d)

    records = store.ledger.records("api")
    assert store.ledger.verify("api").ok
    assert not any(r.event in ("rejected", "flagged") for r in records), [r.reason for r in records]
    for env in ("dev", "staging"):
        promoted = [str(r.digest) for r in records if r.environment == env and r.event == "promoted"]
        assert len(promoted) == len(set(promoted)), (env, "a digest was promoted twice", promoted)
    # one `published` record per digest, whatever was retried
    assert sorted(str(r.digest) for r in records if r.event == "published") == sorted(map(str, digests))
