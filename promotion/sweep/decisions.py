"""Per-service promotion decisions: for each ``auto_promote`` environment, promote what has soaked.

The digest of the previous environment (for the first one, the latest published) is proposed when
every pre-deploy gate passes now: ``promote``, or ``open_approval`` when the stage has an approval
policy; else ``skip`` with the reason.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

from promotion.config import Environment, Pipeline
from promotion.errors import InfrastructureError, PromotionError
from promotion.evaluate import evaluate_stage
from promotion.gates import GateResult
from promotion.models import EnvState, LedgerState
from promotion.store import ArtifactStore
from promotion.sweep.index import HistoryIndex
from promotion.sweep.records import ArtifactRecords
from promotion.sweep.report import Check, SweepDecision


def decide_promotions(
    store: ArtifactStore,
    pipeline: Pipeline,
    state: LedgerState,
    index: HistoryIndex,
    records: ArtifactRecords,
    checks: Sequence[Check],
    now: dt.datetime,
    errors: list[str],
) -> list[SweepDecision]:
    """One decision per ``auto_promote`` environment; infrastructure errors go to ``errors``."""
    names = pipeline.environment_names
    flagged = dict(state.flagged)
    # This sweep's findings count now, dry run included: a corrupt digest is never proposed.
    failed = {str(c.digest): c.detail for c in checks if c.outcome != "ok"}
    flagged.update({str(c.digest): c.flag_reason for c in checks if c.flag_reason})
    out: list[SweepDecision] = []
    for i, env in enumerate(pipeline.environments):
        if not env.auto_promote:
            continue
        prev_name = names[i - 1] if i else None
        source = state.environments.get(prev_name) if prev_name else state.latest_published
        if source is None:
            where = f"nothing runs in {prev_name}" if prev_name else "nothing was published yet"
            out.append(SweepDecision(environment=env.name, action="skip", reason=where))
            continue
        d = source.digest
        further = [n for n in names[i + 1 :] if (c := state.environments.get(n)) and c.digest == d]
        if further and not (state.environments.get(env.name) and state.environments[env.name].digest == d):
            decision = SweepDecision(
                environment=env.name, action="skip", reason=f"already in {', '.join(further)}"
            )
        else:
            try:
                decision = _decide_one(
                    store, env, prev_name, source, state, index, records, flagged, failed, now
                )
            except InfrastructureError as exc:
                # S3 failed while the gates read evidence: nothing was learnt about the digest,
                # so no "gate failed" skip (nor anything recorded); the next sweep decides again.
                why = f"{type(exc).__name__}: {exc}"
                errors.append(f"decide {env.name} for {d.short}: {why}")
                decision = SweepDecision(
                    environment=env.name, action="skip", reason=f"not decided (infrastructure): {why}"
                )
        out.append(decision.model_copy(update={"digest": d, "version": source.version}))
    return out


def _decide_one(
    store: ArtifactStore,
    env: Environment,
    prev_name: str | None,
    source: EnvState,
    state: LedgerState,
    index: HistoryIndex,
    records: ArtifactRecords,
    flagged: Mapping[str, str],
    failed: Mapping[str, str],
    now: dt.datetime,
) -> SweepDecision:
    d = source.digest

    def skip(reason: str, gates: list[GateResult] | None = None) -> SweepDecision:
        return SweepDecision(environment=env.name, action="skip", reason=reason, gates=gates or [])

    current = state.environments.get(env.name)
    if current is not None and current.digest == d:
        return skip(f"already there (since {current.since:%Y-%m-%d %H:%M}Z)")
    if str(d) in flagged:
        return skip(f"flagged: {flagged[str(d)]}")
    if str(d) in failed:
        return skip(f"failed its re-check: {failed[str(d)]}")
    refused = index.refused.get(env.name, {}).get(str(d))
    if refused:
        return skip(f"{refused}; promote it by hand to try again")
    try:
        artifact = records.get(d)
        mine = records.get(current.digest) if current is not None else None
    except PromotionError as exc:
        return skip(f"artifact record unreadable: {exc}")
    if artifact is None:
        return skip(f"no artifact record for {d.short}: the publish did not complete")
    if current is not None and mine is not None and mine.created_at > artifact.created_at:
        return skip(
            f"{env.name} runs {current.digest.short}, published after this one: the sweep never moves an "
            "environment back (roll back by hand)"
        )
    gates = evaluate_stage(
        store, env, artifact, source if prev_name else None, now, previous_env=prev_name, ledger_state=state
    )
    results, failing, hard = gates.results, gates.failing, gates.hard
    if hard:
        return skip("gate failed: " + " | ".join(f"{r.gate}: {'; '.join(r.reasons)}" for r in hard), results)
    if failing:
        return skip("not yet: " + " | ".join(f"{r.gate}: {'; '.join(r.reasons)}" for r in failing), results)
    what = "every gate passes" if results else "no pre-deploy gates"
    if env.approval is not None:
        a = env.approval
        return SweepDecision(
            environment=env.name,
            action="open_approval",
            reason=f"{what}; needs {a.min_approvals} approval(s) of {', '.join(a.approvers)}",
            gates=results,
        )
    return SweepDecision(environment=env.name, action="promote", reason=what, gates=results)
