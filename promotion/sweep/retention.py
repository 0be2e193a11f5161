"""Blob retention: which blobs nothing references, listed, and deleted only with ``apply``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from promotion.config import format_duration
from promotion.digest import Digest
from promotion.errors import InvalidDigest, PromotionError
from promotion.models import LedgerState, utcnow
from promotion.store import ArtifactStore
from promotion.sweep.index import HistoryIndex, load_index, update_index
from promotion.sweep.records import ArtifactRecords
from promotion.sweep.report import BlobVerdict, RetentionReport, ServiceRefs, ServiceReport, SweepModel

#: Blobs younger than this are never deleted, whatever ``sweep.retention`` says: a publish uploads
#: the blob before it writes the ledger event that references it.
MIN_RETENTION = dt.timedelta(hours=1)


def service_refs(
    service: str, state: LedgerState, index: HistoryIndex, records: ArtifactRecords
) -> ServiceRefs:
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
        for e in [*evidence, *(ref.attested if ref is not None else [])]:
            keep(str(e), f"evidence of {Digest(digest).short}")
    return ServiceRefs(
        seq=index.seq, referenced=referenced, published=index.published, complete=complete, note=note
    )


def fill_evidence(index: HistoryIndex, records: ArtifactRecords) -> bool:
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


class BlobObject(SweepModel):
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
            evidence.setdefault(d, set()).update(map(str, p.attested))
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
    records = ArtifactRecords(store, service)
    try:
        tip = store.ledger.tip(service)
        index, _ = update_index(store, service, tip, load_index(store, service))
        fill_evidence(index, records)
        return service_refs(service, tip.state, index, records)
    except PromotionError as exc:
        return ServiceRefs(complete=False, note=f"ledger unreadable: {exc}")


def run_retention(
    store: ArtifactStore,
    reports: Sequence[ServiceReport],
    *,
    now: dt.datetime | None = None,
    apply: bool = False,
    dry_run: bool = False,
    max_parallel: int | None = None,
) -> RetentionReport:
    """List unreferenced old blobs (:func:`plan_retention`); delete them only with ``apply``.

    ``dry_run`` wins over ``apply``: it lists, and deletes nothing (the rule lives here, with the
    deleting, so no caller can get it wrong).

    Services found in the bucket but not in the pipeline file count too (their ledgers are read);
    artifacts of a service without a ledger keep everything. Before deleting, every ledger's tip
    is read again: references added meanwhile (a promotion, a publish) are taken into account,
    and only blobs that are candidates both times are deleted.
    """
    now = now or utcnow()
    apply = apply and not dry_run
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
