"""Evidence that arrived after a promotion: re-evaluate the environment's evidence gates.

A digest running in an environment that has evidence attested since it was promoted there (a
nightly re-scan with a newer vulnerability database, a long integration suite) has that
environment's evidence gates evaluated again, through :func:`promotion.evaluate.evaluate_stage`
(the one evaluation path, which reads the newest evidence). A gate that now fails flags the digest
(a ``flagged`` ledger event, written by :func:`promotion.sweep.verify.flag_findings` like every
other flag) with the gate's reason. This is done every night while such evidence exists, not only
the first night after it arrived: a sweep that failed half-way must not lose it, and it costs one
evaluation per environment at most. An infrastructure error (S3 down while the evidence is read)
is reported, never a flag; a report still awaited within a gate's ``wait_for`` is not a failure.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from promotion.config import Pipeline
from promotion.errors import InfrastructureError, PromotionError
from promotion.evaluate import evaluate_stage
from promotion.gate_registry import gate_kind
from promotion.models import LedgerState
from promotion.store import ArtifactStore
from promotion.sweep.records import ArtifactRecords
from promotion.sweep.report import Check


def reevaluate_attested(
    store: ArtifactStore,
    pipeline: Pipeline,
    state: LedgerState,
    records: ArtifactRecords,
    now: dt.datetime,
    checks: Sequence[Check],
) -> list[Check]:
    """One check per environment whose digest has evidence attested since it was promoted there.

    Digests this sweep already flags (``checks``) are left alone: one flag per digest and night.
    """
    flagging = {str(c.digest) for c in checks if c.flag_reason}
    names = pipeline.environment_names
    out: list[Check] = []
    for i, env in enumerate(pipeline.environments):
        cur = state.environments.get(env.name)
        if cur is None or str(cur.digest) in flagging or str(cur.digest) in state.flagged:
            continue
        attested = state.attested.get(str(cur.digest), {})
        if max(attested.values(), default=0) <= cur.seq:
            continue  # nothing attested since it was promoted (or rolled back) there
        evidence_gates = {g.name or g.kind for g in env.gates if gate_kind(g.kind).evidence}
        if not evidence_gates:
            continue
        roles = [f"runs in {env.name}"]
        try:
            artifact = records.get(cur.digest)
            if artifact is None:
                continue  # the re-check reports a digest without a record
            prev = names[i - 1] if i else None
            gates = evaluate_stage(store, env, artifact, None, now, previous_env=prev, ledger_state=state)
        except (InfrastructureError, PromotionError) as exc:
            why = f"{type(exc).__name__}: {exc}"
            detail = f"evidence attested since it was promoted to {env.name} not re-evaluated: {why}"
            out.append(Check(digest=cur.digest, roles=roles, outcome="error", detail=detail))
            continue
        failed = [r for r in gates.hard if r.gate in evidence_gates]
        if not failed:
            detail = f"evidence attested since it was promoted to {env.name}: its evidence gates pass"
            out.append(Check(digest=cur.digest, roles=roles, outcome="ok", detail=detail))
            continue
        reason = f"evidence attested since it was promoted to {env.name} fails: " + " | ".join(
            f"{r.gate}: {'; '.join(r.reasons)}" for r in failed
        )
        out.append(
            Check(digest=cur.digest, roles=roles, outcome="gate_failed", detail=reason, flag_reason=reason)
        )
        flagging.add(str(cur.digest))
    return out
