"""What a promotion would do, stage by stage, without changing anything (``promote plan``).

Also the rule for where a pipeline run starts: after the furthest environment the digest has
already reached.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

from promotion.config import Environment, Pipeline, SoakGate, WindowGate
from promotion.digest import Digest
from promotion.evaluate import MAX_EVIDENCE_BYTES, GateContext, evaluate, pre_deploy_gates
from promotion.gates import GateResult, next_opening
from promotion.models import ArtifactRecord, EnvState, LedgerState, utcnow
from promotion.store import ArtifactStore

TIME_GATES = frozenset({"soak", "window"})
Action = Literal["promote", "await_approval", "wait", "blocked", "not_reached"]


def remaining_environments(
    pipeline: Pipeline, state: LedgerState, digest: Digest, to: str | None = None
) -> tuple[str | None, list[Environment]]:
    """The furthest environment the digest reached (or None) and the stages still ahead, up to ``to``."""
    names = pipeline.environment_names
    stop = names.index(pipeline.environment(to).name) if to else len(names) - 1
    reached = -1
    for i, name in enumerate(names):
        cur = state.environments.get(name)
        if cur is not None and cur.digest == digest:
            reached = i
    return (names[reached] if reached >= 0 else None), pipeline.environments[reached + 1 : stop + 1]


def previous_environment(pipeline: Pipeline, env: str) -> str | None:
    names = pipeline.environment_names
    i = names.index(env)
    return names[i - 1] if i > 0 else None


@dataclass
class StagePlan:
    environment: str
    action: Action
    gates: list[GateResult] = field(default_factory=list)
    approval: str | None = None
    earliest: dt.datetime | None = None
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "action": self.action,
            "earliest": self.earliest.isoformat() if self.earliest else None,
            "approval": self.approval,
            "reasons": self.reasons,
            "gates": [r.model_dump(mode="json") for r in self.gates],
        }


@dataclass
class Plan:
    service: str
    digest: Digest
    version: str | None
    reached: str | None
    stages: list[StagePlan]
    now: dt.datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "digest": str(self.digest),
            "version": self.version,
            "reached": self.reached,
            "now": self.now.isoformat(),
            "stages": [s.as_dict() for s in self.stages],
        }

    def summary(self) -> str:
        if not self.stages:
            return f"{self.digest.short} is already in {self.reached}: nothing to do"
        parts = []
        for s in self.stages:
            when = f" at {s.earliest:%Y-%m-%d %H:%M}Z" if s.earliest and s.action == "wait" else ""
            parts.append(f"{s.environment}: {s.action.replace('_', ' ')}{when}")
        return "; ".join(parts)


def _approval_text(env: Environment) -> str | None:
    if env.approval is None:
        return None
    a = env.approval
    return f"{a.min_approvals} of {', '.join(a.approvers)} (timeout {a.timeout})"


def _earliest(env: Environment, previous: EnvState | None, digest: Digest, now: dt.datetime) -> dt.datetime:
    """The first moment every time gate of ``env`` passes, given what runs in the previous stage."""
    t = now
    for _ in range(8):  # soak and windows can push each other; a few rounds settle it
        moved = False
        for gate in env.gates:
            if isinstance(gate, SoakGate) and previous is not None and previous.digest == digest:
                met = previous.since + gate.min_duration
                if met > t:
                    t, moved = met, True
            if isinstance(gate, WindowGate):
                opening = next_opening(gate, t)
                if opening is not None and opening > t:
                    t, moved = opening, True
        if not moved:
            break
    return t


def plan(
    store: ArtifactStore,
    service: str,
    digest: Digest,
    *,
    to: str | None = None,
    now: dt.datetime | None = None,
    artifact: ArtifactRecord | None = None,
) -> Plan:
    """Evaluate every pre-deploy gate of every remaining stage and say what would happen, and when."""
    pipeline = store.pipeline
    pipeline.service(service)
    now = now or utcnow()
    artifact = artifact or store.record(service, digest)
    state = store.ledger.state(service)
    reached, stages = remaining_environments(pipeline, state, digest, to)
    out: list[StagePlan] = []
    blocked = False
    projected = now
    for env in stages:
        if blocked:
            out.append(StagePlan(env.name, "not_reached", reasons=["an earlier stage is blocked"]))
            continue
        prev_name = previous_environment(pipeline, env.name)
        previous = state.environments.get(prev_name) if prev_name else None
        if prev_name and (previous is None or previous.digest != digest):
            # The digest is not there yet: assume it arrives when the previous stage would promote.
            previous = EnvState(digest=digest, version=artifact.version, since=projected, by="(plan)", seq=0)
        ctx = GateContext(
            service=service,
            digest=digest,
            environment=env,
            artifact=artifact,
            previous_env=prev_name,
            previous=previous,
            now=now,
            load_evidence=lambda ref: store.fetch_bytes(ref.digest, max_size=MAX_EVIDENCE_BYTES),
        )
        results = [evaluate(gate, ctx) for gate in pre_deploy_gates(env)]
        hard = [r for r in results if not r.passed and r.kind not in TIME_GATES]
        stage = StagePlan(env.name, "promote", results, approval=_approval_text(env))
        if hard:
            stage.action = "blocked"
            stage.reasons = [f"{r.gate}: {'; '.join(r.reasons)}" for r in hard]
            blocked = True
        else:
            earliest = _earliest(env, previous, digest, projected)
            if earliest > now:
                stage.action, stage.earliest = "wait", earliest
                stage.reasons = [f"{r.gate}: {'; '.join(r.reasons)}" for r in results if not r.passed]
            elif env.approval is not None:
                stage.action = "await_approval"
            projected = max(projected, earliest)
        out.append(stage)
    return Plan(service, digest, artifact.version, reached, out, now)
