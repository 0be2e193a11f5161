"""Approval deadlines (promotion/deadlines.py) against the real SeaweedFS server: an undecided
request past its deadline is closed once, as timed out, whoever closes it and however often."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from promotion.deadlines import close_expired, expired_requests, record_timeout
from promotion.local_s3 import LocalS3
from promotion.requests import find_request
from promotion.store import ArtifactStore
from tests.promotion.test_requests import T0, _answer, _pipeline, _publish, _request

AFTER = T0 + dt.timedelta(hours=1, seconds=1)


def test_only_undecided_requests_past_their_deadline_are_closed_once(
    s3_server: LocalS3, prefix: str, tmp_path: Path
) -> None:
    store = ArtifactStore(_pipeline(s3_server.endpoint_url, s3_server, prefix))
    waiting, approved, early = (_publish(store, tmp_path) for _ in range(3))
    for d, run in ((waiting, "run-1"), (approved, "run-2"), (early, "run-3")):
        _request(store, d, run)
    _answer(store, approved, "alice")
    _answer(store, approved, "bob")  # 2 of 2: approved, its run deploys even after the deadline

    before = T0 + dt.timedelta(minutes=59)
    assert expired_requests(store.pipeline, store, now=before) == []
    assert [r.digest for r, _ in expired_requests(store.pipeline, store, now=AFTER)] == [waiting, early]

    # A request whose run is running again is left to that run.
    kept = close_expired(
        store.pipeline,
        store,
        actor="sweep",
        now=AFTER,
        keep_open=lambda r: "running" if r.digest == early else None,
    )
    assert [(r.digest, rec.event, rec.reason) for r, rec in kept] == [
        (waiting, "rejected", "approval timed out after 1h: no valid decision")
    ]
    assert kept[0][1].details["timed_out"] is True
    assert find_request(store.ledger, "api", "prod", waiting) is None
    assert find_request(store.ledger, "api", "prod", early) is not None

    # Closing again, or the waiting run's own timeout racing the deadline check, writes nothing new.
    policy = store.pipeline.environment("prod").approval
    assert policy is not None
    request = kept[0][0]
    assert record_timeout(store, request, policy, actor="run", flow_run_id="run-1") is None
    closed = close_expired(store.pipeline, store, actor="sweep", now=AFTER)
    assert [r.digest for r, _ in closed] == [early]
    rejected = [r for r in store.ledger.records("api") if r.event == "rejected"]
    assert [r.digest for r in rejected] == [waiting, early]
    assert store.ledger.verify("api").ok
