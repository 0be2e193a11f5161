"""Approval requests, read from the ledger: which are open, what was decided, what is still needed.

A request is identified by (service, environment, digest). The first ``approval_requested``
record opens it (the tip's state lists it, see :attr:`LedgerState.approval_requests`); a re-run
that finds it open appends another ``approval_requested`` naming the request it continues, which
changes nothing in the state. ``promoted``, ``rejected`` (approval rejected, timed out,
superseded) or ``rolled_back`` of the digest in the environment close it.

Its decisions are the ``approval`` records of that environment and digest since it opened, and
the tally is re-judged from them with :class:`~promotion.approval.Tally`, never kept in a
process: a decision given before a crash, or to a run that is gone, counts for the next run, and
one approver counts once across runs. Reading a request costs the records since it opened, not
the whole ledger.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from promotion.approval import Decision, Tally, Verdict
from promotion.config import ApprovalPolicy, Pipeline
from promotion.digest import Digest
from promotion.ledger import Ledger, Tip
from promotion.models import LedgerRecord, request_key

#: ``details.source`` of an ``approval`` record: who wrote it.
Source = Literal["run", "cli"]


@dataclass(frozen=True)
class Answer:
    """One recorded decision on a request, with what the ledger says about it."""

    seq: int
    at: dt.datetime
    decision: Decision
    counted: bool
    why: str
    source: str
    #: The Prefect run-input key the answer came in (a resume of a suspended run), if any: a
    #: re-entered run records each such input once.
    input_key: str | None = None

    @classmethod
    def of(cls, rec: LedgerRecord) -> Answer:
        d = rec.details
        decision = Decision(
            decision="reject" if d.get("decision") == "reject" else "approve",
            approver=rec.actor,
            reason=rec.reason,
        )
        return cls(
            rec.seq,
            rec.at,
            decision,
            bool(d.get("counted")),
            str(d.get("why", "")),
            str(d.get("source", "run")),
            str(d["input_key"]) if d.get("input_key") else None,
        )


@dataclass
class ApprovalRequest:
    service: str
    environment: str
    digest: Digest
    opened: LedgerRecord
    #: The latest ``approval_requested`` of this request: the run that waits on it now.
    latest: LedgerRecord
    answers: list[Answer] = field(default_factory=list)
    #: The last ledger seq read: answers after it are not known yet.
    read_to: int = 0

    @property
    def version(self) -> str | None:
        return self.opened.version

    @property
    def since(self) -> dt.datetime:
        return self.opened.at

    @property
    def deadline(self) -> dt.datetime:
        raw = self.opened.details.get("deadline")
        if isinstance(raw, str):
            return dt.datetime.fromisoformat(raw)
        return self.opened.at + dt.timedelta(seconds=float(self.opened.details.get("timeout_s", 0)))

    @property
    def requested_by(self) -> str | None:
        value = self.opened.details.get("requested_by")
        return str(value) if value else None

    @property
    def commit_author(self) -> str | None:
        value = self.opened.details.get("commit_author")
        return str(value) if value else None

    @property
    def flow_run_id(self) -> str | None:
        value = self.latest.details.get("flow_run_id")
        return str(value) if value and value != "local" else None

    def tally(self, policy: ApprovalPolicy) -> Tally:
        """The decisions so far, judged again in order against ``policy``."""
        tally = Tally(policy=policy, commit_author=self.commit_author, requested_by=self.requested_by)
        for a in self.answers:
            tally.add(a.decision)
            if tally.outcome == "rejected":
                break
        return tally

    def decisions(self, policy: ApprovalPolicy) -> list[tuple[Decision, bool, str]]:
        """Each answer with whether it counts and why (for reports and the approval form)."""
        tally = Tally(policy=policy, commit_author=self.commit_author, requested_by=self.requested_by)
        rows = []
        for a in self.answers:
            verdict = tally.add(a.decision)
            rows.append((a.decision, verdict.accepted, verdict.why))
        return rows


def _build(service: str, key: str, opened_seq: int, records: Sequence[LedgerRecord]) -> ApprovalRequest:
    environment, _, digest = key.partition(" ")
    mine = [
        r for r in records if r.seq >= opened_seq and r.environment == environment and str(r.digest) == digest
    ]
    opened = next((r for r in mine if r.seq == opened_seq and r.event == "approval_requested"), None)
    if opened is None:
        from promotion.errors import LedgerError

        raise LedgerError(
            f"the ledger of {service} names an approval request at record {opened_seq} that is not "
            f"one; run 'promote ledger verify {service}'"
        )
    latest = [r for r in mine if r.event == "approval_requested"][-1]
    req = ApprovalRequest(service, environment, Digest(digest), opened, latest)
    req.answers = [Answer.of(r) for r in mine if r.event == "approval"]
    req.read_to = max((r.seq for r in records), default=opened_seq)
    return req


def _since(ledger: Ledger, service: str, first: int, tip: Tip) -> list[LedgerRecord]:
    """Records ``first..tip`` in order (the tip's record is already read)."""
    records = ledger.read_range(service, first, tip.seq - 1)
    if tip.record is not None:
        records.append(tip.record)
    return records


def open_requests(ledger: Ledger, service: str, tip: Tip | None = None) -> list[ApprovalRequest]:
    """Every open request of ``service``, oldest first: reads back only to the oldest one."""
    tip = tip or ledger.tip(service)
    keys = tip.state.approval_requests
    if not keys:
        return []
    records = _since(ledger, service, min(keys.values()), tip)
    found = [_build(service, k, seq, records) for k, seq in keys.items()]
    return sorted(found, key=lambda r: r.opened.seq)


def find_request(
    ledger: Ledger, service: str, environment: str, digest: Digest, tip: Tip | None = None
) -> ApprovalRequest | None:
    """The open request for this digest in this environment, or None."""
    tip = tip or ledger.tip(service)
    key = request_key(environment, digest)
    seq = tip.state.approval_requests.get(key)
    if seq is None:
        return None
    return _build(service, key, seq, _since(ledger, service, seq, tip))


def request_details(
    *,
    policy: ApprovalPolicy,
    deadline: dt.datetime,
    flow_run_id: str,
    requested_by: str | None,
    commit_author: str | None,
    continues: int | None = None,
) -> dict[str, Any]:
    """``details`` of an ``approval_requested`` record."""
    details: dict[str, Any] = {
        "deadline": deadline.isoformat(),
        "approvers": list(policy.approvers),
        "min_approvals": policy.min_approvals,
        "allow_self_approval": policy.allow_self_approval,
        "flow_run_id": flow_run_id,
        "requested_by": requested_by,
        "commit_author": commit_author,
    }
    if continues is not None:
        details["continues"] = continues
    return details


def answer_details(
    decision: Decision,
    verdict: Verdict,
    source: Source,
    flow_run_id: str | None,
    input_key: str | None = None,
) -> dict[str, Any]:
    """``details`` of an ``approval`` record."""
    details: dict[str, Any] = {
        "decision": decision.decision,
        "counted": verdict.accepted,
        "why": verdict.why,
        "source": source,
        "flow_run_id": flow_run_id,
    }
    if input_key is not None:
        details["input_key"] = input_key
    return details


def record_answer(
    ledger: Ledger,
    request: ApprovalRequest,
    decision: Decision,
    verdict: Verdict,
    source: Source,
    flow_run_id: str | None,
    *,
    version: str | None,
    idempotency_id: str,
    input_key: str | None = None,
) -> LedgerRecord:
    """Append the ``approval`` record of one answer to ``request`` (counted or refused, and why).

    ``idempotency_id`` makes a retried append (or a re-entered run reading the same form) write
    the answer once; each writer derives it from what identifies the answer on its side.
    """
    return ledger.append(
        request.service,
        "approval",
        request.digest,
        actor=decision.approver,
        environment=request.environment,
        version=version,
        reason=decision.reason,
        details=answer_details(decision, verdict, source, flow_run_id, input_key=input_key),
        idempotency_id=idempotency_id,
    )


def may_still_approve(tally: Tally) -> list[str]:
    """Approvers whose approval would count now (not yet counted, not barred from self-approval)."""
    barred = set() if tally.policy.allow_self_approval else {tally.commit_author, tally.requested_by}
    return [a for a in tally.policy.approvers if a not in tally.approved_by and a not in barred]


def still_needed(tally: Tally) -> str:
    """E.g. ``1 more needed from any of bob, carol``."""
    eligible = may_still_approve(tally)
    who = ", ".join(eligible) if eligible else "nobody (too few eligible approvers left)"
    return f"{tally.needed} more needed from any of {who}"


def describe_verdict(decision: Decision, verdict: Verdict, tally: Tally) -> str:
    """What happened to a decision, judged against the request's tally (``tally`` includes it)."""
    if not verdict.accepted:
        return f"refused: {verdict.why}"
    if tally.outcome == "rejected":
        return "counted: the promotion is rejected"
    counted = f"{len(tally.approved_by)} of {tally.policy.min_approvals}"
    if tally.outcome == "approved":
        return f"counted ({counted}): approved, the run goes on to deploy"
    return f"counted ({counted}; {still_needed(tally)})"


def ui_link(flow_run_id: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The Prefect UI page of a run: ``PREFECT_UI_URL``, else ``PREFECT_API_URL`` without ``/api``.

    Read from the environment, not from Prefect's settings: ``promote pending`` does not import
    Prefect (seconds of start-up) for a link.
    """
    env = os.environ if environ is None else environ
    if not flow_run_id:
        return None
    base = env.get("PREFECT_UI_URL", "").rstrip("/")
    if not base:
        api = env.get("PREFECT_API_URL", "").rstrip("/")
        if not api:
            return None
        base = api.removesuffix("/api")
    from promotion.prefect_api import without_credentials  # pure; Prefect is not imported

    # PREFECT_API_URL may carry the server's basic-auth credential: never print it.
    return without_credentials(f"{base}/runs/flow-run/{flow_run_id}")


def pending_rows(
    pipeline: Pipeline,
    ledger: Ledger,
    services: Sequence[str],
    environment: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """``promote pending``: every open request of ``services`` (in ``environment``), oldest first."""
    rows: list[dict[str, Any]] = []
    for service in services:
        for req in open_requests(ledger, service):
            if environment is not None and req.environment != environment:
                continue
            env = next((e for e in pipeline.environments if e.name == req.environment), None)
            policy = env.approval if env is not None else None
            decisions: list[dict[str, Any]] = []
            tally = req.tally(policy) if policy is not None else None
            judged = req.decisions(policy) if policy is not None else []
            for answer, (_, counted, why) in zip(req.answers, judged, strict=True):
                decisions.append(
                    {
                        "approver": answer.decision.approver,
                        "decision": answer.decision.decision,
                        "reason": answer.decision.reason,
                        "counted": counted,
                        "why": why,
                        "at": answer.at.isoformat(),
                        "seq": answer.seq,
                    }
                )
            rows.append(
                {
                    "service": req.service,
                    "environment": req.environment,
                    "digest": str(req.digest),
                    "version": req.version,
                    "since": req.since.isoformat(),
                    "deadline": req.deadline.isoformat(),
                    "requested_by": req.requested_by,
                    "approvals": (
                        f"{len(tally.approved_by)} of {tally.policy.min_approvals}"
                        if tally is not None
                        else "environment no longer needs approval"
                    ),
                    "decisions": decisions,
                    "may_still_approve": may_still_approve(tally) if tally is not None else [],
                    "flow_run_id": req.flow_run_id,
                    "ui_url": ui_link(req.flow_run_id, environ),
                    "request_seq": req.opened.seq,
                }
            )
    return rows
