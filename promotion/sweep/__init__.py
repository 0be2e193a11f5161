"""The nightly sweep, without Prefect: what to promote, what drifted, what rotted, what may go.

Per service (:func:`sweep_service`), in this order:

1. **State** from the ledger's last record (:meth:`Ledger.tip`: 3 requests whatever its length).
2. **History index**: what the sweep remembers of the ledger (every digest an environment ever
   ran, rejections and rollbacks, publish times and evidence), stored at
   ``{prefix}sweep/index/{service}.json`` together with the sequence number and hash of the last
   record it folded in. Each night only the records appended since are read, and they must chain
   onto that hash; otherwise the index is rebuilt from the whole ledger (and the report says so).
   It is a cache derived from the ledger, never a source of truth: deleting it costs one full read.
3. **Re-verify**: every digest an environment runs, and a first-stage candidate, is re-hashed in
   full. A corrupted one is recorded as a ``flagged`` ledger event (never promoted again); so is
   one whose evidence expired (``max_age`` on an evidence gate of an environment it runs in).
4. **Drift**: an environment's copy (``target.copy_to``) is compared with the ledger's digest.
5. **Decisions**: for each environment with ``auto_promote``, the digest of the previous
   environment (for the first one, the latest published) is proposed when every pre-deploy gate
   passes now: ``promote``, or ``open_approval`` when the stage has an approval policy; else
   ``skip`` with the reason.

Across services (:func:`run_retention`): blobs under ``{prefix}blobs/sha256/`` that nothing
references and that are older than ``sweep.retention`` are listed, and deleted only with
``apply``. Referenced means: running in an environment, the latest published, every digest an
environment ever ran (a rollback may return to it), digests with approval decisions, and the
evidence of all of these and of every artifact young enough to keep. When anything is unclear (a
ledger that cannot be read, artifacts of a service without a ledger), nothing is deleted.

Dry run reads only: no ledger writes, no index writes, no copies, no deletes.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from promotion.config import CopyTarget, Environment, Pipeline, format_duration
from promotion.deploy import (
    DeployError,
    KeyTemplateError,
    copy_to_target,
    read_target_digest,
    target_key,
    verify_target,
)
from promotion.digest import Digest
from promotion.errors import (
    ArtifactNotFound,
    BucketNotFound,
    DigestMismatch,
    InfrastructureError,
    InvalidDigest,
    PromotionError,
)
from promotion.evaluate import evaluate_stage, evidence_expiry
from promotion.gates import GateResult
from promotion.ledger import Tip
from promotion.models import ArtifactRecord, EnvState, LedgerRecord, LedgerState, utcnow
from promotion.s3 import S3
from promotion.store import ArtifactStore

#: Who the sweep acts as in the ledger and in the pipeline runs it starts.
ACTOR = "nightly-sweep"
#: Blobs younger than this are never deleted, whatever ``sweep.retention`` says: a publish uploads
#: the blob before it writes the ledger event that references it.
MIN_RETENTION = dt.timedelta(hours=1)

DecisionAction = Literal["promote", "open_approval", "skip"]
CheckOutcome = Literal["ok", "corrupted", "missing", "expired", "error"]
DriftAction = Literal["report", "correct", "corrected", "correction_failed"]
BlobAction = Literal["would_delete", "deleted", "delete_failed"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- the report -----------------------------------------------------------------------------------


class Decision(_Model):
    """What the sweep proposes for one ``auto_promote`` environment, and why."""

    environment: str
    digest: Digest | None = None
    version: str | None = None
    action: DecisionAction
    reason: str
    gates: list[GateResult] = Field(default_factory=list)


class Check(_Model):
    """The re-check of one digest: full re-hash of its blob, and the age of its evidence."""

    digest: Digest
    #: Why it was checked: ``runs in dev``, ``latest published``...
    roles: list[str]
    outcome: CheckOutcome
    detail: str
    #: The reason this finding flags the digest with (None: it does not flag it).
    flag_reason: str | None = None
    #: A ``flagged`` ledger event was written by this sweep (False in dry run or if already flagged).
    flagged: bool = False


class DriftFinding(_Model):
    """An environment whose copy does not hold what the ledger says it runs."""

    environment: str
    expected: Digest | None
    actual: Digest | None
    version: str | None = None
    location: str
    detail: str
    on_drift: Literal["report", "correct"]
    action: DriftAction


class PublishedRef(_Model):
    """When a digest was last published for a service, and its evidence blobs."""

    at: dt.datetime
    #: None: the ledger event did not list them; the artifact record is read once to fill them in.
    evidence: list[Digest] | None = None


class ServiceRefs(_Model):
    """What retention needs to know about one service's artifacts."""

    seq: int = 0
    #: digest -> why its blob must be kept.
    referenced: dict[str, str] = Field(default_factory=dict)
    published: dict[str, PublishedRef] = Field(default_factory=dict)
    #: False when the history could not be read in full: retention then deletes nothing.
    complete: bool = True
    note: str = ""


class ServiceReport(_Model):
    """Everything the sweep found and decided for one service."""

    service: str
    now: dt.datetime
    dry_run: bool
    ledger_seq: int = 0
    index: str = ""
    checks: list[Check] = Field(default_factory=list)
    drift: list[DriftFinding] = Field(default_factory=list)
    decisions: list[Decision] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)
    refs: ServiceRefs = Field(default_factory=ServiceRefs)

    @property
    def newly_flagged(self) -> list[Check]:
        """The findings this sweep recorded as ``flagged`` ledger events."""
        return [c for c in self.checks if c.flagged]


class BlobVerdict(_Model):
    """A blob retention would delete (or deleted), and why it may go."""

    key: str
    digest: str
    size: int
    last_modified: dt.datetime
    action: BlobAction
    reason: str


class RetentionReport(_Model):
    """Blobs nothing references and older than the retention: listed, deleted only with apply."""

    configured: bool
    retention: dt.timedelta | None = None
    now: dt.datetime
    apply: bool = False
    scanned: int = 0
    kept: int = 0
    kept_by_reason: dict[str, int] = Field(default_factory=dict)
    #: Unreferenced blobs older than the retention (action would_delete, deleted or delete_failed).
    candidates: list[BlobVerdict] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    @property
    def deleted(self) -> list[BlobVerdict]:
        """The blobs actually deleted (only with apply)."""
        return [c for c in self.candidates if c.action == "deleted"]


class RunRequest(_Model):
    """A pipeline run the sweep starts through the deployment (one per promote/open_approval)."""

    service: str
    environment: str
    digest: Digest
    action: DecisionAction
    deployment: str
    parameters: dict[str, Any]
    idempotency_key: str
    #: Filled in by whoever starts it: ``started``, ``already open``, ``failed``,
    #: ``not started (dry run)``.
    outcome: str = ""
    flow_run_id: str | None = None
    detail: str = ""


class SweepReport(_Model):
    """The whole night: one report per service, retention, and the runs started."""

    now: dt.datetime
    date: str
    dry_run: bool
    apply_retention: bool
    services: list[ServiceReport]
    retention: RetentionReport
    runs: list[RunRequest] = Field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        """What the sweep could not do (findings such as drift or corruption are not errors)."""
        out: list[str] = []
        for s in self.services:
            out += [f"{s.service}: {e}" for e in s.errors]
            out += [
                f"{s.service}: re-check of {c.digest}: {c.detail}" for c in s.checks if c.outcome == "error"
            ]
            out += [
                f"{s.service} {d.environment}: {d.detail}" for d in s.drift if d.action == "correction_failed"
            ]
        out += [f"{r.service} → {r.environment}: {r.detail}" for r in self.runs if r.outcome == "failed"]
        out += [
            f"retention: {v.key}: {v.reason}"
            for v in self.retention.candidates
            if v.action == "delete_failed"
        ]
        return out

    def rows(self) -> list[dict[str, str]]:
        """One row per action and finding, for a table artifact (no secrets: none are read)."""
        runs = {(r.service, r.environment): r for r in self.runs}
        rows: list[dict[str, str]] = []

        def row(service: str, kind: str, env: str, digest: str | None, action: str, reason: str) -> None:
            rows.append(
                {
                    "service": service,
                    "kind": kind,
                    "environment": env,
                    "digest": str(digest or ""),
                    "action": action,
                    "reason": reason,
                }
            )

        for s in self.services:
            for e in s.errors:
                row(s.service, "error", "", None, "error", e)
            for c in s.checks:
                if c.outcome != "ok":
                    act = "flagged" if c.flagged else ("flag" if c.flag_reason else "report")
                    row(s.service, f"verify ({c.outcome})", ", ".join(c.roles), c.digest, act, c.detail)
            for f in s.drift:
                row(s.service, "drift", f.environment, f.expected, f.action, f.detail)
            for d in s.decisions:
                reason = d.reason
                r = runs.get((s.service, d.environment))
                if r is not None and d.action != "skip":
                    reason += f" | run {r.outcome}" + (f" {r.flow_run_id}" if r.flow_run_id else "")
                    reason += f": {r.detail}" if r.detail else ""
                row(s.service, "promotion", d.environment, d.digest, d.action, reason)
        ret = self.retention
        for v in ret.candidates:
            row("", "retention", "", v.digest, v.action, v.reason)
        if not ret.configured:
            row("", "retention", "", None, "keep", "sweep.retention is not set: every blob is kept")
        else:
            kept = ", ".join(f"{n} {why}" for why, n in sorted(ret.kept_by_reason.items()))
            row("", "retention", "", None, "keep", f"{ret.kept} of {ret.scanned} blobs kept ({kept})")
        for n in ret.notes:
            row("", "retention", "", None, "note", n)
        return rows


# --- the history index ----------------------------------------------------------------------------


class HistoryIndex(_Model):
    """What the sweep remembers of one ledger, up to record ``seq`` (whose hash is ``hash``)."""

    version: Literal[1] = 1
    service: str
    seq: int = 0
    hash: Digest | None = None
    #: digest -> environments it ever ran in (promoted or rolled back to): rollback targets.
    ran: dict[str, list[str]] = Field(default_factory=dict)
    #: environment -> digest -> why the sweep must not propose it there again (a person rejected
    #: it, or it was rolled back out of that environment). Cleared when it is promoted there.
    refused: dict[str, dict[str, str]] = Field(default_factory=dict)
    #: Digests with approval decisions recorded (a run may be waiting for more).
    approvals: list[str] = Field(default_factory=list)
    published: dict[str, PublishedRef] = Field(default_factory=dict)
    #: Records missing in the middle of the ledger when it was last read in full.
    gaps: int = 0


class _ChainBreak(Exception):
    """The records after the index do not continue its chain: rebuild from the whole ledger."""


def index_key(store: ArtifactStore, service: str) -> str:
    """Where the sweep keeps its history index of ``service``."""
    return store.s3.key("sweep", "index", f"{service}.json")


def load_index(store: ArtifactStore, service: str) -> HistoryIndex | None:
    """The stored index, or None when there is none or it is unreadable (it is rebuilt then)."""
    body = store.s3.get(index_key(store, service))
    if body is None:
        return None
    try:
        index = HistoryIndex.model_validate_json(body)
    except ValidationError:
        return None
    return index if index.service == service else None


def fold(index: HistoryIndex, rec: LedgerRecord) -> None:
    """Add one ledger record to the index (in place)."""
    d = str(rec.digest)
    env = rec.environment
    if rec.event == "published":
        evidence: list[Digest] | None = None
        listed = rec.details.get("evidence")
        if isinstance(listed, list):
            try:
                evidence = [Digest(e["digest"]) for e in listed]
            except (InvalidDigest, KeyError, TypeError):
                evidence = None  # unreadable: the artifact record is read instead
        index.published[d] = PublishedRef(at=rec.at, evidence=evidence)
    elif rec.event in ("promoted", "rolled_back") and env:
        envs = index.ran.setdefault(d, [])
        if env not in envs:
            envs.append(env)
        index.refused.get(env, {}).pop(d, None)
        if rec.event == "rolled_back":
            gone = rec.details.get("from")
            if isinstance(gone, str) and gone != d:
                why = f"rolled back out of {env} on {rec.at:%Y-%m-%d} by {rec.actor}"
                why += f": {rec.reason or 'no reason'}"
                index.refused.setdefault(env, {})[gone] = why
    elif rec.event == "rejected" and env:
        why = f"rejected for {env} on {rec.at:%Y-%m-%d} by {rec.actor}: {rec.reason or 'no reason'}"
        index.refused.setdefault(env, {})[d] = why
    elif rec.event == "approval" and d not in index.approvals:
        index.approvals.append(d)
    index.seq = rec.seq


def update_index(
    store: ArtifactStore, service: str, tip: Tip, index: HistoryIndex | None
) -> tuple[HistoryIndex, str]:
    """The index brought up to ``tip``, and how: read only the new records, or rebuilt in full."""
    if tip.seq == 0:
        return HistoryIndex(service=service), "the ledger is empty"
    if index is not None and index.seq == tip.seq and index.hash == tip.hash:
        return index, "up to date"
    if index is None:
        why = "built from the whole ledger (first sweep)"
    elif index.seq >= tip.seq:
        why = (
            f"rebuilt from the whole ledger: the index was at record {index.seq} "
            f"({'another hash' if index.seq == tip.seq else 'beyond the end'}) but the ledger ends at "
            f"{tip.seq}; check it with 'promote ledger verify {service}'"
        )
    else:
        try:
            return _read_since(store, service, tip, index), f"read {tip.seq - index.seq} new record(s)"
        except _ChainBreak as exc:
            why = f"rebuilt from the whole ledger: {exc}; check it with 'promote ledger verify {service}'"
    fresh = HistoryIndex(service=service)
    seen = 0
    for rec in store.ledger.records(service):
        if rec.seq <= tip.seq:
            fold(fresh, rec)
            seen += 1
    fresh.seq, fresh.hash, fresh.gaps = tip.seq, tip.hash, tip.seq - seen
    return fresh, why


def _read_since(store: ArtifactStore, service: str, tip: Tip, index: HistoryIndex) -> HistoryIndex:
    assert tip.record is not None
    # The tip's own record is already read. Raw bytes: the chain check hashes them.
    raw = store.ledger.read_range_raw(service, index.seq + 1, tip.seq - 1, workers=8)
    out = index.model_copy(deep=True)
    prev = index.hash
    for seq, body in raw:
        if body is None:
            raise _ChainBreak(f"record {seq} is missing")
        try:
            rec = LedgerRecord.model_validate_json(body)
        except ValidationError:
            raise _ChainBreak(f"record {seq} is unreadable") from None
        if rec.seq != seq or rec.prev != prev:
            raise _ChainBreak(f"record {seq} does not continue the chain the last sweep saw")
        fold(out, rec)
        prev = Digest.of_bytes(body)
    if tip.record.prev != prev:
        raise _ChainBreak(f"record {tip.seq} does not continue the chain the last sweep saw")
    fold(out, tip.record)
    out.seq, out.hash = tip.seq, tip.hash
    return out


def save_index(store: ArtifactStore, index: HistoryIndex) -> None:
    """Store the index (a cache: a lost or stale one costs a re-read, never a wrong answer)."""
    body = index.model_dump_json().encode("utf-8")
    store.s3.put(index_key(store, index.service), body, content_type="application/json")


# --- one service ----------------------------------------------------------------------------------


class _Records:
    """Artifact records read at most once per service per sweep."""

    def __init__(self, store: ArtifactStore, service: str) -> None:
        self.store = store
        self.service = service
        self._cache: dict[str, ArtifactRecord | None] = {}

    def get(self, digest: Digest) -> ArtifactRecord | None:
        key = str(digest)
        if key not in self._cache:
            self._cache[key] = self.store.find_record(self.service, digest)
        return self._cache[key]


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


def _expired(env: Environment, artifact: ArtifactRecord, now: dt.datetime) -> tuple[str, str] | None:
    """(gate, reason) of the first evidence gate of ``env`` whose ``max_age`` has passed."""
    for gate in env.gates:
        expired = evidence_expiry(gate, artifact, now)
        if expired is not None:
            name = gate.name or gate.kind
            return name, (
                f"evidence expired: {expired.evidence} published {format_duration(expired.age)} ago, "
                f"max_age {format_duration(expired.max_age)} on the {name} gate of {env.name}"
            )
    return None


def _verify(
    store: ArtifactStore,
    pipeline: Pipeline,
    state: LedgerState,
    records: _Records,
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
            except PromotionError as exc:
                checks.append(
                    Check(digest=d, roles=roles, outcome="error", detail=f"{type(exc).__name__}: {exc}")
                )
                continue
            if artifact is not None:
                for n in running_in:
                    expired = _expired(pipeline.environment(n), artifact, now)
                    if expired:
                        break
        if expired is not None:
            checks.append(
                Check(digest=d, roles=roles, outcome="expired", detail=expired[1], flag_reason=expired[1])
            )
        else:
            checks.append(Check(digest=d, roles=roles, outcome="ok", detail=result.detail))
    return checks


def _flag(
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


def _drift(
    store: ArtifactStore,
    pipeline: Pipeline,
    service: str,
    state: LedgerState,
    bad: Mapping[str, str],
    errors: list[str],
) -> list[DriftFinding]:
    """Environments whose copy differs from the ledger; ``bad`` digests (corrupt) are not re-copied.

    A copy that cannot be read because of S3 (an infrastructure error) is not drift: it goes to
    ``errors``, so no ``drift.detected`` event cries wolf over a 503.
    """
    findings: list[DriftFinding] = []
    for env in pipeline.environments:
        target = env.target.copy_to
        if target is None:
            continue
        cur = state.environments.get(env.name)
        expected = cur.digest if cur else None
        version = cur.version if cur else None
        try:
            where = f"s3://{target.bucket}/{target_key(target, service, version, None)}"
        except KeyTemplateError as exc:
            if expected is not None:
                findings.append(_finding(env, expected, None, version, "(unknown key)", str(exc), "report"))
            continue  # nothing deployed and no key to look at: nothing to compare
        try:
            actual, checksum = _read_copy(store, target, service, version, env.name)
        except InfrastructureError as exc:
            errors.append(f"drift {env.name}: cannot read the copy {where}: {type(exc).__name__}: {exc}")
            continue
        except PromotionError as exc:
            findings.append(
                _finding(env, expected, None, version, where, f"cannot read the copy: {exc}", "report")
            )
            continue
        if actual == expected:
            if expected is None:
                continue
            if checksum is not None:
                # The server's full-object SHA-256 of the copy, from the same HEAD: no download.
                if checksum == expected.b64:
                    continue
                got = Digest("sha256:" + base64.b64decode(checksum).hex())
                detail = f"the copy is tagged {expected.short} but its bytes differ: got {got} (checksum)"
            else:
                try:
                    verify_target(store, target, service, version, expected, environment=env.name)
                    continue
                except DigestMismatch as exc:
                    detail = f"the copy is tagged {expected.short} but its bytes differ: got {exc.actual}"
                except InfrastructureError as exc:
                    errors.append(
                        f"drift {env.name}: cannot verify the copy {where}: {type(exc).__name__}: {exc}"
                    )
                    continue
                except PromotionError as exc:
                    findings.append(
                        _finding(
                            env, expected, actual, version, where, f"cannot verify the copy: {exc}", "report"
                        )
                    )
                    continue
        elif expected is None:
            detail = f"the ledger says nothing runs in {env.name}, but the copy holds {actual}"
        elif actual is None:
            detail = f"the copy is missing (or not written by a promotion); the ledger says {expected.short}"
        else:
            detail = f"the copy holds {actual.short}, the ledger says {expected.short}"
        action: DriftAction = "report"
        if env.on_drift == "correct":
            if expected is None:
                detail += "; not corrected: there is no ledger digest to restore"
            elif str(expected) in bad:
                detail += f"; not corrected: the ledger's digest failed its re-check ({bad[str(expected)]})"
            else:
                action = "correct"
        findings.append(_finding(env, expected, actual, version, where, detail, action))
    return findings


def _read_copy(
    store: ArtifactStore, target: CopyTarget, service: str, version: str | None, environment: str
) -> tuple[Digest | None, str | None]:
    """(digest tag, full-object SHA-256 checksum) of an environment's copy, in one HEAD.

    The tag is what :func:`~promotion.deploy.read_target_digest` reads; the checksum (None when
    the server keeps none, or only a multipart composite) lets the bytes be checked without a
    download. A missing object or a tag that is not a digest gets ``read_target_digest``'s own
    answer (None, or its error naming the bucket or the object).
    """
    key = target_key(target, service, version, None)
    dest = S3(store.s3.cfg.model_copy(update={"bucket": target.bucket, "prefix": ""}), client=store.s3.client)
    try:
        head = dest.head(key)
    except BucketNotFound:
        head = None
    tag = head.metadata.get("sha256") if head is not None else None
    if head is None or tag is None:
        return read_target_digest(store, target, service, version, environment=environment), None
    try:
        digest = Digest("sha256:" + tag)
    except InvalidDigest:
        return read_target_digest(store, target, service, version, environment=environment), None
    checksum = head.checksum_sha256
    return digest, checksum if checksum and "-" not in checksum else None


def _finding(
    env: Environment,
    expected: Digest | None,
    actual: Digest | None,
    version: str | None,
    where: str,
    detail: str,
    action: DriftAction,
) -> DriftFinding:
    return DriftFinding(
        environment=env.name,
        expected=expected,
        actual=actual,
        version=version,
        location=where,
        detail=detail,
        on_drift=env.on_drift,
        action=action,
    )


def correct_drift(store: ArtifactStore, service: str, finding: DriftFinding) -> DriftFinding:
    """Re-copy the ledger's digest into the environment, then check the copy again."""
    if finding.action != "correct" or finding.expected is None:
        return finding
    target = store.pipeline.environment(finding.environment).target.copy_to
    assert target is not None
    d, env = finding.expected, finding.environment
    try:
        copy_to_target(store, target, service, d, finding.version, environment=env, full_verify=True)
        again = read_target_digest(store, target, service, finding.version, environment=env)
        if again != d:
            raise DeployError(f"after the copy the object is tagged {again}, not {d}")
        check = verify_target(store, target, service, finding.version, d, environment=env)
    except PromotionError as exc:
        return finding.model_copy(
            update={"action": "correction_failed", "detail": f"{finding.detail}; correction failed: {exc}"}
        )
    return finding.model_copy(
        update={"action": "corrected", "detail": f"{finding.detail}; re-copied {d.short}, {check.detail}"}
    )


def _decide(
    store: ArtifactStore,
    pipeline: Pipeline,
    state: LedgerState,
    index: HistoryIndex,
    records: _Records,
    checks: Sequence[Check],
    now: dt.datetime,
    errors: list[str],
) -> list[Decision]:
    """One decision per ``auto_promote`` environment; infrastructure errors go to ``errors``."""
    names = pipeline.environment_names
    flagged = dict(state.flagged)
    # This sweep's findings count now, dry run included: a corrupt digest is never proposed.
    failed = {str(c.digest): c.detail for c in checks if c.outcome != "ok"}
    flagged.update({str(c.digest): c.flag_reason for c in checks if c.flag_reason})
    out: list[Decision] = []
    for i, env in enumerate(pipeline.environments):
        if not env.auto_promote:
            continue
        prev_name = names[i - 1] if i else None
        source = state.environments.get(prev_name) if prev_name else state.latest_published
        if source is None:
            where = f"nothing runs in {prev_name}" if prev_name else "nothing was published yet"
            out.append(Decision(environment=env.name, action="skip", reason=where))
            continue
        d = source.digest
        further = [n for n in names[i + 1 :] if (c := state.environments.get(n)) and c.digest == d]
        if further and not (state.environments.get(env.name) and state.environments[env.name].digest == d):
            decision = Decision(
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
                decision = Decision(
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
    records: _Records,
    flagged: Mapping[str, str],
    failed: Mapping[str, str],
    now: dt.datetime,
) -> Decision:
    d = source.digest

    def skip(reason: str, gates: list[GateResult] | None = None) -> Decision:
        return Decision(environment=env.name, action="skip", reason=reason, gates=gates or [])

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
    gates = evaluate_stage(store, env, artifact, source if prev_name else None, now, previous_env=prev_name)
    results, failing, hard = gates.results, gates.failing, gates.hard
    if hard:
        return skip("gate failed: " + " | ".join(f"{r.gate}: {'; '.join(r.reasons)}" for r in hard), results)
    if failing:
        return skip("not yet: " + " | ".join(f"{r.gate}: {'; '.join(r.reasons)}" for r in failing), results)
    what = "every gate passes" if results else "no pre-deploy gates"
    if env.approval is not None:
        a = env.approval
        return Decision(
            environment=env.name,
            action="open_approval",
            reason=f"{what}; needs {a.min_approvals} approval(s) of {', '.join(a.approvers)}",
            gates=results,
        )
    return Decision(environment=env.name, action="promote", reason=what, gates=results)


def _service_refs(service: str, state: LedgerState, index: HistoryIndex, records: _Records) -> ServiceRefs:
    referenced: dict[str, str] = {}

    def keep(digest: str, why: str) -> None:
        referenced.setdefault(digest, f"{service}: {why}")

    for name, cur in state.environments.items():
        keep(str(cur.digest), f"runs in {name}")
    if state.latest_published is not None:
        keep(str(state.latest_published.digest), "latest published")
    for digest, envs in index.ran.items():
        keep(digest, f"ran in {', '.join(envs)} (a rollback target)")
    for digest in index.approvals:
        keep(digest, "has approval decisions")
    complete, note = True, ""
    if index.gaps:
        complete, note = False, f"{index.gaps} ledger record(s) missing: history incomplete"
    for digest in list(referenced):
        ref = index.published.get(digest)
        evidence = ref.evidence if ref is not None else None
        if evidence is None:
            try:
                rec = records.get(Digest(digest))
            except PromotionError as exc:
                complete, note = False, f"artifact record of {digest} unreadable: {exc}"
                continue
            evidence = [e.digest for e in rec.evidence] if rec else []
        for e in evidence:
            keep(str(e), f"evidence of {Digest(digest).short}")
    return ServiceRefs(
        seq=index.seq, referenced=referenced, published=index.published, complete=complete, note=note
    )


def _fill_evidence(index: HistoryIndex, records: _Records) -> bool:
    """Fill in evidence the ledger events did not list, from the artifact records. Changed?"""
    changed = False
    for digest, ref in index.published.items():
        if ref.evidence is None:
            try:
                rec = records.get(Digest(digest))
            except PromotionError:
                continue  # left unknown: retention keeps it (see plan_retention)
            index.published[digest] = ref.model_copy(
                update={"evidence": [e.digest for e in rec.evidence] if rec else []}
            )
            changed = True
    return changed


def sweep_service(
    store: ArtifactStore, service: str, *, now: dt.datetime | None = None, dry_run: bool = False
) -> ServiceReport:
    """Re-verify, detect drift and decide promotions for one service (see the module docstring).

    Writes only ``flagged`` ledger events and the history index, and neither in dry run. Drift
    is found here and corrected by :func:`correct_drift`. Never raises for what it finds: errors
    are in the report (and make its references incomplete, so retention deletes nothing).
    """
    now = now or utcnow()
    report = ServiceReport(service=service, now=now, dry_run=dry_run)
    pipeline = store.pipeline
    records = _Records(store, service)
    try:
        tip = store.ledger.tip(service)
        state = tip.state
        report.ledger_seq = tip.seq
        old = load_index(store, service)
        index, report.index = update_index(store, service, tip, old)
        filled = _fill_evidence(index, records)
        if not dry_run and tip.seq and (filled or old is None or old != index):
            try:
                save_index(store, index)
            except PromotionError as exc:
                report.index += f" (not saved: {exc})"
    except PromotionError as exc:
        report.errors.append(f"ledger: {type(exc).__name__}: {exc}")
        report.refs = ServiceRefs(complete=False, note=f"ledger unreadable: {exc}")
        return report
    try:
        checks = _verify(store, pipeline, state, records, now)
        report.checks = _flag(store, service, state, checks, dry_run=dry_run)
    except PromotionError as exc:
        report.errors.append(f"re-verify: {type(exc).__name__}: {exc}")
    bad = {str(c.digest): c.detail for c in report.checks if c.outcome in ("corrupted", "missing")}
    report.drift = _drift(store, pipeline, service, state, bad, report.errors)
    report.decisions = _decide(store, pipeline, state, index, records, report.checks, now, report.errors)
    report.refs = _service_refs(service, state, index, records)
    return report


def _guarded(store: ArtifactStore, service: str, now: dt.datetime, dry_run: bool) -> ServiceReport:
    try:
        return sweep_service(store, service, now=now, dry_run=dry_run)
    except Exception as exc:  # noqa: BLE001 - one broken service must not stop the others
        return ServiceReport(
            service=service,
            now=now,
            dry_run=dry_run,
            errors=[f"unexpected {type(exc).__name__}: {exc}"],
            refs=ServiceRefs(complete=False, note="the sweep of this service failed"),
        )


def sweep_services(
    store: ArtifactStore,
    *,
    now: dt.datetime | None = None,
    dry_run: bool = False,
    services: Sequence[str] | None = None,
    max_parallel: int | None = None,
) -> list[ServiceReport]:
    """:func:`sweep_service` for every service, at most ``sweep.max_parallel`` at once."""
    now = now or utcnow()
    names = list(services) if services is not None else [s.name for s in store.pipeline.services]
    workers = max(1, min(max_parallel or store.pipeline.sweep.max_parallel, len(names) or 1))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sweep") as pool:
        return list(pool.map(lambda s: _guarded(store, s, now, dry_run), names))


def correct_all(store: ArtifactStore, reports: Sequence[ServiceReport]) -> list[ServiceReport]:
    """Every report with its ``correct`` drift findings applied (:func:`correct_drift`)."""
    out: list[ServiceReport] = []
    for r in reports:
        if any(f.action == "correct" for f in r.drift):
            fixed = [correct_drift(store, r.service, f) for f in r.drift]
            r = r.model_copy(update={"drift": fixed})
        out.append(r)
    return out


# --- retention ------------------------------------------------------------------------------------


class BlobObject(_Model):
    """One object under the blobs folder, as listed (LastModified is the upload time)."""

    key: str
    size: int
    last_modified: dt.datetime


def list_blobs(store: ArtifactStore) -> list[BlobObject]:
    """Every object under ``{prefix}blobs/sha256/`` with its size and LastModified."""
    return [
        BlobObject(key=obj.key, size=obj.size, last_modified=obj.last_modified)
        for obj in store.s3.list_objects(store.blob_prefix())
    ]


def plan_retention(
    blobs: Sequence[BlobObject],
    refs: Mapping[str, ServiceRefs],
    *,
    now: dt.datetime,
    retention: dt.timedelta | None,
    blob_prefix: str,
) -> RetentionReport:
    """Which blobs may go: nothing references them and they are older than ``retention``. Pure.

    A blob's age counts from the later of its LastModified and the last time its digest was
    published for any service (re-publishing identical bytes uploads nothing). Retention under
    :data:`MIN_RETENTION` counts as that. Any incomplete ``refs`` keeps everything.
    """
    report = RetentionReport(configured=retention is not None, retention=retention, now=now)
    report.scanned = len(blobs)
    if retention is None:
        report.kept = len(blobs)
        report.kept_by_reason = {"retention not configured": len(blobs)} if blobs else {}
        return report
    keep_for = max(retention, MIN_RETENTION)
    if keep_for != retention:
        report.notes.append(f"retention {format_duration(retention)} raised to {format_duration(keep_for)}")
    unsure = [f"{svc}: {r.note or 'history incomplete'}" for svc, r in sorted(refs.items()) if not r.complete]
    referenced: dict[str, str] = {}
    published_at: dict[str, dt.datetime] = {}
    evidence: dict[str, set[str]] = {}
    unknown_evidence: set[str] = set()
    for r in refs.values():
        for d, because in r.referenced.items():
            referenced.setdefault(d, because)
        for d, p in r.published.items():
            published_at[d] = max(published_at.get(d, p.at), p.at)
            if p.evidence is None:
                unknown_evidence.add(d)
            else:
                evidence.setdefault(d, set()).update(map(str, p.evidence))
    written = {b.key: b.last_modified for b in blobs}

    def age(digest: str, key: str | None) -> dt.timedelta:
        last = max(t for t in (written.get(key or ""), published_at.get(digest)) if t is not None)
        return now - last

    # Artifacts kept for their age keep their evidence too, whatever the evidence's own age.
    young = {d for d in published_at if age(d, blob_prefix + d.removeprefix("sha256:")) < keep_for}
    evidence_of_young = {e: d for d in young for e in evidence.get(d, ())}
    if young & unknown_evidence:
        unsure.append("evidence of recent artifacts is unknown (artifact records unreadable)")
    kept: dict[str, int] = {}
    for b in blobs:
        name = b.key[len(blob_prefix) :] if b.key.startswith(blob_prefix) else ""
        digest = f"sha256:{name}"
        why: str | None = None
        try:
            Digest(digest)
        except InvalidDigest:
            why = "not a blob name"
        if why is None and digest in referenced:
            why = "referenced"
        elif why is None and digest in evidence_of_young:
            why = "evidence of a recent artifact"
        elif why is None and age(digest, b.key) < keep_for:
            why = "younger than the retention"
        elif why is None and unsure:
            why = "unsure: history incomplete"
        if why is not None:
            kept[why] = kept.get(why, 0) + 1
            continue
        report.candidates.append(
            BlobVerdict(
                key=b.key,
                digest=digest,
                size=b.size,
                last_modified=b.last_modified,
                action="would_delete",
                reason=f"referenced by no environment, rollback target, latest publish or kept "
                f"artifact; last written or published {format_duration(age(digest, b.key))} ago "
                f"(retention {format_duration(keep_for)})",
            )
        )
    report.kept = sum(kept.values())
    report.kept_by_reason = kept
    report.notes += [f"nothing deleted: {u}" for u in unsure]
    return report


def _refs_of(store: ArtifactStore, service: str) -> ServiceRefs:
    """The references of a service read afresh (state and index; writes nothing)."""
    records = _Records(store, service)
    try:
        tip = store.ledger.tip(service)
        index, _ = update_index(store, service, tip, load_index(store, service))
        _fill_evidence(index, records)
        return _service_refs(service, tip.state, index, records)
    except PromotionError as exc:
        return ServiceRefs(complete=False, note=f"ledger unreadable: {exc}")


def run_retention(
    store: ArtifactStore,
    reports: Sequence[ServiceReport],
    *,
    now: dt.datetime | None = None,
    apply: bool = False,
    max_parallel: int | None = None,
) -> RetentionReport:
    """List unreferenced old blobs (:func:`plan_retention`); delete them only with ``apply``.

    Services found in the bucket but not in the pipeline file count too (their ledgers are read);
    artifacts of a service without a ledger keep everything. Before deleting, every ledger's tip
    is read again: references added meanwhile (a promotion, a publish) are taken into account,
    and only blobs that are candidates both times are deleted.
    """
    now = now or utcnow()
    retention = store.pipeline.sweep.retention
    if retention is None:
        return plan_retention([], {}, now=now, retention=None, blob_prefix="")
    blob_prefix = store.blob_prefix()
    refs: dict[str, ServiceRefs] = {r.service: r.refs for r in reports}
    workers = max(1, max_parallel or store.pipeline.sweep.max_parallel)
    ledgers, artifacts = store.ledger.services(), store.artifact_services()
    extra = sorted(ledgers - refs.keys())
    with ThreadPoolExecutor(max_workers=workers) as pool:
        refs.update(zip(extra, pool.map(lambda s: _refs_of(store, s), extra), strict=True))
    for svc in sorted(artifacts - ledgers - refs.keys()):
        refs[svc] = ServiceRefs(complete=False, note=f"artifacts of {svc} exist but it has no ledger")
    report = plan_retention(list_blobs(store), refs, now=now, retention=retention, blob_prefix=blob_prefix)
    report.apply = apply
    if not apply or not report.candidates:
        return report
    # Re-read every tip: a ledger that moved since its references were read is read again.
    names = sorted(refs)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        tips = dict(zip(names, pool.map(_seq_or_none(store), names), strict=True))
        moved = [s for s in names if tips[s] is None or tips[s] != refs[s].seq]
        refs.update(zip(moved, pool.map(lambda s: _refs_of(store, s), moved), strict=True))
    if moved:
        again = plan_retention(list_blobs(store), refs, now=now, retention=retention, blob_prefix=blob_prefix)
        still = {c.key for c in again.candidates}
        dropped = [c for c in report.candidates if c.key not in still]
        if dropped:
            report.notes.append(
                f"{len(dropped)} blob(s) kept: referenced by ledger records written meanwhile"
            )
        report.candidates = [c for c in report.candidates if c.key in still]
        report.kept += len(dropped)
    deleted: list[BlobVerdict] = []
    for c in report.candidates:
        try:
            store.s3.delete(c.key)
            deleted.append(c.model_copy(update={"action": "deleted"}))
        except PromotionError as exc:
            deleted.append(c.model_copy(update={"action": "delete_failed", "reason": f"{c.reason}; {exc}"}))
    report.candidates = deleted
    return report


def _seq_or_none(store: ArtifactStore) -> Callable[[str], int | None]:
    def seq(service: str) -> int | None:
        try:
            return store.ledger.tip(service).seq
        except PromotionError:
            return None

    return seq


# --- the whole night ------------------------------------------------------------------------------


def sweep_date(now: dt.datetime, timezone: str) -> str:
    """The sweep's calendar day in the schedule's time zone (part of the runs' idempotency keys)."""
    return now.astimezone(ZoneInfo(timezone)).date().isoformat()


def run_requests(reports: Iterable[ServiceReport], *, deployment: str, date: str) -> list[RunRequest]:
    """One pipeline run per ``promote``/``open_approval`` decision, with its idempotency key.

    The key names the deployment: Prefect keeps idempotency keys unique per flow, not per
    deployment. The same night run twice asks for the same runs (and gets the same ones).
    """
    out: list[RunRequest] = []
    for r in reports:
        for d in r.decisions:
            if d.action == "skip" or d.digest is None:
                continue
            out.append(
                RunRequest(
                    service=r.service,
                    environment=d.environment,
                    digest=d.digest,
                    action=d.action,
                    deployment=deployment,
                    parameters={
                        "service": r.service,
                        "digest": str(d.digest),
                        "to": d.environment,
                        "requested_by": ACTOR,
                    },
                    idempotency_key=f"sweep:{deployment}:{date}:{r.service}:{d.environment}:{d.digest}",
                )
            )
    return out


def sweep(
    store: ArtifactStore,
    *,
    now: dt.datetime | None = None,
    dry_run: bool = False,
    apply_retention: bool = False,
    max_parallel: int | None = None,
) -> SweepReport:
    """The whole sweep without Prefect: every service, drift corrections, retention.

    Starting the pipeline runs is Prefect's part (``flows.sweep``); here ``runs`` lists what would
    be started. ``dry_run`` changes nothing; ``apply_retention`` deletes (never in dry run).
    """
    now = now or utcnow()
    reports = sweep_services(store, now=now, dry_run=dry_run, max_parallel=max_parallel)
    if not dry_run:
        reports = correct_all(store, reports)
    retention = run_retention(
        store, reports, now=now, apply=apply_retention and not dry_run, max_parallel=max_parallel
    )
    cfg = store.pipeline
    date = sweep_date(now, cfg.sweep.timezone)
    return SweepReport(
        now=now,
        date=date,
        dry_run=dry_run,
        apply_retention=apply_retention,
        services=reports,
        retention=retention,
        runs=run_requests(reports, deployment=cfg.webhooks.deployment, date=date),
    )
