"""Approval deadlines: an undecided request past its deadline is closed as rejected (timeout).

Whoever gets there first closes it, and all of them write the same record under the same
idempotency id, so a request is closed once:

- a run that waits in its own process (no deployment): its pause times out;
- a pipeline run of a deployment that re-enters after its deadline;
- with nothing running, the ``close-expired-approvals`` flow, which the pipeline schedules at the
  deadline when it suspends (flows/deadlines.py), and the nightly sweep as a backstop.

Pure: no Prefect here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

from promotion.config import ApprovalPolicy, Pipeline, format_duration
from promotion.models import LedgerRecord, utcnow
from promotion.requests import ApprovalRequest, find_request, open_requests
from promotion.store import ArtifactStore


def timeout_reason(policy: ApprovalPolicy) -> str:
    return f"approval timed out after {format_duration(policy.timeout)}: no valid decision"


def is_expired(request: ApprovalRequest, policy: ApprovalPolicy, now: dt.datetime | None = None) -> bool:
    """Undecided (neither approved nor rejected by the ledger's tally) and past its deadline."""
    return request.tally(policy).outcome is None and (now or utcnow()) >= request.deadline


def record_timeout(
    store: ArtifactStore,
    request: ApprovalRequest,
    policy: ApprovalPolicy,
    *,
    actor: str,
    flow_run_id: str | None,
    gates: Sequence[dict[str, Any]] = (),
) -> LedgerRecord | None:
    """Close ``request`` as timed out: the ``rejected`` record written, or None when something
    closed it already (another writer's timeout, a decision, a promotion).

    Checked against the ledger's tip, and written under an id every writer shares: two writers
    racing land on the same place and the second finds the first's record as its own.
    """
    still = find_request(store.ledger, request.service, request.environment, request.digest)
    if still is None or still.opened.seq != request.opened.seq:
        return None
    return store.ledger.append(
        request.service,
        "rejected",
        request.digest,
        actor=actor,
        environment=request.environment,
        version=request.version,
        reason=timeout_reason(policy),
        gates=list(gates),
        details={
            "flow_run_id": flow_run_id,
            "timed_out": True,
            "request_seq": request.opened.seq,
            "deadline": request.deadline.isoformat(),
        },
        idempotency_id=f"timeout:{request.environment}:{request.digest.hex}:{request.opened.seq}",
    )


def expired_requests(
    pipeline: Pipeline,
    store: ArtifactStore,
    *,
    services: Sequence[str] | None = None,
    now: dt.datetime | None = None,
) -> list[tuple[ApprovalRequest, ApprovalPolicy]]:
    """Every undecided request of ``services`` (all by default) past its deadline, oldest first."""
    found: list[tuple[ApprovalRequest, ApprovalPolicy]] = []
    names = [s.name for s in pipeline.services] if services is None else list(services)
    for service in names:
        for request in open_requests(store.ledger, service):
            env = next((e for e in pipeline.environments if e.name == request.environment), None)
            policy = env.approval if env is not None else None
            if policy is not None and is_expired(request, policy, now):
                found.append((request, policy))
    return found


def close_expired(
    pipeline: Pipeline,
    store: ArtifactStore,
    *,
    actor: str,
    flow_run_id: str | None = None,
    services: Sequence[str] | None = None,
    now: dt.datetime | None = None,
    keep_open: Callable[[ApprovalRequest], str | None] = lambda _: None,
) -> list[tuple[ApprovalRequest, LedgerRecord]]:
    """Close every expired request of ``services`` (all by default); the requests closed.

    ``keep_open(request)`` runs first for each; a reason it gives leaves that request open for
    the next call (its run is running again and judges its own deadline). It is also where the
    caller stops the waiting run from offering its form any more.
    """
    closed: list[tuple[ApprovalRequest, LedgerRecord]] = []
    for request, policy in expired_requests(pipeline, store, services=services, now=now):
        if keep_open(request):
            continue
        rec = record_timeout(store, request, policy, actor=actor, flow_run_id=flow_run_id)
        if rec is not None:
            closed.append((request, rec))
    return closed
