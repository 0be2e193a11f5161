"""The history index: what the sweep remembers of a ledger, brought up to date from new records only.

Stored at ``{prefix}sweep/index/{service}.json`` with the sequence number and hash of the last
record folded in. Each night only the records appended since are read, and they must chain onto
that hash; otherwise the index is rebuilt from the whole ledger (and the report says so). It is a
cache derived from the ledger, never a source of truth: deleting it costs one full read.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError

from promotion.digest import Digest
from promotion.errors import InvalidDigest
from promotion.ledger import Tip
from promotion.models import LedgerRecord
from promotion.store import ArtifactStore
from promotion.sweep.report import PublishedRef, SweepModel


class HistoryIndex(SweepModel):
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
    elif rec.event == "attested" and d in index.published:
        ref = index.published[d]
        listed = rec.details.get("evidence")
        try:
            more = [Digest(e["digest"]) for e in listed] if isinstance(listed, list) else []
        except (InvalidDigest, KeyError, TypeError):
            more = []  # an unreadable attestation: ledger verify names it
        index.published[d] = ref.model_copy(update={"attested": [*ref.attested, *more]})
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
