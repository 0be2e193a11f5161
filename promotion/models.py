"""Domain records: what is stored in S3 as JSON."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from promotion.digest import Digest

EvidenceKind = Literal["junit", "coverage", "sarif", "perf", "other"]
EVIDENCE_KINDS: tuple[str, ...] = ("junit", "coverage", "sarif", "perf", "other")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Record(BaseModel):
    # Records are read back from S3, where someone may have edited them: refuse unknown keys.
    model_config = ConfigDict(extra="forbid", frozen=True)

    def canonical_bytes(self) -> bytes:
        """Deterministic JSON: sorted keys, no spaces, UTF-8. What is hashed is what is stored."""
        return json.dumps(
            self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")


class Provenance(Record):
    commit: str | None = Field(default=None, description="source commit the artifact was built from")
    commit_author: str | None = Field(default=None, description="author of that commit")
    #: When that commit was made (``promote publish --commit-time``): the start of the change's
    #: lead time (promotion/metrics). None in records written before it was recorded.
    commit_time: dt.datetime | None = Field(default=None, description="time of that commit")
    build_url: str | None = Field(default=None, description="URL of the CI build that made it")
    builder: str | None = Field(default=None, description="CI system or host that built it")
    published_by: str = Field(description="who ran publish")


class EvidenceRef(Record):
    kind: EvidenceKind
    digest: Digest
    filename: str
    size: int


class BlobInfo(Record):
    digest: Digest
    size: int
    #: What S3 reports as the object's checksum: the digest itself (ChecksumSHA256) for
    #: single-part uploads, a composite ``<b64>-<parts>`` for multipart ones (ChecksumCRC32 of
    #: the parts' CRC32s; ChecksumSHA256 for blobs published before). The cheap check compares
    #: against it.
    s3_checksum: str | None = None


class ArtifactRecord(Record):
    """Beside each blob, per service: what the bytes are and where they came from."""

    service: str
    digest: Digest
    size: int
    media_type: str
    version: str | None
    created_at: dt.datetime
    provenance: Provenance
    evidence: list[EvidenceRef] = Field(default_factory=list)
    s3_checksum: str | None = None
    #: What the artifact says it is (promotion.stacks): ``wheel``, ``npm``, ``oci``, ... or
    #: ``blob``; None in records written before stacks were recognised.
    stack: str | None = None
    #: The artifact's own name (a wheel's Name, an npm package's name, Maven group:artifact).
    name: str | None = None
    #: Stack-specific facts, e.g. ``image_manifest_digest`` of an OCI layout.
    stack_details: dict[str, str] = Field(default_factory=dict)

    def identity(self) -> dict[str, Any]:
        """The fields that make two publishes of the same bytes the same publish.

        ``stack``, ``name`` and ``stack_details`` are not in it: they are read from the bytes,
        so identical bytes cannot differ in them (only a forced ``--stack`` could), and a
        record written before stacks existed stays the same publish when its bytes come again.
        """
        return {
            "version": self.version,
            "media_type": self.media_type,
            "commit": self.provenance.commit,
            "build_url": self.provenance.build_url,
            "evidence": sorted((e.kind, str(e.digest)) for e in self.evidence),
        }


LedgerEvent = Literal[
    "published",
    "promoted",
    "rejected",
    "approval_requested",
    "approval",
    "rolled_back",
    "flagged",
    "attested",
]


class EnvState(Record):
    """Which digest an environment runs, since when, by whom, and which record put it there."""

    digest: Digest
    version: str | None
    since: dt.datetime
    by: str
    seq: int


class LedgerState(Record):
    environments: dict[str, EnvState] = Field(default_factory=dict)
    latest_published: EnvState | None = None
    #: Digests that failed a later re-check (corrupted blob, expired evidence): never promoted
    #: again. Digest -> reason.
    flagged: dict[str, str] = Field(default_factory=dict)
    #: Open approval requests: ``"<environment> <digest>"`` -> seq of the ``approval_requested``
    #: record that opened it. Kept in the state so that ``promote pending`` and a re-run find
    #: them from the tip, reading back only as far as the oldest one (see promotion/requests.py).
    approval_requests: dict[str, int] = Field(default_factory=dict)
    #: Evidence attached after publish (``attested`` events), per digest: ``"<kind>:<filename>"``
    #: -> seq of the newest ``attested`` record holding a report of that kind and file name. The
    #: effective evidence of a digest is read from these records alone (one GET each, however
    #: many nightly re-scans replaced each other), see promotion/evidence_set.py.
    attested: dict[str, dict[str, int]] = Field(default_factory=dict)


class LedgerRecord(Record):
    """One event in a service's ledger. ``prev`` chains it to the record before."""

    seq: int = Field(ge=1)
    prev: Digest | None
    service: str
    event: LedgerEvent
    environment: str | None = None
    digest: Digest
    version: str | None = None
    actor: str
    reason: str = ""
    at: dt.datetime
    idempotency_id: str = Field(min_length=1, max_length=200)
    gates: list[dict[str, Any]] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)
    #: The state after this event. Derived from the chain, kept here so that the current state of
    #: a service costs one read; ``ledger verify`` re-derives and compares it.
    state: LedgerState


def request_key(environment: str, digest: Digest | str) -> str:
    """The key of an approval request in :attr:`LedgerState.approval_requests`."""
    return f"{environment} {digest}"


def apply_event(state: LedgerState, rec: LedgerRecord) -> LedgerState:
    """The state that follows ``state`` once ``rec`` happened. Pure."""
    state = _apply_requests(state, rec)
    entry = EnvState(digest=rec.digest, version=rec.version, since=rec.at, by=rec.actor, seq=rec.seq)
    if rec.event == "published":
        return state.model_copy(update={"latest_published": entry})
    if rec.event == "attested":
        return _apply_attested(state, rec)
    if rec.event == "flagged":
        flagged = dict(state.flagged)
        flagged[str(rec.digest)] = rec.reason
        return state.model_copy(update={"flagged": flagged})
    if rec.event in ("promoted", "rolled_back") and rec.environment:
        envs = dict(state.environments)
        envs[rec.environment] = entry
        return state.model_copy(update={"environments": envs})
    return state


def evidence_key(kind: str, filename: str) -> str:
    """What a later report replaces: an earlier one of the same kind and file name."""
    return f"{kind}:{filename}"


def _apply_attested(state: LedgerState, rec: LedgerRecord) -> LedgerState:
    listed = rec.details.get("evidence")
    keys = {
        evidence_key(str(e.get("kind")), str(e.get("filename")))
        for e in (listed if isinstance(listed, list) else [])
        if isinstance(e, dict)
    }
    if not keys:
        return state
    digest = str(rec.digest)
    attested = dict(state.attested)
    attested[digest] = {**attested.get(digest, {}), **dict.fromkeys(sorted(keys), rec.seq)}
    return state.model_copy(update={"attested": attested})


def _apply_requests(state: LedgerState, rec: LedgerRecord) -> LedgerState:
    """Open a request on its first ``approval_requested``; close it when the digest's stage ends.

    A later ``approval_requested`` for an open request (a re-run continuing it) changes nothing:
    the request stays the one opened first, with its decisions. ``promoted``, ``rejected`` and
    ``rolled_back`` of that digest in that environment close it.
    """
    if rec.environment is None:
        return state
    key = request_key(rec.environment, rec.digest)
    if rec.event == "approval_requested" and key not in state.approval_requests:
        return state.model_copy(update={"approval_requests": {**state.approval_requests, key: rec.seq}})
    if rec.event in ("promoted", "rejected", "rolled_back") and key in state.approval_requests:
        remaining = {k: v for k, v in state.approval_requests.items() if k != key}
        return state.model_copy(update={"approval_requests": remaining})
    return state
