"""What a promotion would do, stage by stage, without changing anything (``promote plan``).

Also the rule for where a pipeline run starts: after the furthest environment the digest has
already reached.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

from promotion.config import Environment, Pipeline
from promotion.digest import Digest
from promotion.evaluate import evaluate_stage
from promotion.gates import GateResult
from promotion.models import ArtifactRecord, EnvState, LedgerState, utcnow
from promotion.reach import DigestHistory, digest_history
from promotion.store import ArtifactStore

Action = Literal["promote", "await_approval", "wait", "blocked", "not_reached"]


def remaining_environments(
    pipeline: Pipeline, history: DigestHistory, to: str | None = None
) -> tuple[str | None, list[Environment]]:
    """The furthest environment the digest reached (or None) and the stages still ahead, up to ``to``.

    "Reached" comes from the history (promoted there, not rolled back out), not from what runs
    there now: a digest that passed dev and was then replaced there by a newer build starts at
    staging, and dev is not moved back.
    """
    names = pipeline.environment_names
    stop = names.index(pipeline.environment(to).name) if to else len(names) - 1
    furthest = history.furthest(names)
    start = names.index(furthest) + 1 if furthest else 0
    return furthest, pipeline.environments[start : stop + 1]


def held_back(state: LedgerState, history: DigestHistory, environment: str, aimed_at: str) -> str | None:
    """Why a promotion aimed at ``aimed_at`` must not pass through ``environment`` now, or None.

    A lower environment that runs a newer build is never moved back by a promotion aimed further
    up: that would undo someone else's promotion as a side effect. Aiming at it explicitly
    (``--to``) is a deliberate choice and allowed.
    """
    if environment == aimed_at:
        return None
    current = state.environments.get(environment)
    if current is None or current.digest == history.digest or not history.is_newer(current.digest):
        return None
    return (
        f"{environment} runs {current.digest.short} (version {current.version or 'n/a'}), published after "
        f"{history.digest.short}: a promotion aimed at {aimed_at} never moves {environment} back; promote "
        f"with --to {environment} to move it deliberately"
    )


def previous_stay(
    history: DigestHistory, previous_env: str | None
) -> tuple[EnvState | None, dt.datetime | None]:
    """The digest's stay in the previous environment (what soak measures) and when it left."""
    if previous_env is None:
        return None, None
    stay = history.stays.get(previous_env)
    if stay is None:
        return None, None
    return stay.as_env_state(history.digest), stay.until


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
    #: Set when the stage waits for evidence (an evidence gate's ``wait_for``): until when it waits.
    waits_until: dt.datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "action": self.action,
            "earliest": self.earliest.isoformat() if self.earliest else None,
            "waits_until": self.waits_until.isoformat() if self.waits_until else None,
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
            if s.waits_until and s.action == "wait":
                when = f" for evidence until {s.waits_until:%Y-%m-%d %H:%M}Z"
            parts.append(f"{s.environment}: {s.action.replace('_', ' ')}{when}")
        return "; ".join(parts)


def _approval_text(env: Environment) -> str | None:
    if env.approval is None:
        return None
    a = env.approval
    return f"{a.min_approvals} of {', '.join(a.approvers)} (timeout {a.timeout})"


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
    tip = store.ledger.tip(service)
    state = tip.state
    history = digest_history(store.ledger, service, digest, tip)
    reached, stages = remaining_environments(pipeline, history, to)
    aimed_at = stages[-1].name if stages else ""
    out: list[StagePlan] = []
    blocked = False
    evidence_wait_at = ""
    projected = now
    for env in stages:
        if blocked:
            out.append(StagePlan(env.name, "not_reached", reasons=["an earlier stage is blocked"]))
            continue
        if evidence_wait_at:
            # When the report arrives is unknown, so is when the next stages would start.
            reason = f"an earlier stage ({evidence_wait_at}) waits for evidence"
            out.append(StagePlan(env.name, "not_reached", reasons=[reason]))
            continue
        why_not = held_back(state, history, env.name, aimed_at)
        if why_not:
            out.append(StagePlan(env.name, "blocked", reasons=[why_not]))
            blocked = True
            continue
        prev_name = previous_environment(pipeline, env.name)
        previous, until = previous_stay(history, prev_name)
        if prev_name and previous is None:
            # The digest is not there yet: assume it arrives when the previous stage would promote.
            previous = EnvState(digest=digest, version=artifact.version, since=projected, by="(plan)", seq=0)
        gates = evaluate_stage(
            store, env, artifact, previous, now, previous_env=prev_name, previous_until=until
        )
        results, hard = gates.results, gates.hard
        stage = StagePlan(env.name, "promote", results, approval=_approval_text(env))
        if hard:
            stage.action = "blocked"
            stage.reasons = [f"{r.gate}: {'; '.join(r.reasons)}" for r in hard]
            blocked = True
        elif gates.waiting_for_evidence:
            stage.action, stage.waits_until = "wait", gates.evidence_deadline
            stage.reasons = [f"{r.gate}: {'; '.join(r.reasons)}" for r in results if not r.passed]
            evidence_wait_at = env.name
        else:
            earliest = gates.ready_at(projected)
            if earliest > now:
                stage.action, stage.earliest = "wait", earliest
                stage.reasons = [f"{r.gate}: {'; '.join(r.reasons)}" for r in results if not r.passed]
            elif env.approval is not None:
                stage.action = "await_approval"
            projected = max(projected, earliest)
        out.append(stage)
    return Plan(service, digest, artifact.version, reached, out, now)
