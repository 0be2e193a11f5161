"""The re-check: every digest an environment runs (and a first-stage candidate) re-hashed in full.

A corrupted one, or one whose evidence expired (``max_age`` on an evidence gate of an environment
it runs in), is recorded as a ``flagged`` ledger event and never promoted again.
"""

from __future__ import annotations

import datetime as dt

from promotion.config import Environment, Pipeline, format_duration
from promotion.digest import Digest
from promotion.errors import ArtifactNotFound, DigestMismatch, PromotionError
from promotion.evaluate import evidence_expiry
from promotion.evidence_set import AttachedEvidence, evidence_for
from promotion.models import ArtifactRecord, LedgerState
from promotion.store import ArtifactStore
from promotion.sweep.records import ArtifactRecords
from promotion.sweep.report import ACTOR, Check


def _roles(pipeline: Pipeline, state: LedgerState) -> dict[str, list[str]]:
    """digest -> why it is re-checked: the environments it runs in, and a first-stage candidate."""
    roles: dict[str, list[str]] = {}
    for name in pipeline.environment_names:
        cur = state.environments.get(name)
        if cur is not None:
            roles.setdefault(str(cur.digest), []).append(f"runs in {name}")
    first = pipeline.environments[0]
    if first.auto_promote and state.latest_published is not None:
        roles.setdefault(str(state.latest_published.digest), []).append("latest published")
    return roles


def _expired(
    env: Environment, artifact: ArtifactRecord, evidence: list[AttachedEvidence], now: dt.datetime
) -> tuple[str, str] | None:
    """(gate, reason) of the first evidence gate of ``env`` whose ``max_age`` has passed."""
    for gate in env.gates:
        expired = evidence_expiry(gate, artifact, now, evidence)
        if expired is not None:
            name = gate.name or gate.kind
            return name, (
                f"evidence expired: {expired.evidence} {expired.how} {format_duration(expired.age)} ago, "
                f"max_age {format_duration(expired.max_age)} on the {name} gate of {env.name}"
            )
    return None


def verify_digests(
    store: ArtifactStore,
    pipeline: Pipeline,
    state: LedgerState,
    records: ArtifactRecords,
    now: dt.datetime,
) -> list[Check]:
    checks: list[Check] = []
    for digest, roles in _roles(pipeline, state).items():
        d = Digest(digest)
        try:
            result = store.verify_full(d)
        except DigestMismatch as exc:
            reason = f"corrupted: expected {exc.expected}, got {exc.actual}"
            checks.append(
                Check(digest=d, roles=roles, outcome="corrupted", detail=reason, flag_reason=reason)
            )
            continue
        except ArtifactNotFound:
            # Reported, not flagged: the bytes are gone, not wrong; a restore from backup fixes it.
            where = f"s3://{store.s3.bucket}/{store.blob_key(d)}"
            checks.append(
                Check(digest=d, roles=roles, outcome="missing", detail=f"the blob {where} does not exist")
            )
            continue
        except PromotionError as exc:
            checks.append(
                Check(digest=d, roles=roles, outcome="error", detail=f"{type(exc).__name__}: {exc}")
            )
            continue
        expired: tuple[str, str] | None = None
        running_in = [
            n for n in pipeline.environment_names if (c := state.environments.get(n)) and c.digest == d
        ]
        if any(g.max_age is not None for n in running_in for g in pipeline.environment(n).gates):
            try:
                artifact = records.get(d)
                # Attested reports count from when they were attached (a fresh re-scan is fresh).
                evidence = evidence_for(store.ledger, artifact, state) if artifact is not None else []
            except PromotionError as exc:
                checks.append(
                    Check(digest=d, roles=roles, outcome="error", detail=f"{type(exc).__name__}: {exc}")
                )
                continue
            if artifact is not None:
                for n in running_in:
                    expired = _expired(pipeline.environment(n), artifact, evidence, now)
                    if expired:
                        break
        if expired is not None:
            checks.append(
                Check(digest=d, roles=roles, outcome="expired", detail=expired[1], flag_reason=expired[1])
            )
        else:
            checks.append(Check(digest=d, roles=roles, outcome="ok", detail=result.detail))
    return checks


def flag_findings(
    store: ArtifactStore, service: str, state: LedgerState, checks: list[Check], *, dry_run: bool
) -> list[Check]:
    """Record each new flag as a ``flagged`` ledger event (unless dry run or already flagged)."""
    out: list[Check] = []
    for c in checks:
        if c.flag_reason is None or dry_run or str(c.digest) in state.flagged:
            out.append(c)
            continue
        version = next((e.version for e in state.environments.values() if e.digest == c.digest), None)
        store.ledger.append(
            service,
            "flagged",
            c.digest,
            actor=ACTOR,
            version=version,
            reason=c.flag_reason,
            details={"check": c.outcome, "roles": c.roles},
            idempotency_id=f"sweep:flagged:{c.digest.hex}",
        )
        out.append(c.model_copy(update={"flagged": True}))
    return out
