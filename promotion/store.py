"""The artifact store: content-addressed blobs and per-service artifact records in S3.

Layout::

    {prefix}blobs/sha256/<hex>                         the bytes, named by their digest
    {prefix}artifacts/<service>/sha256/<hex>.json      artifact record (version, provenance, evidence)
    {prefix}ledger/<service>/...                       the promotion ledger (see promotion.ledger)

Publishing reads the file exactly once: the digest is computed while the parts are read, each part
is sent with its own SHA-256 checksum (the server refuses a part that arrives corrupted), and a
single-part upload carries the whole digest as its checksum. A blob that already exists is not
uploaded again.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pydantic import ValidationError

from promotion.config import Pipeline
from promotion.digest import CHUNK_SIZE, Digest
from promotion.errors import (
    ArtifactConflict,
    ArtifactNotFound,
    DigestMismatch,
    EvidenceError,
    StoreError,
)
from promotion.ledger import Ledger
from promotion.models import (
    ArtifactRecord,
    BlobInfo,
    EvidenceKind,
    EvidenceRef,
    Provenance,
    utcnow,
)
from promotion.s3 import S3, PreconditionFailed

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

MiB = 1024 * 1024
#: Files up to this size go in one PUT whose checksum is the digest itself.
MULTIPART_THRESHOLD = 16 * MiB
#: Parts of a multipart upload (S3 allows at most 10,000 parts, so large files get larger parts).
PART_SIZE = 16 * MiB
#: Files up to this size are read once into memory, hashed, then uploaded to their final key.
#: Larger files are streamed once to a staging key and moved by a server-side copy.
MEMORY_LIMIT = int(os.environ.get("PROMOTION_PUBLISH_MEMORY_LIMIT", str(1024 * MiB)))
UPLOAD_THREADS = 8

ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class PublishResult:
    record: ArtifactRecord
    uploaded_bytes: int
    already_published: bool

    @property
    def digest(self) -> Digest:
        return self.record.digest


@dataclass(frozen=True)
class CheckResult:
    digest: Digest
    ok: bool
    method: str
    detail: str


def _b64sha256(data: bytes | memoryview) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def parse_evidence(specs: Sequence[str], *, follow_symlinks: bool = False) -> list[tuple[EvidenceKind, Path]]:
    """``["junit=report.xml", ...]`` -> kinds and paths, each checked before anything is sent.

    Each file is opened without following symbolic links (unless ``follow_symlinks`` and the
    target is inside the current directory), must be a regular file, and a parsed kind must be
    a report of its kind within the parsers' size limit. The paths returned are private copies
    of exactly the bytes checked (see :mod:`promotion.evidence_intake`); keep the returned list
    while using them.
    """
    from promotion.evidence_intake import read_evidence

    return read_evidence(specs, follow_symlinks=follow_symlinks)


class ArtifactStore:
    """Publish, fetch and verify artifacts in the configured S3 bucket."""

    def __init__(self, pipeline: Pipeline, s3: S3 | None = None) -> None:
        self.pipeline = pipeline
        self.s3 = s3 or S3(pipeline.store)
        self.ledger = Ledger(self.s3)

    # -- keys -------------------------------------------------------------------------------------

    def blob_key(self, digest: Digest) -> str:
        return self.s3.key("blobs", "sha256", digest.hex)

    def record_key(self, service: str, digest: Digest) -> str:
        return self.s3.key("artifacts", service, "sha256", f"{digest.hex}.json")

    # -- blobs ------------------------------------------------------------------------------------

    def put_blob(self, path: Path, progress: ProgressCallback | None = None) -> tuple[BlobInfo, int]:
        """Upload a file under its digest; returns the blob and the bytes actually uploaded."""
        size = path.stat().st_size
        try:
            with path.open("rb") as f:
                if size <= MEMORY_LIMIT:
                    return self._put_from_memory(f, size, progress)
                return self._put_staged(f, size, progress)
        except OSError as exc:
            raise EvidenceError(f"cannot read {path}: {exc.strerror or exc}") from None

    def put_blob_bytes(self, data: bytes) -> tuple[BlobInfo, int]:
        import io

        return self._put_from_memory(io.BytesIO(data), len(data), None)

    @staticmethod
    def _part_size(size: int) -> int:
        return max(PART_SIZE, math.ceil(size / 9_000 / MiB) * MiB)

    def _put_from_memory(
        self, f: IO[bytes], size: int, progress: ProgressCallback | None
    ) -> tuple[BlobInfo, int]:
        part_size = self._part_size(size) if size > MULTIPART_THRESHOLD else max(size, 1)
        h = hashlib.sha256()
        parts: list[bytes] = []
        while chunk := f.read(part_size):
            h.update(chunk)
            parts.append(chunk)
        digest = Digest.from_hasher(h)
        total = sum(map(len, parts))
        existing = self.s3.head(self.blob_key(digest))
        if existing is not None and existing.size == total:
            if progress:
                progress(total)
            return BlobInfo(digest=digest, size=total, s3_checksum=existing.checksum_sha256), 0
        key = self.blob_key(digest)
        meta = {"sha256": digest.hex}
        if total <= MULTIPART_THRESHOLD:
            data = parts[0] if parts else b""
            try:
                self.s3.put(key, data, create_only=True, checksum_sha256=digest.b64, metadata=meta)
            except PreconditionFailed:
                pass  # someone uploaded the same bytes meanwhile: same digest, same content
            if progress:
                progress(total)
            return BlobInfo(digest=digest, size=total, s3_checksum=digest.b64), total
        checksum = self._multipart(key, parts, meta, progress, create_only=True)
        return BlobInfo(digest=digest, size=total, s3_checksum=checksum), total

    def _multipart(
        self,
        key: str,
        parts: Iterable[bytes],
        meta: dict[str, str],
        progress: ProgressCallback | None,
        *,
        create_only: bool,
    ) -> str | None:
        """Multipart upload with a SHA-256 checksum per part; returns S3's composite checksum.

        ``parts`` is consumed by this thread (so a running hash over it sees the bytes in order)
        while a pool sends them; at most ``2 * UPLOAD_THREADS`` parts wait in memory.
        """
        client = self.s3.client
        bucket = self.s3.bucket
        upload_id = self.s3.call(
            "CreateMultipartUpload",
            key,
            lambda: client.create_multipart_upload(
                Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256", Metadata=meta
            ),
        )["UploadId"]

        def send(number: int, data: bytes) -> CompletedPartTypeDef:
            checksum = _b64sha256(data)
            r = self.s3.call(
                "UploadPart",
                key,
                lambda: client.upload_part(
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=data,
                    ChecksumSHA256=checksum,
                ),
            )
            if progress:
                progress(len(data))
            return {"PartNumber": number, "ETag": r["ETag"], "ChecksumSHA256": checksum}

        try:
            futures: list[Future[CompletedPartTypeDef]] = []
            with ThreadPoolExecutor(max_workers=UPLOAD_THREADS) as pool:
                for number, data in enumerate(parts, start=1):
                    pending = [fu for fu in futures if not fu.done()]
                    if len(pending) >= 2 * UPLOAD_THREADS:
                        wait(pending, return_when=FIRST_COMPLETED)
                    futures.append(pool.submit(send, number, data))
                done = [fu.result() for fu in futures]
            kwargs: dict[str, Any] = {
                "Bucket": bucket,
                "Key": key,
                "UploadId": upload_id,
                "MultipartUpload": {"Parts": done},
            }
            if create_only:
                kwargs["IfNoneMatch"] = "*"
            try:
                r = self.s3.call(
                    "CompleteMultipartUpload", key, lambda: client.complete_multipart_upload(**kwargs)
                )
            except PreconditionFailed:
                # The same bytes were completed by someone else meanwhile.
                self._abort(key, upload_id)
                head = self.s3.head(key)
                return head.checksum_sha256 if head else None
            return r.get("ChecksumSHA256")
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
            pass  # best effort; a lifecycle rule on uploads/ cleans up what is left

    def _put_staged(self, f: IO[bytes], size: int, progress: ProgressCallback | None) -> tuple[BlobInfo, int]:
        """Too large to hold in memory: stream once to a staging key while hashing, then copy."""
        part_size = self._part_size(size)
        staging = self.s3.key("uploads", uuid.uuid4().hex)
        h = hashlib.sha256()

        def parts() -> Iterator[bytes]:
            while chunk := f.read(part_size):
                h.update(chunk)
                yield chunk

        checksum = self._multipart(staging, parts(), {}, progress, create_only=False)
        digest = Digest.from_hasher(h)
        key = self.blob_key(digest)
        try:
            existing = self.s3.head(key)
            if existing is None:
                self.s3.call(
                    "CopyObject",
                    key,
                    lambda: self.s3.client.copy(
                        {"Bucket": self.s3.bucket, "Key": staging},
                        self.s3.bucket,
                        key,
                        ExtraArgs={"Metadata": {"sha256": digest.hex}, "MetadataDirective": "REPLACE"},
                    ),
                )
                existing = self.s3.head(key)
            if existing is None or existing.size != size:
                raise StoreError(f"server-side copy to {key} did not produce {size} bytes")
        finally:
            self.s3.delete(staging)
        return BlobInfo(digest=digest, size=size, s3_checksum=existing.checksum_sha256 or checksum), size

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
    ) -> PublishResult:
        """Upload ``path`` and its evidence, write the artifact record and a ``published`` event.

        Re-publishing identical bytes with identical metadata uploads nothing and writes nothing.
        """
        svc = self.pipeline.service(service)
        if not path.is_file():
            raise EvidenceError(f"no such file: {path}")
        blob, uploaded = self.put_blob(path, progress)
        refs: list[EvidenceRef] = []
        for kind, ev_path in evidence:
            ev_blob, ev_uploaded = self.put_blob(ev_path)
            uploaded += ev_uploaded
            refs.append(
                EvidenceRef(kind=kind, digest=ev_blob.digest, filename=ev_path.name, size=ev_blob.size)
            )
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
        )
        existing = self.find_record(service, blob.digest)
        if existing is not None:
            self._same_or_conflict(existing, record)
            return PublishResult(existing, uploaded, already_published=True)
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
            },
            idempotency_id=f"published:{blob.digest.hex}:{uuid.uuid4().hex}",
        )
        try:
            self.s3.put(
                self.record_key(service, blob.digest),
                record.canonical_bytes(),
                create_only=True,
                content_type="application/json",
            )
        except PreconditionFailed:
            # A concurrent publish of the same bytes won the race.
            winner = self.record(service, blob.digest)
            self._same_or_conflict(winner, record)
            return PublishResult(winner, uploaded, already_published=True)
        return PublishResult(record, uploaded, already_published=False)

    @staticmethod
    def _same_or_conflict(existing: ArtifactRecord, new: ArtifactRecord) -> None:
        a, b = existing.identity(), new.identity()
        diffs = [f"{k}: stored {a[k]!r}, given {b[k]!r}" for k in a if a[k] != b[k]]
        if diffs:
            raise ArtifactConflict(str(new.digest), new.service, diffs)

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
        return CheckResult(digest, True, "full", "every byte re-hashed")

    def verify_cheap(self, digest: Digest, expected_checksum: str | None = None) -> CheckResult:
        """Compare the checksum S3 computed at upload with the digest, without downloading.

        A single-part blob's S3 checksum *is* its digest. A multipart blob has a composite
        checksum, compared with the one recorded at publish (``expected_checksum``).
        """
        key = self.blob_key(digest)
        head = self.s3.head(key)
        if head is None:
            raise ArtifactNotFound(str(digest))
        where = f"s3://{self.s3.bucket}/{key}"
        stored = head.checksum_sha256
        if stored is None:
            raise DigestMismatch(str(digest), "no SHA-256 checksum stored by the server", where)
        if "-" not in stored:
            actual = Digest("sha256:" + base64.b64decode(stored).hex())
            if actual != digest:
                raise DigestMismatch(str(digest), str(actual), where)
            return CheckResult(digest, True, "checksum", "S3 SHA-256 checksum equals the digest")
        if head.metadata.get("sha256") != digest.hex:
            raise DigestMismatch(str(digest), f"sha256:{head.metadata.get('sha256')}", where + " metadata")
        if expected_checksum and stored != expected_checksum:
            raise DigestMismatch(
                str(digest), f"composite checksum {stored} (recorded {expected_checksum})", where
            )
        return CheckResult(digest, True, "checksum", f"S3 composite checksum {stored} as recorded")
