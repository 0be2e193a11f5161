"""What an attest resumes: the stages that were waiting for the evidence it attached (``wait_for``).

``promote attest`` says so and what happens next; it does not start the promotion itself. Attest
is what a CI job runs with S3 credentials only (it never imports Prefect): starting a pipeline run
from it would make a successful attest depend on Prefect being reachable, and would turn "attach a
report" into "promote", which is the pipeline run's decision (under its lock, with its approvals).
The two promotion paths resume the stage instead: the nightly sweep in an ``auto_promote``
environment (it re-evaluates the waiting stage every night), and ``promote run`` (the exact command
is printed).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from promotion.evaluate import evidence_wait
from promotion.evidence_set import evidence_for
from promotion.plan import StagePlan, plan

if TYPE_CHECKING:
    from promotion.store import ArtifactStore, AttestResult


@dataclass(frozen=True)
class Resumption:
    """A stage that was waiting for evidence this attest attached, and what happens to it now."""

    environment: str
    #: The evidence kinds it was waiting for that arrived.
    evidence: tuple[str, ...]
    #: What ``promote plan`` says of the stage now (promote, await_approval, wait, blocked...).
    action: str
    #: The next step, as a sentence.
    next_step: str

    def line(self) -> str:
        return f"{self.environment} was waiting for {', '.join(self.evidence)} evidence: {self.next_step}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "evidence": list(self.evidence),
            "action": self.action,
            "next_step": self.next_step,
        }


def resumed_by(
    store: ArtifactStore, attested: AttestResult, now: dt.datetime | None = None
) -> list[Resumption]:
    """The stages that were waiting for the reports ``attested`` attached, re-planned at ``now``.

    A stage was waiting for kind K when one of its gates declares ``wait_for``, reads K, the
    attest came before that gate's deadline, and every effective report of K is one this attest
    attached (before it there was none: a present report is judged, never waited for).
    """
    event = attested.event
    if event is None:
        return []
    record = attested.record
    service, digest = record.service, record.digest
    effective = evidence_for(store.ledger, record)
    arrived = {
        ref.kind
        for ref in attested.attached
        if all(e.seq == event.seq for e in effective if e.ref.kind == ref.kind)
    }
    if not arrived:
        return []
    p = plan(store, service, digest, now=now or event.at, artifact=record)
    out: list[Resumption] = []
    for stage in p.stages:
        env = store.pipeline.environment(stage.environment)
        waited = sorted(
            {
                w.evidence
                for gate in env.gates
                if (w := evidence_wait(gate, record)) is not None
                and w.evidence in arrived
                and event.at <= w.deadline
            }
        )
        if waited:
            out.append(
                Resumption(
                    env.name,
                    tuple(waited),
                    stage.action,
                    _next_step(stage, env.auto_promote, service, str(digest)),
                )
            )
    return out


def _next_step(stage: StagePlan, auto_promote: bool, service: str, digest: str) -> str:
    command = f"promote run {service} {digest}"
    reasons = "; ".join(stage.reasons)
    if stage.action in ("promote", "await_approval"):
        then = " (then it waits for approval)" if stage.action == "await_approval" else ""
        if auto_promote:
            return (
                f"its gates pass now; the nightly sweep promotes it at its next run{then}, or now: {command}"
            )
        return f"its gates pass now; continue the promotion with: {command}{then}"
    if stage.action == "wait" and stage.waits_until is not None:
        return f"it still waits for evidence until {stage.waits_until:%Y-%m-%d %H:%M}Z: {reasons}"
    if stage.action == "wait" and stage.earliest is not None:
        return f"its gates pass from {stage.earliest:%Y-%m-%d %H:%M}Z: {reasons}"
    if stage.action == "blocked":
        return f"its gates fail now: {reasons}"
    return f"not reached yet: {reasons}"
