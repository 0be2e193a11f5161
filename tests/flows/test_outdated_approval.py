"""An approval for a build older than what the environment now runs is not deployed (on_outdated).

Two builds wait for approval at prod at once; the newer one is approved first. Real Prefect
server, real SeaweedFS.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from promotion.local_s3 import LocalS3
from tests.flows import harness
from tests.flows.harness import Run, Setup, resume, wait_for_paused


def _setup(tmp_path: Path, s3_server: LocalS3, prefix: str, on_outdated: str) -> Setup:
    text = harness.PIPELINE.format(
        endpoint=s3_server.endpoint_url,
        bucket=s3_server.bucket,
        prefix=prefix,
        min_approvals=1,
        timeout="120s",
    ).replace("timeout: 120s}", f"timeout: 120s, on_outdated: {on_outdated}}}")
    assert f"on_outdated: {on_outdated}" in text
    cfg = tmp_path / "promotion.yaml"
    cfg.write_text(text)
    return Setup(cfg)


@pytest.mark.parametrize("on_outdated", ["refuse", "allow"])
def test_the_older_of_two_waiting_approvals_is_closed_as_superseded(
    on_outdated: str, tmp_path: Path, s3_server: LocalS3, prefix: str, prefect_api: str
) -> None:
    from flows.pipeline import promote_pipeline

    s = _setup(tmp_path, s3_server, prefix, on_outdated)
    old, new = s.publish(tmp_path), s.publish(tmp_path)
    cfg = str(s.config)
    run_old = Run(promote_pipeline, service="api", digest=str(old), config=cfg)
    paused_old = wait_for_paused(run_old)
    run_new = Run(promote_pipeline, service="api", digest=str(new), config=cfg)
    paused_new = wait_for_paused(run_new, seen={paused_old})

    resume(paused_new, "approve", "alice", "newer build")
    assert run_new.join().is_completed()
    resume(paused_old, "approve", "bob", "approved before anyone said it was outdated")
    state_old = run_old.join()

    prod = s.store.ledger.state("api").environments["prod"]
    last = s.store.ledger.records("api")[-1]
    if on_outdated == "refuse":
        assert state_old.is_failed()
        msg = state_old.message or ""
        assert msg.startswith(
            f"stopped at prod: ApprovalSuperseded: superseded: prod now runs {new.short}"
        ), msg
        assert prod.digest == new
        assert (last.event, last.environment, last.digest) == ("rejected", "prod", old)
        assert new.short in last.reason and "on_outdated: refuse" in last.reason

        # Asked again, the older build is refused before anybody is asked to approve it.
        again = promote_pipeline(service="api", digest=str(old), config=cfg, return_state=True)
        assert again.is_failed() and "ApprovalSuperseded" in (again.message or "")
        assert s.store.ledger.records("api")[-1].seq == last.seq  # nothing more recorded
    else:
        assert state_old.is_completed(), state_old.message
        assert prod.digest == old
        assert (last.event, last.environment, last.digest) == ("promoted", "prod", old)
    assert s.store.ledger.verify("api").ok
