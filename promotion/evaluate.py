"""Run a stage's gates against everything they may look at. Pure apart from the evidence loader.

:func:`evaluate_stage` is the one evaluation path: the stage flow (through the gate tasks),
``promote plan`` and the nightly sweep all call it, and read from its :class:`StageGates` which
failures are hard and which only mean "wait", and when waiting ends. What each gate kind does
comes from :mod:`promotion.gate_registry`.

A gate that cannot be evaluated because of its evidence (a malformed report, corrupt bytes)
fails, with the error as its reason. An :class:`~promotion.errors.InfrastructureError` (S3 down
or answering 503 while the evidence is read) is raised instead: it says nothing about the build,
so it must never become a failed gate that the stage would record as a rejection. The gate task
retries it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from promotion.config import Environment, Gate, format_duration
from promotion.digest import Digest
from promotion.errors import InfrastructureError, PromotionError
from promotion.evidence import (
    MAX_EVIDENCE_BYTES as MAX_EVIDENCE_BYTES,  # re-export: evidence over the parsers' limit is not downloaded
)
from promotion.evidence_set import AttachedEvidence, evidence_for, published_evidence
from promotion.gate_registry import gate_kind
from promotion.gates import GateResult
from promotion.models import ArtifactRecord, EnvState, EvidenceRef, LedgerState

if TYPE_CHECKING:
    from promotion.store import ArtifactStore


@dataclass(frozen=True)
class GateContext:
    service: str
    digest: Digest
    environment: Environment
    artifact: ArtifactRecord
    #: The environment before this one in the pipeline, and what runs there now.
    previous_env: str | None
    previous: EnvState | None
    now: dt.datetime
    load_evidence: Callable[[EvidenceRef], bytes]
    #: When the digest left the previous environment (replaced by a newer build); None: still there.
    previous_until: dt.datetime | None = None
    #: The artifact's effective evidence (promotion.evidence_set: publish evidence, then each
    #: attestation); None: only what it was published with.
    evidence: tuple[AttachedEvidence, ...] | None = None

    def attached(self, evidence_kind: str) -> list[AttachedEvidence]:
        """The effective reports of ``evidence_kind``, with when and how each was attached."""
        every = self.evidence if self.evidence is not None else published_evidence(self.artifact)
        return [e for e in every if e.ref.kind == evidence_kind]

    def reports(self, evidence_kind: str) -> list[bytes]:
        """Every effective report of ``evidence_kind`` (the newest of each file, see evidence_set)."""
        return [self.load_evidence(e.ref) for e in self.attached(evidence_kind)]


def gate_context(
    store: ArtifactStore,
    environment: Environment,
    artifact: ArtifactRecord,
    previous_env: str | None,
    previous: EnvState | None,
    now: dt.datetime,
    previous_until: dt.datetime | None = None,
    ledger_state: LedgerState | None = None,
) -> GateContext:
    """The context of a stage's gates; evidence is read from the store by digest (and re-checked).

    The artifact's effective evidence includes what was attested since publish (its ``attested``
    ledger records, found from the service's ledger state ``ledger_state``, read from the
    ledger's tip when not given): the one place every caller (stage flow, plan, sweep) gets it from.
    """
    return GateContext(
        service=artifact.service,
        digest=artifact.digest,
        environment=environment,
        artifact=artifact,
        previous_env=previous_env,
        previous=previous,
        now=now,
        load_evidence=lambda ref: store.fetch_bytes(ref.digest, max_size=MAX_EVIDENCE_BYTES),
        previous_until=previous_until,
        evidence=tuple(evidence_for(store.ledger, artifact, ledger_state)),
    )


def evaluate(gate: Gate, ctx: GateContext) -> GateResult:
    """Evaluate a pre-deploy gate. Live gates (http, prometheus) run after deploy instead.

    Raises :class:`InfrastructureError` (not a verdict); every other error fails the gate.
    """
    try:
        result = _dispatch(gate, ctx)
        evidence = gate_kind(gate.kind).evidence
        if evidence is None:
            return result
        return result.model_copy(update={"evidence": [e.describe() for e in ctx.attached(evidence)]})
    except InfrastructureError:
        raise
    except PromotionError as exc:
        return errored(gate.name or gate.kind, gate.kind, f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # noqa: BLE001 - a gate must fail, never crash the flow
        return errored(gate.name or gate.kind, gate.kind, f"unexpected error: {type(exc).__name__}: {exc}")


def errored(name: str, kind: str, reason: str) -> GateResult:
    return GateResult(
        gate=name, kind=kind, passed=False, measured={}, thresholds={}, reasons=[reason], errored=True
    )


@dataclass(frozen=True)
class EvidenceExpiry:
    """An evidence gate's evidence is older than its ``max_age``."""

    evidence: str
    age: dt.timedelta
    max_age: dt.timedelta
    #: How the oldest report arrived: ``published`` or ``attested``.
    how: str = "published"


def evidence_expiry(
    gate: Gate,
    artifact: ArtifactRecord,
    now: dt.datetime,
    evidence_set: Sequence[AttachedEvidence] | None = None,
) -> EvidenceExpiry | None:
    """Whether ``gate`` reads evidence whose ``max_age`` has passed (the one expiry rule).

    The age is the oldest effective report's of the gate's kind, counted from when it was
    attached (publish or attest: a re-scan attested today is fresh); with no report of the
    kind, from the publish.
    """
    evidence = gate_kind(gate.kind).evidence
    if evidence is None or gate.max_age is None:
        return None
    every = evidence_set if evidence_set is not None else published_evidence(artifact)
    reports = [e for e in every if e.ref.kind == evidence]
    oldest = min(reports, key=lambda e: e.attached_at, default=None)
    since = oldest.attached_at if oldest is not None else artifact.created_at
    how = "attested" if oldest is not None and oldest.seq is not None else "published"
    age = now - since
    return EvidenceExpiry(evidence, age, gate.max_age, how) if age > gate.max_age else None


#: ``measured["evidence"]`` of a gate whose report has not arrived and whose ``wait_for`` runs
#: (shown to people; :attr:`GateResult.waiting_until` is what tells "wait" from "no").
EVIDENCE_NOT_YET = "none attached yet"


@dataclass(frozen=True)
class EvidenceWait:
    """An evidence gate's ``wait_for``: until ``deadline`` a missing report means "wait"."""

    evidence: str
    wait_for: dt.timedelta
    deadline: dt.datetime


def evidence_wait(gate: Gate, artifact: ArtifactRecord) -> EvidenceWait | None:
    """The wait an evidence gate declares, counted from the moment the artifact was published."""
    evidence = gate_kind(gate.kind).evidence
    if evidence is None or gate.wait_for is None:
        return None
    return EvidenceWait(evidence, gate.wait_for, artifact.created_at + gate.wait_for)


def _utc_text(t: dt.datetime) -> str:
    return f"{t.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC"


def _missing_evidence(gate: Gate, wait: EvidenceWait, now: dt.datetime) -> GateResult:
    """No report of the kind the gate reads: waiting within ``wait_for``, a hard failure after."""
    within = now <= wait.deadline
    if within:
        reason = f"waiting for {wait.evidence} evidence until {_utc_text(wait.deadline)}: none attached yet"
    else:
        reason = (
            f"no {wait.evidence} evidence attached within {format_duration(wait.wait_for)} of publish "
            f"(deadline {_utc_text(wait.deadline)})"
        )
    return GateResult(
        gate=gate.name or gate.kind,
        kind=gate.kind,
        passed=False,
        measured={"evidence": EVIDENCE_NOT_YET if within else "none attached"},
        thresholds={"wait_for": format_duration(wait.wait_for), "deadline": wait.deadline.isoformat()},
        reasons=[reason],
        waiting_until=wait.deadline if within else None,
    )


def _dispatch(gate: Gate, ctx: GateContext) -> GateResult:
    kind = gate_kind(gate.kind)
    wait = evidence_wait(gate, ctx.artifact)
    if wait is not None:
        # Each report is read once: the presence check's bytes are the ones the evaluator gets.
        loaded: dict[str, bytes] = {}
        load = ctx.load_evidence

        def load_once(ref: EvidenceRef) -> bytes:
            key = str(ref.digest)
            if key not in loaded:
                loaded[key] = load(ref)
            return loaded[key]

        ctx = replace(ctx, load_evidence=load_once)
        if not ctx.reports(wait.evidence):
            return _missing_evidence(gate, wait, ctx.now)
    expired = evidence_expiry(gate, ctx.artifact, ctx.now, ctx.evidence)
    if expired is not None:
        return GateResult(
            gate=gate.name or gate.kind,
            kind=gate.kind,
            passed=False,
            measured={"evidence_age": format_duration(expired.age)},
            thresholds={"max_age": format_duration(expired.max_age)},
            reasons=[
                f"evidence expired: {expired.evidence} {expired.how} {format_duration(expired.age)} ago "
                f"(max_age {format_duration(expired.max_age)}); re-run the check and publish again"
            ],
        )
    if kind.evaluate is None:
        return errored(
            gate.name or gate.kind, gate.kind, f"{gate.kind} is a live check: it runs after deploy"
        )
    return kind.evaluate(gate, ctx)


def pre_deploy_gates(env: Environment) -> list[Gate]:
    return [gate for gate in env.gates if not gate_kind(gate.kind).live]


def live_gates(env: Environment) -> list[Gate]:
    return [gate for gate in env.gates if gate_kind(gate.kind).live]


def check_live(gate: Gate) -> GateResult:
    """Run a live gate's check against the running environment (after deploy)."""
    check = gate_kind(gate.kind).live_check
    if check is None:
        raise ValueError(f"{gate.kind} is not a live check: it runs before deploy")
    return check(gate)


#: How a stage's gates are run: in turn (the default), or as concurrent Prefect tasks (the flow).
GateRunner = Callable[[Sequence[Gate], GateContext], list[GateResult]]


def _in_turn(gates: Sequence[Gate], ctx: GateContext) -> list[GateResult]:
    return [evaluate(gate, ctx) for gate in gates]


@dataclass(frozen=True)
class StageGates:
    """The verdicts of a stage's pre-deploy gates, and what they mean together."""

    context: GateContext
    results: list[GateResult]

    @property
    def failing(self) -> list[GateResult]:
        return [r for r in self.results if not r.passed]

    @property
    def hard(self) -> list[GateResult]:
        """Failures waiting cannot end: every failure except a time gate's "not yet" and a
        missing report within its gate's ``wait_for``.

        A soak that stopped (the digest left the previous environment) can never be met by
        waiting, so it is hard too.
        """
        return [r for r in self.failing if not self._waitable(r)]

    @property
    def waiting(self) -> list[GateResult]:
        """Failures waiting can end: time gates that pass by themselves later (see :meth:`ready_at`)
        and evidence gates whose report may still arrive within ``wait_for``."""
        return [r for r in self.failing if self._waitable(r)]

    @property
    def waiting_for_evidence(self) -> list[GateResult]:
        """Failures that only mean "the report has not arrived yet" (an evidence gate's ``wait_for``)."""
        return [r for r in self.failing if r.waiting_until is not None]

    @property
    def evidence_deadline(self) -> dt.datetime | None:
        """Until when the stage waits for evidence: the latest ``wait_for`` deadline still running."""
        return max((r.waiting_until for r in self.waiting_for_evidence if r.waiting_until), default=None)

    def _waitable(self, result: GateResult) -> bool:
        if result.waiting_until is not None:
            return True  # arriving evidence ends it; the nightly sweep or an attest re-plans it
        kind = gate_kind(result.kind)
        if not kind.time_based:
            return False
        return not (kind.ends_with_previous_stay and self.context.previous_until is not None)

    def ready_at(self, start: dt.datetime) -> dt.datetime:
        """The first moment at or after ``start`` at which every time gate of the stage passes."""
        t = start
        for _ in range(8):  # soak and windows can push each other; a few rounds settle it
            moved = False
            for gate in self.context.environment.gates:
                ready = gate_kind(gate.kind).ready_at
                at = ready(gate, self.context, t) if ready is not None else None
                if at is not None and at > t:
                    t, moved = at, True
            if not moved:
                break
        return t


def evaluate_stage(
    store: ArtifactStore,
    environment: Environment,
    artifact: ArtifactRecord,
    previous: EnvState | None,
    now: dt.datetime,
    *,
    previous_env: str | None,
    previous_until: dt.datetime | None = None,
    run_gates: GateRunner = _in_turn,
    ledger_state: LedgerState | None = None,
) -> StageGates:
    """Evaluate every pre-deploy gate of ``environment`` for ``artifact``: the one evaluation path.

    ``previous`` is the digest's stay in ``previous_env`` (what soak measures), ``previous_until``
    when it left there; ``ledger_state`` the service's, if the caller has it (else read from the
    tip). Raises :class:`InfrastructureError` when the evidence cannot be read.
    """
    ctx = gate_context(
        store, environment, artifact, previous_env, previous, now, previous_until, ledger_state
    )
    return StageGates(ctx, run_gates(pre_deploy_gates(environment), ctx))
