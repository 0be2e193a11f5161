"""Approval requests read from the ledger (promotion/requests.py), against the real SeaweedFS server.

Records are written with the same helpers the pipeline flow and ``promote approve`` use.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest

from promotion.answers import only_request
from promotion.approval import Decision
from promotion.config import Pipeline, parse_pipeline
from promotion.digest import Digest
from promotion.errors import UsageError
from promotion.local_s3 import LocalS3
from promotion.models import Provenance
from promotion.requests import (
    answer_details,
    describe_verdict,
    find_request,
    open_requests,
    pending_rows,
    request_details,
    ui_link,
)
from promotion.store import ArtifactStore
from tests.faultproxy import FaultProxy

PIPELINE = """
store: {{endpoint_url: "{endpoint}", bucket: {bucket}, prefix: "{prefix}"}}
services: [{{name: api}}, {{name: web}}]
environments:
  - name: dev
  - name: prod
    approval: {{approvers: [alice, bob, carol], min_approvals: 2, timeout: 1h}}
"""

T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)


def _pipeline(endpoint: str, s3_server: LocalS3, prefix: str) -> Pipeline:
    return parse_pipeline(PIPELINE.format(endpoint=endpoint, bucket=s3_server.bucket, prefix=prefix))


def _publish(store: ArtifactStore, tmp_path: Path, service: str = "api", author: str = "dana") -> Digest:
    f = tmp_path / f"{uuid.uuid4().hex}.bin"
    f.write_bytes(uuid.uuid4().bytes * 64)
    prov = Provenance(commit="c0ffee", commit_author=author, build_url="https://ci/1", published_by="ci")
    return store.publish(f, service=service, version="1.0", provenance=prov).digest


def _request(
    store: ArtifactStore,
    d: Digest,
    run: str,
    service: str = "api",
    continues: int | None = None,
    author: str = "dana",
) -> None:
    policy = store.pipeline.environment("prod").approval
    assert policy is not None
    store.ledger.append(
        service,
        "approval_requested",
        d,
        actor="erin",
        environment="prod",
        version="1.0",
        details=request_details(
            policy=policy,
            deadline=T0 + policy.timeout,
            flow_run_id=run,
            requested_by="erin",
            commit_author=author,
            continues=continues,
        ),
        at=T0,
    )


def _answer(store: ArtifactStore, d: Digest, who: str, decision: str = "approve") -> str:
    """Judge and record an answer as `promote approve` does; what it would print."""
    policy = store.pipeline.environment("prod").approval
    assert policy is not None
    req = find_request(store.ledger, "api", "prod", d)
    assert req is not None
    answer = Decision(decision=decision, approver=who, reason="r")  # type: ignore[arg-type]
    tally = req.tally(policy)
    verdict = tally.add(answer)
    store.ledger.append(
        "api",
        "approval",
        d,
        actor=who,
        environment="prod",
        version="1.0",
        reason="r",
        details=answer_details(answer, verdict, "cli", None),
    )
    return describe_verdict(answer, verdict, tally)


def test_a_request_is_opened_once_continued_and_closed(
    s3_server: LocalS3, prefix: str, tmp_path: Path
) -> None:
    store = ArtifactStore(_pipeline(s3_server.endpoint_url, s3_server, prefix))
    d = _publish(store, tmp_path)
    assert find_request(store.ledger, "api", "prod", d) is None
    _request(store, d, "run-1")
    first = find_request(store.ledger, "api", "prod", d)
    assert first is not None and first.flow_run_id == "run-1"
    assert first.deadline == T0 + dt.timedelta(hours=1) and first.requested_by == "erin"

    assert _answer(store, d, "alice") == "counted (1 of 2; 1 more needed from any of bob, carol)"
    # A re-run continues the request: same opening record, the new run is the one waiting.
    _request(store, d, "run-2", continues=first.opened.seq)
    again = find_request(store.ledger, "api", "prod", d)
    assert again is not None and again.opened.seq == first.opened.seq and again.flow_run_id == "run-2"
    assert [r.opened.seq for r in open_requests(store.ledger, "api")] == [first.opened.seq]

    # One approver counts once across runs; refusals say why; the second approver decides.
    assert _answer(store, d, "alice") == "refused: 'alice' already approved; 2 different people must"
    assert _answer(store, d, "mallory").startswith("refused: 'mallory' is not an allowed approver")
    assert _answer(store, d, "bob") == "counted (2 of 2): approved, the run goes on to deploy"
    policy = store.pipeline.environment("prod").approval
    assert policy is not None
    req = find_request(store.ledger, "api", "prod", d)
    assert req is not None
    tally = req.tally(policy)
    assert tally.outcome == "approved" and tally.approved_by == ["alice", "bob"]
    assert [(x.approver, ok) for x, ok, _ in req.decisions(policy)] == [
        ("alice", True), ("alice", False), ("mallory", False), ("bob", True)
    ]  # fmt: skip

    store.ledger.append("api", "promoted", d, actor="erin", environment="prod", version="1.0")
    assert find_request(store.ledger, "api", "prod", d) is None
    assert open_requests(store.ledger, "api") == []
    assert store.ledger.verify("api").ok  # the state with requests re-derives from the records


def test_self_approval_and_rejection_are_judged_from_the_ledger(
    s3_server: LocalS3, prefix: str, tmp_path: Path
) -> None:
    store = ArtifactStore(_pipeline(s3_server.endpoint_url, s3_server, prefix))
    d = _publish(store, tmp_path, author="alice")
    _request(store, d, "run-1", author="alice")
    assert _answer(store, d, "alice") == (
        "refused: 'alice' authored the commit and may not approve it (no self-approval)"
    )
    assert _answer(store, d, "carol", "reject") == "counted: the promotion is rejected"
    req = find_request(store.ledger, "api", "prod", d)
    policy = store.pipeline.environment("prod").approval
    assert req is not None and policy is not None
    assert req.tally(policy).outcome == "rejected"


def test_pending_reads_back_only_to_the_oldest_open_request(
    s3_server: LocalS3, prefix: str, tmp_path: Path
) -> None:
    with FaultProxy(s3_server.endpoint_url) as proxy:
        store = ArtifactStore(_pipeline(proxy.url, s3_server, prefix))
        old = _publish(store, tmp_path)
        _request(store, old, "run-old")
        store.ledger.append("api", "rejected", old, actor="x", environment="prod", reason="closed")
        for _ in range(6):  # history before the open requests: pending must not read it
            _publish(store, tmp_path)
        waiting = _publish(store, tmp_path)
        _request(store, waiting, "run-a")
        _answer(store, waiting, "mallory")
        _answer(store, waiting, "bob")
        other = _publish(store, tmp_path, service="web")
        _request(store, other, "run-web", service="web")
        oldest = find_request(store.ledger, "api", "prod", waiting)
        assert oldest is not None

        proxy.log.clear()
        fresh = ArtifactStore(_pipeline(proxy.url, s3_server, prefix))  # no cached tips
        env = {"PREFECT_API_URL": "http://127.0.0.1:4200/api"}
        rows = pending_rows(fresh.pipeline, fresh.ledger, ["api", "web"], environ=env)
        read = {
            int(path.rsplit("/", 1)[1].removesuffix(".json"))
            for method, path, _ in proxy.log
            if method == "GET" and "/ledger/api/0" in path
        }
    assert [(r["service"], r["digest"]) for r in rows] == [("api", str(waiting)), ("web", str(other))]
    api = rows[0]
    assert api["approvals"] == "1 of 2" and api["may_still_approve"] == ["alice", "carol"]
    assert [(x["approver"], x["counted"]) for x in api["decisions"]] == [("mallory", False), ("bob", True)]
    assert "not an allowed approver" in api["decisions"][0]["why"]
    assert api["ui_url"] == "http://127.0.0.1:4200/runs/flow-run/run-a"
    assert api["deadline"] == (T0 + dt.timedelta(hours=1)).isoformat()
    assert min(read) >= oldest.opened.seq, sorted(read)  # nothing before the oldest open request
    assert pending_rows(store.pipeline, store.ledger, ["api"], "dev") == []


def test_ui_link_prefers_the_ui_url() -> None:
    assert ui_link("x", {"PREFECT_UI_URL": "https://ui/", "PREFECT_API_URL": "http://a/api"}) == (
        "https://ui/runs/flow-run/x"
    )
    assert ui_link("x", {}) is None and ui_link(None, {"PREFECT_UI_URL": "u"}) is None


def test_service_env_names_one_request_or_lists_the_candidates(
    s3_server: LocalS3, prefix: str, tmp_path: Path
) -> None:
    store = ArtifactStore(_pipeline(s3_server.endpoint_url, s3_server, prefix))
    with pytest.raises(UsageError, match=r"^no approval request of api is open in prod \(promote pending"):
        only_request(store.pipeline, "api", "prod")
    a = _publish(store, tmp_path)
    _request(store, a, "run-a")
    assert only_request(store.pipeline, "api", "prod").digest == a
    b = _publish(store, tmp_path)
    _request(store, b, "run-b")
    with pytest.raises(UsageError) as info:
        only_request(store.pipeline, "api", "prod")
    said = str(info.value)
    assert said.startswith("2 approval requests of api are open in prod: ")
    assert f"{a} (version 1.0, run run-a)" in said and f"{b} (version 1.0, run run-b)" in said
    assert said.endswith("give the run id of the one you mean")
