"""The artifact store: content-addressed blobs and per-service artifact records in S3.

Layout::

    {prefix}blobs/sha256/<hex>                         the bytes, named by their digest
    {prefix}artifacts/<service>/sha256/<hex>.json      artifact record (version, provenance, evidence)
    {prefix}ledger/<service>/...                       the promotion ledger (see promotion.ledger)

Publishing holds at most one small file (up to 16 MiB) in memory, whatever the size. A small file
is read once and sent in one PUT whose checksum is the digest itself. A larger file is read twice:
the first read computes the digest (so the blob goes straight to its final key, no staging copy)
and each part's CRC32; the second streams the parts from disk to a multipart upload, each with
its first-read checksum, so neither a corrupted transfer nor a file modified in between can store
bytes under a name they do not hash to. A blob that already exists is not uploaded again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from promotion import stacks
from promotion.config import Pipeline
from promotion.digest import CHUNK_SIZE, Digest
from promotion.errors import (
    ArtifactConflict,
    ArtifactNotFound,
    DigestMismatch,
    EvidenceError,
    FileChangedDuringPublish,
    PreconditionFailed,
    StoreError,
)
from promotion.ledger import Ledger
from promotion.models import (
    ArtifactRecord,
    BlobInfo,
    EvidenceKind,
    EvidenceRef,
    LedgerRecord,
    Provenance,
    utcnow,
)
from promotion.s3 import S3

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

# Files up to MULTIPART_THRESHOLD are read once into memory and go in one PUT whose checksum is
# the digest; larger ones in parts of part_size(size). Defined with the hash-ahead, which must
# know them before this module is imported.
from promotion.hash_ahead import MULTIPART_THRESHOLD as MULTIPART_THRESHOLD
from promotion.hash_ahead import PART_SIZE as PART_SIZE
from promotion.hash_ahead import UPLOAD_THREADS as UPLOAD_THREADS
from promotion.hash_ahead import FilePart, FileState, HashAhead, file_state, part_size
from promotion.publish_ahead import BLOB_FOLDER, InFlight, PublishAhead, StoreTarget, target_of
from promotion.settings import settings

MiB = 1024 * 1024

#: How far back a publish looks in the ledger for its own ``published`` event (written by an
#: earlier try that died before the record) before it writes one.
RECENT_EVENTS = 8

ProgressCallback = Callable[[int], None]


#: Identity fields a re-publish of identical bytes may differ in: the new evidence is attached
#: (an ``attested`` event) instead of refusing. ``commit`` is provenance too: identical bytes are
#: the same artifact whichever commit built them (a CI re-run, or a reproducible build from a
#: commit that changed only tests), and the attestation records the commit it came from.
ATTACHABLE_ON_REPUBLISH = frozenset({"evidence", "build_url", "commit"})


@dataclass(frozen=True)
class PublishResult:
    record: ArtifactRecord
    uploaded_bytes: int
    already_published: bool
    #: Reports of a re-publish attached as an ``attested`` event (the record stays as it was).
    attached: tuple[EvidenceRef, ...] = ()

    @property
    def digest(self) -> Digest:
        return self.record.digest


@dataclass(frozen=True)
class AttestResult:
    record: ArtifactRecord
    #: Reports attached by this call (empty: every one was already effective, nothing recorded).
    attached: tuple[EvidenceRef, ...]
    #: Reports whose kind and bytes were already in the effective evidence: not attached again.
    already: tuple[EvidenceRef, ...]
    #: The ``attested`` ledger record written (or found: a retried attest), None when nothing new.
    event: LedgerRecord | None
    uploaded_bytes: int

    @property
    def digest(self) -> Digest:
        return self.record.digest


@dataclass(frozen=True)
class CheckResult:
    digest: Digest
    method: str
    detail: str


def _state_of(st: os.stat_result) -> FileState:
    """What changes when a file is written to: size, modification and change times, inode."""
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def _check_unchanged_since(path: Path, state: FileState, since: FileState | None) -> None:
    if since is not None and state != since:
        raise FileChangedDuringPublish(str(path), "it was written to after its stack and version were read")


@dataclass(frozen=True)
class Inspected:
    """A file's own stack, name and version (:meth:`ArtifactStore.inspect`), and the file's
    state (:func:`_state_of`) taken before they were read.

    :meth:`ArtifactStore.publish_inspected` stores the file only if it is still in ``state`` once
    its bytes are hashed, so the metadata recorded are those of the bytes stored.
    """

    path: Path
    own: stacks.StackInfo
    state: FileState


def parse_evidence(specs: Sequence[str], *, follow_symlinks: bool = False) -> list[tuple[EvidenceKind, Path]]:
    """``["junit=report.xml", ...]`` -> kinds and paths, each checked before anything is sent.

    Each file is opened without following symbolic links (unless ``follow_symlinks`` and the
    target is inside the current directory), must be a regular file, and a parsed kind must be
    a report of its kind within the parsers' size limit. The paths returned are private copies
    of exactly the bytes checked (see :mod:`promotion.evidence_intake`); keep the returned list
    while using them.
    """
    if not specs:
        return []  # without importing the parsers: most publishes send no evidence
    from promotion.evidence_intake import read_evidence

    return read_evidence(specs, follow_symlinks=follow_symlinks)


class ArtifactStore:
    """Publish, fetch and verify artifacts in the configured S3 bucket."""

    def __init__(self, pipeline: Pipeline, s3: S3 | None = None) -> None:
        self.pipeline = pipeline
        self.s3 = s3 or S3(pipeline.store)
        self.ledger = Ledger(self.s3)

    # -- keys -------------------------------------------------------------------------------------

    def blob_prefix(self) -> str:
        """The folder every blob is in (``blob_key`` of any digest starts with it)."""
        return self.s3.key(BLOB_FOLDER)

    def blob_key(self, digest: Digest) -> str:
        return self.blob_prefix() + digest.hex

    def record_key(self, service: str, digest: Digest) -> str:
        return self.s3.key("artifacts", service, "sha256", f"{digest.hex}.json")

    def artifact_services(self) -> set[str]:
        """Every service with an artifact record folder in the store (one listing)."""
        return self.s3.list_folders(self.s3.key("artifacts") + "/")

    # -- blobs ------------------------------------------------------------------------------------

    def put_blob(
        self,
        path: Path,
        progress: ProgressCallback | None = None,
        *,
        unchanged_since: FileState | None = None,
        hashed: HashAhead | None = None,
        ahead: PublishAhead | None = None,
    ) -> tuple[BlobInfo, int]:
        """Upload a file under its digest; returns the blob and the bytes actually uploaded.

        Memory stays bounded whatever the size: a small file is read once into memory; a larger
        one is read twice, first to hash it (so its final key is known), then streamed part by
        part to a multipart upload under that key, each part checked against the first read.
        ``unchanged_since`` (a :func:`_state_of` taken earlier, e.g. before the file's stack
        was read) extends the check that the file was not written to back to that moment.
        ``hashed``: the first read already started on ``path`` (:mod:`promotion.hash_ahead`),
        whose open file, state at open and hashes are used instead; the caller closes it.
        ``ahead``: the upload already under way (:mod:`promotion.publish_ahead`), adopted if it
        is this one (same store, key and file state), else left to its owner to abort.
        """
        try:
            if hashed is not None and hashed.path == path:
                _check_unchanged_since(path, hashed.state, unchanged_since)
                return self._put_large(
                    path, hashed.fd, hashed.state, progress, first_read=hashed.result(), ahead=ahead
                )
            with path.open("rb") as f:
                fd = f.fileno()
                before = file_state(fd)
                _check_unchanged_since(path, before, unchanged_since)
                size = before[0]
                if size <= MULTIPART_THRESHOLD:
                    data = f.read(MULTIPART_THRESHOLD + 1)
                    if len(data) != size:
                        raise FileChangedDuringPublish(str(path), f"its size changed from {size} bytes")
                    if file_state(fd) != before:
                        raise FileChangedDuringPublish(str(path), "it was written to while it was read")
                    return self._put_small(data, progress)
                return self._put_large(path, fd, before, progress)
        except OSError as exc:
            raise EvidenceError(f"cannot read {path}: {exc.strerror or exc}") from None

    def put_blob_bytes(self, data: bytes) -> tuple[BlobInfo, int]:
        if len(data) > MULTIPART_THRESHOLD:
            raise ValueError("put_blob_bytes takes at most MULTIPART_THRESHOLD bytes; use put_blob")
        return self._put_small(data, None)

    def _target(self) -> StoreTarget | None:
        """This store as a publish started ahead names where it sends (promotion/publish_ahead.py)."""
        return target_of(self.s3.cfg, settings().s3_max_attempts)

    def _existing(self, digest: Digest, size: int) -> BlobInfo | None:
        head = self.s3.head(self.blob_key(digest))
        if head is None or head.size != size:
            return None
        return BlobInfo(digest=digest, size=size, s3_checksum=head.checksum_sha256)

    def _put_small(self, data: bytes, progress: ProgressCallback | None) -> tuple[BlobInfo, int]:
        """One PUT whose ChecksumSHA256 is the digest: S3 itself vouches the object hashes to its name."""
        digest = Digest.of_bytes(data)
        found = self._existing(digest, len(data))
        if found is None:
            try:
                self.s3.put(
                    self.blob_key(digest),
                    data,
                    create_only=True,
                    checksum_sha256=digest.b64,
                    metadata={"sha256": digest.hex},
                )
            except PreconditionFailed:
                pass  # the same bytes landed meanwhile (someone else, or our own lost response)
        if progress:
            progress(len(data))
        blob = BlobInfo(digest=digest, size=len(data), s3_checksum=digest.b64)
        return (found or blob), (0 if found else len(data))

    def _put_large(
        self,
        path: Path,
        fd: int,
        before: FileState,
        progress: ProgressCallback | None,
        first_read: tuple[Digest, list[int], int] | None = None,
        ahead: PublishAhead | None = None,
    ) -> tuple[BlobInfo, int]:
        size = before[0]
        part_bytes = part_size(size)
        # Pass 1: the digest (the final key) and each part's CRC32, in one read (done already
        # when the publish started it ahead: ``first_read``).
        digest, part_crcs, read = first_read or Digest.of_file_parts(fd, size, part_bytes)
        if read != size:
            raise FileChangedDuringPublish(str(path), f"it shrank below {size} bytes while it was hashed")
        # Checked here too, not only before completing the upload: when the blob already exists
        # nothing else would notice that the digest is of bytes other than those first inspected.
        if file_state(fd) != before:
            raise FileChangedDuringPublish(str(path), "it was written to while it was hashed")
        found = self._existing(digest, size)
        if found is not None:
            if progress:
                progress(size)
            return found, 0
        # Pass 2: stream the parts to their final key, each with its pass-1 checksum.
        key = self.blob_key(digest)
        parts = [
            FilePart(fd, offset, min(part_bytes, size - offset), part_crcs[i])
            for i, offset in enumerate(range(0, size, part_bytes))
        ]
        in_flight = ahead.adopt(self._target(), key, before, progress) if ahead is not None else None
        checksum = self._multipart(path, key, digest, before, parts, progress, in_flight)
        return BlobInfo(digest=digest, size=size, s3_checksum=checksum), size

    def _multipart(
        self,
        path: Path,
        key: str,
        digest: Digest,
        before: FileState,
        parts: Sequence[FilePart],
        progress: ProgressCallback | None,
        in_flight: InFlight | None = None,
    ) -> str | None:
        """Multipart upload to ``key``, create-only; returns S3's composite checksum.

        Each part is sent with the CRC32 of its first read, so the server refuses a part whose
        bytes changed since (corrupted in transit, or the file was modified): ``key`` never holds
        bytes other than those that hash to ``digest``. The upload is completed only if the file
        was not written to since before the first read (``before``: size, mtime, ctime, inode),
        which also covers a server that does not check checksums.

        ``in_flight``: the same upload of the same parts, already under way
        (:mod:`promotion.publish_ahead`); it is completed as this path's own would be. If any of
        its parts failed, it is aborted and this path sends the file itself, and reports what it
        meets (the error as the store words it, or the file changed on disk).
        """
        if in_flight is not None:
            try:
                done = [fu.result() for fu in in_flight.parts]
            except Exception:  # noqa: BLE001 - botocore's error, untranslated: sent again below
                self._abort(key, in_flight.upload_id)
                return self._multipart(path, key, digest, before, parts, progress)
            except BaseException:
                self._abort(key, in_flight.upload_id)
                raise
            return self._complete(path, key, digest, before, parts, in_flight.upload_id, done)
        client = self.s3.client
        bucket = self.s3.bucket
        upload_id = self.s3.call(
            "CreateMultipartUpload",
            key,
            lambda: client.create_multipart_upload(
                Bucket=bucket, Key=key, ChecksumAlgorithm="CRC32", Metadata={"sha256": digest.hex}
            ),
        )["UploadId"]

        def send(number: int, part: FilePart) -> CompletedPartTypeDef:
            try:
                r = self.s3.call(
                    "UploadPart",
                    key,
                    lambda: client.upload_part(
                        Bucket=bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=part,  # type: ignore[arg-type]
                        ContentLength=part.length,
                        ChecksumCRC32=part.checksum,
                    ),
                )
            except StoreError:
                if part.changed_on_disk():
                    raise FileChangedDuringPublish(str(path), part.where()) from None
                raise
            if progress:
                progress(part.length)
            return {"PartNumber": number, "ETag": r["ETag"], "ChecksumCRC32": part.checksum}

        try:
            futures: list[Future[CompletedPartTypeDef]] = []
            with ThreadPoolExecutor(max_workers=UPLOAD_THREADS) as pool:
                try:
                    for number, part in enumerate(parts, start=1):
                        futures.append(pool.submit(send, number, part))
                    sent = [fu.result() for fu in futures]
                except BaseException:
                    for fu in futures:
                        fu.cancel()
                    raise
        except BaseException:
            self._abort(key, upload_id)
            raise
        return self._complete(path, key, digest, before, parts, upload_id, sent)

    def _complete(
        self,
        path: Path,
        key: str,
        digest: Digest,
        before: FileState,
        parts: Sequence[FilePart],
        upload_id: str,
        done: Sequence[CompletedPartTypeDef],
    ) -> str | None:
        """Complete the upload of every part in ``done`` if the file is as it was ``before``."""
        size = before[0]
        client = self.s3.client
        try:
            now = file_state(parts[0].fd)
            if now[0] != size:
                raise FileChangedDuringPublish(str(path), f"its size changed from {size} to {now[0]} bytes")
            if now != before:
                raise FileChangedDuringPublish(str(path), "it was written to while it was uploaded")
            try:
                r = self.s3.call(
                    "CompleteMultipartUpload",
                    key,
                    lambda: client.complete_multipart_upload(
                        Bucket=self.s3.bucket,
                        Key=key,
                        UploadId=upload_id,
                        MultipartUpload={"Parts": done},
                        IfNoneMatch="*",
                    ),
                )
            except StoreError:
                # 412: the same bytes were completed meanwhile, by someone else or by our own
                # first try whose response was lost (its retry then finds the upload gone).
                # Either way the key holds our digest's bytes if its metadata says so.
                head = self.s3.head(key)
                if head is None or head.size != size or head.metadata.get("sha256") != digest.hex:
                    raise
                self._abort(key, upload_id)
                return head.composite_checksum
            return r.get("ChecksumCRC32")
        except BaseException:
            self._abort(key, upload_id)
            raise

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self.s3.call(
                "AbortMultipartUpload",
                key,
                lambda: self.s3.client.abort_multipart_upload(
                    Bucket=self.s3.bucket, Key=key, UploadId=upload_id
                ),
            )
        except StoreError:
            pass  # best effort: an incomplete upload is invisible; a lifecycle rule reclaims it

    # -- publish ----------------------------------------------------------------------------------

    def publish(
        self,
        path: Path,
        *,
        service: str,
        version: str | None,
        provenance: Provenance,
        evidence: Sequence[tuple[EvidenceKind, Path]] = (),
        progress: ProgressCallback | None = None,
        stack: str | None = None,
        hashed: HashAhead | None = None,
        ahead: PublishAhead | None = None,
    ) -> PublishResult:
        """Upload ``path`` and its evidence, write the artifact record and a ``published`` event.

        Re-publishing identical bytes with identical metadata uploads nothing and writes nothing.
        The artifact's stack, name and version are read first (``stack`` forces an adapter); a
        ``version`` that disagrees with the artifact's own is refused before anything is sent.
        This is :meth:`inspect` then :meth:`publish_inspected`. ``hashed``: the hash pass
        already started on ``path`` (:mod:`promotion.hash_ahead`; the caller closes it);
        ``ahead``: the upload already under way (:mod:`promotion.publish_ahead`; likewise).
        """
        self.pipeline.service(service)  # an unknown service is refused before the file is read
        return self.publish_inspected(
            self.inspect(path, stack),
            service=service,
            version=version,
            provenance=provenance,
            evidence=evidence,
            progress=progress,
            hashed=hashed,
            ahead=ahead,
        )

    def inspect(self, path: Path, stack: str | None = None) -> Inspected:
        """The artifact's own stack, name and version (``stack`` forces an adapter), read after
        the file's state is taken: :meth:`publish_inspected` refuses the file if it changed since.
        """
        try:
            # Follows symbolic links as ``open`` does: the same file put_blob opens, if not replaced.
            st: os.stat_result | None = os.stat(path)
        except OSError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            raise EvidenceError(f"no such file: {path}")
        return Inspected(path, stacks.detect(path, stack), _state_of(st))

    def publish_inspected(
        self,
        inspected: Inspected,
        *,
        service: str,
        version: str | None,
        provenance: Provenance,
        evidence: Sequence[tuple[EvidenceKind, Path]] = (),
        progress: ProgressCallback | None = None,
        hashed: HashAhead | None = None,
        ahead: PublishAhead | None = None,
    ) -> PublishResult:
        """:meth:`publish` of a file already inspected; :class:`FileChangedDuringPublish` if the
        file was written to (or replaced) since :meth:`inspect` took its state.
        """
        svc = self.pipeline.service(service)
        path, own = inspected.path, inspected.own
        version = stacks.resolve_version(path, own, version)
        if ahead is not None and (client := ahead.client_for(self._target())) is not None:
            self.s3.client = client  # made ahead, for this very store: no second client
        # The client (botocore's imports and set-up) is made while the first read hashes the file.
        self.s3.warm_up()
        blob, uploaded = self.put_blob(
            path, progress, unchanged_since=inspected.state, hashed=hashed, ahead=ahead
        )
        refs, ev_uploaded = self._put_evidence(evidence)
        uploaded += ev_uploaded
        record = ArtifactRecord(
            service=service,
            digest=blob.digest,
            size=blob.size,
            media_type=svc.media_type,
            version=version,
            created_at=utcnow(),
            provenance=provenance,
            evidence=refs,
            s3_checksum=blob.s3_checksum,
            stack=own.stack,
            name=own.name,
            stack_details=own.details,
        )
        existing = self.find_record(service, blob.digest)
        if existing is not None:
            self._same_or_conflict(existing, record)
            attached = self._attach(existing, refs, provenance, via="publish").attached
            return PublishResult(existing, uploaded, already_published=True, attached=attached)
        # The same publish (same bytes, same identity) always has the same idempotency id, so an
        # earlier try that wrote its ledger event and died before the record, or a concurrent
        # identical publish, is found instead of recording a second ``published`` event.
        identity = hashlib.sha256(
            json.dumps(record.identity(), sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()[:32]
        idem = f"published:{blob.digest.hex}:{identity}"
        if not self._published_recently(service, idem):
            # The ledger event first, the record last: a record that exists means a complete publish.
            self.ledger.append(
                service,
                "published",
                blob.digest,
                actor=provenance.published_by,
                version=version,
                details={
                    "size": blob.size,
                    "commit": provenance.commit,
                    "build_url": provenance.build_url,
                    "evidence": [{"kind": r.kind, "digest": str(r.digest)} for r in refs],
                    "stack": own.stack,
                    "name": own.name,
                    **own.details,
                },
                idempotency_id=idem,
            )
        body = record.canonical_bytes()
        key = self.record_key(service, blob.digest)
        try:
            self.s3.put(key, body, create_only=True, content_type="application/json")
        except PreconditionFailed:
            # Either our own PUT landed and only its response was lost (botocore's retry then
            # meets our record: byte for byte ours, created_at included), or a concurrent
            # publish of the same bytes won the race.
            if self.s3.get(key) == body:
                return PublishResult(record, uploaded, already_published=False)
            winner = self.record(service, blob.digest)
            self._same_or_conflict(winner, record)
            attached = self._attach(winner, refs, provenance, via="publish").attached
            return PublishResult(winner, uploaded, already_published=True, attached=attached)
        return PublishResult(record, uploaded, already_published=False)

    def _published_recently(self, service: str, idem: str) -> bool:
        """Whether one of the service's last :data:`RECENT_EVENTS` ledger events is this publish's."""
        tip = self.ledger.tip(service, remember=True)  # the append that may follow starts there
        if tip.record is None:
            return False
        if tip.record.idempotency_id == idem:
            return True
        recent = self.ledger.read_range(service, tip.seq - RECENT_EVENTS + 1, tip.seq - 1)
        return any(r.idempotency_id == idem for r in recent)

    @staticmethod
    def _same_or_conflict(existing: ArtifactRecord, new: ArtifactRecord) -> None:
        """Refuse a re-publish whose identity differs in more than evidence and build provenance."""
        a, b = existing.identity(), new.identity()
        diffs = [
            f"{k}: stored {a[k]!r}, given {b[k]!r}"
            for k in a
            if a[k] != b[k] and k not in ATTACHABLE_ON_REPUBLISH
        ]
        if diffs:
            raise ArtifactConflict(str(new.digest), new.service, diffs)

    # -- attest -----------------------------------------------------------------------------------

    def attest(
        self,
        service: str,
        digest: Digest,
        evidence: Sequence[tuple[EvidenceKind, Path]],
        *,
        provenance: Provenance,
    ) -> AttestResult:
        """Attach evidence to a published artifact: its blobs, then one ``attested`` ledger event.

        The artifact record is not touched (records are immutable); see
        :mod:`promotion.evidence_set` for how attested reports join the publish evidence. Reports
        already effective (same kind and bytes) are skipped; when none is new nothing is recorded,
        so the same attest twice records one event.
        """
        self.pipeline.service(service)
        record = self.record(service, digest)
        refs, uploaded = self._put_evidence(evidence)
        result = self._attach(record, refs, provenance, via="attest")
        return AttestResult(record, result.attached, result.already, result.event, uploaded)

    def _put_evidence(self, evidence: Sequence[tuple[EvidenceKind, Path]]) -> tuple[list[EvidenceRef], int]:
        """Each report's blob (publish and attest send them alike); the bytes actually uploaded."""
        refs: list[EvidenceRef] = []
        uploaded = 0
        for kind, ev_path in evidence:
            blob, sent = self.put_blob(ev_path)
            uploaded += sent
            refs.append(EvidenceRef(kind=kind, digest=blob.digest, filename=ev_path.name, size=blob.size))
        return refs, uploaded

    def _attach(
        self, record: ArtifactRecord, refs: Sequence[EvidenceRef], provenance: Provenance, *, via: str
    ) -> AttestResult:
        """Record the reports of ``refs`` not yet effective for ``record`` as an ``attested`` event."""
        from promotion.evidence_set import evidence_for, not_yet_attached

        service, digest = record.service, record.digest
        state = self.ledger.tip(service).state
        new, already = not_yet_attached(evidence_for(self.ledger, record, state), refs)
        if not new:
            return AttestResult(record, (), tuple(already), None, 0)
        listed = [r.model_dump(mode="json") for r in new]
        # The same reports on top of the same attested state: a retried attest (its response
        # lost) finds its own record instead of writing a second one.
        basis = max(state.attested.get(str(digest), {}).values(), default=0)
        idem_src = json.dumps([basis, listed], sort_keys=True, separators=(",", ":")).encode()
        event = self.ledger.append(
            service,
            "attested",
            digest,
            actor=provenance.published_by,
            version=record.version,
            details={
                "evidence": listed,
                "via": via,
                "commit": provenance.commit,
                "build_url": _without_userinfo(provenance.build_url),
                "builder": provenance.builder,
            },
            idempotency_id=f"attested:{digest.hex}:{hashlib.sha256(idem_src).hexdigest()[:32]}",
        )
        return AttestResult(record, tuple(new), tuple(already), event, 0)

    def record(self, service: str, digest: Digest) -> ArtifactRecord:
        """The artifact record; :class:`ArtifactNotFound` if the digest was never published."""
        found = self.find_record(service, digest)
        if found is None:
            raise ArtifactNotFound(str(digest), service)
        return found

    def find_record(self, service: str, digest: Digest) -> ArtifactRecord | None:
        """The artifact record, or None if the digest was never published for ``service``."""
        body = self.s3.get(self.record_key(service, digest))
        if body is None:
            return None
        try:
            return ArtifactRecord.model_validate_json(body)
        except ValidationError as exc:
            raise StoreError(
                f"artifact record of {digest} for {service} is unreadable: {exc.errors()[0]['msg']}"
            ) from None

    # -- fetch and verify -------------------------------------------------------------------------

    def fetch_bytes(self, digest: Digest, *, max_size: int | None = None) -> bytes:
        """The blob's bytes, guaranteed to hash to ``digest`` (else :class:`DigestMismatch`)."""
        key = self.blob_key(digest)
        if max_size is not None:
            head = self.s3.head(key)
            if head is None:
                raise ArtifactNotFound(str(digest))
            if head.size > max_size:
                raise StoreError(f"{digest} is {head.size} bytes, more than the {max_size} allowed here")
        data = self.s3.get(key)
        if data is None:
            raise ArtifactNotFound(str(digest))
        actual = Digest.of_bytes(data)
        if actual != digest:
            raise DigestMismatch(str(digest), str(actual), f"s3://{self.s3.bucket}/{key}")
        return data

    def fetch_to(self, digest: Digest, dest: Path) -> int:
        """Stream the blob to ``dest`` while hashing; ``dest`` appears only if the digest matches."""
        key = self.blob_key(digest)
        chunks = self.s3.stream(key, CHUNK_SIZE)
        if chunks is None:
            raise ArtifactNotFound(str(digest))
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.partial")
        h = hashlib.sha256()
        n = 0
        try:
            with tmp.open("wb") as out:
                for chunk in chunks:
                    h.update(chunk)
                    out.write(chunk)
                    n += len(chunk)
            actual = Digest.from_hasher(h)
            if actual != digest:
                raise DigestMismatch(str(digest), str(actual), f"s3://{self.s3.bucket}/{key}")
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return n

    def verify_full(self, digest: Digest) -> CheckResult:
        """Re-hash every byte of the stored blob (streamed, large buffers). Raises on mismatch."""
        key = self.blob_key(digest)
        chunks = self.s3.stream(key, CHUNK_SIZE)
        if chunks is None:
            raise ArtifactNotFound(str(digest))
        actual = Digest.of_chunks(chunks)
        if actual != digest:
            raise DigestMismatch(str(digest), str(actual), f"s3://{self.s3.bucket}/{key}")
        return CheckResult(digest, "full", "every byte re-hashed")

    def verify_cheap(self, digest: Digest, expected_checksum: str | None = None) -> CheckResult:
        """Compare the checksum S3 computed at upload with the digest, without downloading.

        A single-part blob's S3 checksum *is* its digest. A multipart blob has a composite
        checksum (of its parts' CRC32s; SHA-256s for blobs published before), compared with the
        one recorded at publish (``expected_checksum``).
        """
        key = self.blob_key(digest)
        head = self.s3.head(key)
        if head is None:
            raise ArtifactNotFound(str(digest))
        where = f"s3://{self.s3.bucket}/{key}"
        stored = head.composite_checksum or head.checksum_sha256
        if stored is None:
            raise DigestMismatch(str(digest), "no checksum stored by the server", where)
        if "-" not in stored:
            actual = Digest("sha256:" + base64.b64decode(stored).hex())
            if actual != digest:
                raise DigestMismatch(str(digest), str(actual), where)
            return CheckResult(digest, "checksum", "S3 SHA-256 checksum equals the digest")
        if head.metadata.get("sha256") != digest.hex:
            raise DigestMismatch(str(digest), f"sha256:{head.metadata.get('sha256')}", where + " metadata")
        if expected_checksum and stored != expected_checksum:
            raise DigestMismatch(
                str(digest), f"composite checksum {stored} (recorded {expected_checksum})", where
            )
        return CheckResult(digest, "checksum", f"S3 composite checksum {stored} as recorded")


def _without_userinfo(url: str | None) -> str | None:
    """A build URL without ``user:password@``: credentials never reach the ledger."""
    if url is None or "@" not in url:
        return url
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
