"""A digest's effective evidence: what it was published with, then what was attested since.

The rule (the one place it is applied; gates, ``promote plan`` and the sweep all read it through
:func:`promotion.evaluate.gate_context`): start from the publish evidence; then, for each
``attested`` ledger event of the digest in ledger order, a report of kind K **replaces** every
earlier report of kind K with the **same file name**, and is **added** beside the others
otherwise. So a nightly re-scan that writes ``scan.sarif`` again replaces yesterday's scan (the
gate reads only the newest), while an integration suite's ``integration.xml`` that arrives
hours later sits beside the unit tests' ``junit.xml`` (the tests gate reads both). "The newest
report of kind K replaces all earlier K" would have dropped the unit tests there.

Each report keeps when it was attached and by whom: the gate names the files it read with
those, and an evidence gate's ``max_age`` is measured from when each report was attached.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from promotion.digest import Digest
from promotion.errors import InvalidDigest, LedgerError
from promotion.models import ArtifactRecord, EvidenceRef, LedgerRecord, LedgerState, evidence_key

if TYPE_CHECKING:
    from promotion.ledger import Ledger


@dataclass(frozen=True)
class AttachedEvidence:
    """One report of a digest's effective evidence, with when and how it arrived."""

    ref: EvidenceRef
    attached_at: dt.datetime
    attached_by: str
    #: The ``attested`` ledger record that attached it; None: it came with the publish.
    seq: int | None = None

    @property
    def how(self) -> str:
        return "published" if self.seq is None else f"attested (ledger record {self.seq})"

    def describe(self) -> dict[str, str]:
        """What a gate result says about a report it read."""
        return {
            "kind": self.ref.kind,
            "filename": self.ref.filename,
            "digest": str(self.ref.digest),
            "attached_at": self.attached_at.isoformat(),
            "attached_by": self.attached_by,
            "how": self.how,
        }


def published_evidence(artifact: ArtifactRecord) -> list[AttachedEvidence]:
    return [
        AttachedEvidence(ref, artifact.created_at, artifact.provenance.published_by)
        for ref in artifact.evidence
    ]


def attested_refs(rec: LedgerRecord) -> list[EvidenceRef]:
    """The reports an ``attested`` record attached; :class:`LedgerError` if it is unreadable."""
    listed = rec.details.get("evidence")
    try:
        return [EvidenceRef.model_validate(e) for e in (listed if isinstance(listed, list) else [])]
    except (ValueError, InvalidDigest) as exc:
        raise LedgerError(
            f"ledger record {rec.seq} of {rec.service} lists unreadable evidence: {exc}"
        ) from None


def effective_evidence(
    artifact: ArtifactRecord, attestations: Iterable[LedgerRecord]
) -> list[AttachedEvidence]:
    """The publish evidence with ``attestations`` (``attested`` records, any order) applied."""
    current = published_evidence(artifact)
    for rec in sorted(attestations, key=lambda r: r.seq):
        refs = attested_refs(rec)
        replaced = {evidence_key(r.kind, r.filename) for r in refs}
        current = [e for e in current if evidence_key(e.ref.kind, e.ref.filename) not in replaced]
        current += [AttachedEvidence(ref, rec.at, rec.actor, rec.seq) for ref in refs]
    return current


def attestations_of(ledger: Ledger, state: LedgerState, service: str, digest: Digest) -> list[LedgerRecord]:
    """The ``attested`` records still effective for ``digest`` (read in parallel, one GET each).

    Only the records :attr:`LedgerState.attested` points at: a record whose every report was
    replaced since is not read (the fold would drop it anyway).
    """
    seqs = sorted(set(state.attested.get(str(digest), {}).values()))
    if not seqs:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(seqs))) as pool:
        read = list(pool.map(lambda s: ledger.read_range(service, s, s), seqs))
    records = [r for found in read for r in found]
    for seq, found in zip(seqs, read, strict=True):
        if not found or found[0].event != "attested" or found[0].digest != digest:
            raise LedgerError(
                f"ledger record {seq} of {service} should attest evidence of {digest} but "
                f"{'is missing' if not found else 'does not'}; run 'promote ledger verify {service}'"
            )
    return records


def evidence_for(
    ledger: Ledger, artifact: ArtifactRecord, state: LedgerState | None = None
) -> list[AttachedEvidence]:
    """The effective evidence of ``artifact`` (``state``: the service's, read from the tip if None)."""
    st = state if state is not None else ledger.state(artifact.service)
    return effective_evidence(artifact, attestations_of(ledger, st, artifact.service, artifact.digest))


def not_yet_attached(
    current: Sequence[AttachedEvidence], refs: Sequence[EvidenceRef]
) -> tuple[list[EvidenceRef], list[EvidenceRef]]:
    """``refs`` split into (new, already effective): a report whose kind and bytes are already
    in the effective evidence is not attached again (a retried attest, a CI re-run whose report
    did not change), whatever its file name: attaching it twice would count it twice."""
    have = {(e.ref.kind, e.ref.digest) for e in current}
    new: list[EvidenceRef] = []
    old: list[EvidenceRef] = []
    for ref in refs:
        (old if (ref.kind, ref.digest) in have else new).append(ref)
        have.add((ref.kind, ref.digest))
    return new, old
