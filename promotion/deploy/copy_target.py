"""The copy target: the blob copied server-side into the environment's bucket, and checked.

:func:`copy_to_target` copies the blob under a stable key (:func:`target_key`, ``{service}/current``
by default), tagged with the digest in its ``sha256`` metadata, then verifies the copy
(:func:`verify_target`); :func:`read_target_digest` reads the tag back, which the nightly sweep
compares with the ledger to detect drift. :func:`presign_blob` gives a receiver a time-limited URL
of the blob (the deploy webhook sends it).
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from boto3.s3.inject import copy as managed_copy_of
from boto3.s3.transfer import TransferConfig
from pydantic import SecretStr
from s3transfer.exceptions import S3CopyFailedError

from promotion.config import CopyTarget
from promotion.digest import CHUNK_SIZE, Digest
from promotion.errors import (
    ArtifactNotFound,
    BucketNotFound,
    DeployError,
    KeyTemplateError,
    PreconditionFailed,
    PromotionError,
    SourceChanged,
    StoreError,
    TargetBucketNotFound,
    TargetCorrupt,
    UsageError,
)
from promotion.s3 import S3
from promotion.store import ArtifactStore, CheckResult

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import CopySourceTypeDef

# One logger name for the whole package, as before the split: log configuration that names
# "promotion.deploy" keeps seeing every record.
log = logging.getLogger("promotion.deploy")

MiB = 1024 * 1024
GiB = 1024 * MiB
#: The largest object a single CopyObject request may copy (an S3 limit); larger blobs are copied
#: by boto3's managed copy (multipart UploadPartCopy).
MAX_COPY_OBJECT_SIZE = 5 * GiB
#: Part size of the managed copy. boto3 enlarges it when 10,000 parts would not be enough.
COPY_PART_SIZE = 256 * MiB
COPY_CONCURRENCY = 8
#: S3 presigned URLs signed with SigV4 are valid for at most 7 days.
MAX_PRESIGN = dt.timedelta(days=7)

VerificationMethod = Literal["checksum", "full"]
CopyMethod = Literal["CopyObject", "managed-copy"]


@dataclass(frozen=True)
class CopyResult:
    """Where the environment's copy is, and how it was verified against the digest."""

    digest: Digest
    bucket: str
    key: str
    size: int
    etag: str
    #: ``CopyObject`` for blobs up to 5 GiB, ``managed-copy`` (multipart) above.
    method: CopyMethod
    #: ``checksum``: the server's full-object SHA-256 of the copy equals the digest;
    #: ``full``: every byte of the copy was read back and re-hashed.
    verification: VerificationMethod
    detail: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


_KEY_FIELDS = frozenset({"service", "version", "digest_hex"})


def target_key(target: CopyTarget, service: str, version: str | None, digest: Digest | None) -> str:
    """The object key of ``service``'s copy: ``target.prefix`` + the filled-in ``key_template``.

    Only plain ``{service}``, ``{version}`` and ``{digest_hex}`` fields are allowed (no attribute
    access, indexing or format specs: the template comes from a file and must not reach into
    objects).
    """
    template = target.key_template
    try:
        parsed = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise KeyTemplateError(
            f"copy_to.key_template {template!r} is not a valid template ({exc}); "
            "use e.g. '{service}/current' or '{service}/{version}'"
        ) from None
    fields = {f for f, _, _ in parsed}
    if not fields <= _KEY_FIELDS or any(spec or conv for _, spec, conv in parsed):
        raise KeyTemplateError(
            f"copy_to.key_template {template!r} may only use the fields {{service}}, {{version}} "
            "and {digest_hex}, without format specs; fix it in the pipeline file"
        )
    if "version" in fields and not version:
        raise KeyTemplateError(
            f"copy_to.key_template {template!r} uses {{version}} but this artifact has no "
            "version; publish it with --version, or remove {version} from the template"
        )
    if "digest_hex" in fields and digest is None:
        raise KeyTemplateError(
            f"copy_to.key_template {template!r} uses {{digest_hex}}, so the key of the "
            "environment's current copy cannot be known without the digest; use a stable key "
            "such as '{service}/current' to let drift be detected"
        )
    key = target.prefix + template.format(
        service=service, version=version or "", digest_hex=digest.hex if digest else ""
    )
    if not key or key.endswith("/"):
        raise KeyTemplateError(
            f"copy_to.prefix + key_template give the key {key!r}, which names no object; "
            "end the template with a name, e.g. '{service}/current'"
        )
    return key


def _target_s3(store: ArtifactStore, target: CopyTarget) -> S3:
    """An :class:`S3` bound to the target bucket, sharing the store's client (and credentials)."""
    cfg = store.s3.cfg.model_copy(update={"bucket": target.bucket, "prefix": ""})
    return S3(cfg, client=store.s3.client)


def _check_target_bucket(dest: S3, environment: str | None) -> None:
    # Probe the bucket first: SeaweedFS answers a CopyObject into a missing bucket with a 500
    # InternalError (retried, then unclear), and a HEAD of a key in a missing bucket with the same
    # bare 404 as a missing key.
    try:
        dest.check_bucket()
    except BucketNotFound:
        raise TargetBucketNotFound(dest.bucket, dest.endpoint, environment) from None


def copy_to_target(
    store: ArtifactStore,
    target: CopyTarget,
    service: str,
    digest: Digest,
    version: str | None,
    *,
    environment: str | None = None,
    full_verify: bool = False,
) -> CopyResult:
    """Copy the blob of ``digest`` into the environment's bucket, server-side, and verify the copy.

    The copy carries ``sha256``/``service``/``version`` metadata (replacing the blob's) and asks
    the server for a SHA-256 checksum of the copy. It is conditional on the source ETag read just
    before, so a blob replaced in between is refused (:class:`SourceChanged`) instead of copied.
    The copy is then verified (:func:`verify_target`); ``full_verify`` forces a full re-hash even
    when the server reports a checksum. ``environment`` only names the setting to fix in errors.

    Raises :class:`ArtifactNotFound`, :class:`TargetBucketNotFound`, :class:`SourceChanged`,
    :class:`KeyTemplateError` or :class:`~promotion.errors.DigestMismatch` (:class:`TargetCorrupt`).
    """
    key = target_key(target, service, version, digest)
    src_key = store.blob_key(digest)
    dest = _target_s3(store, target)
    _check_target_bucket(dest, environment)
    source = store.s3.head(src_key)
    if source is None:
        raise ArtifactNotFound(str(digest))
    metadata = {"sha256": digest.hex, "service": service}
    if version is not None:
        metadata["version"] = version
    copy_source: CopySourceTypeDef = {"Bucket": store.s3.bucket, "Key": src_key}
    args: dict[str, Any] = {
        "Metadata": metadata,
        "MetadataDirective": "REPLACE",
        "ChecksumAlgorithm": "SHA256",
        "CopySourceIfMatch": source.etag,
    }
    method: CopyMethod
    try:
        if source.size > MAX_COPY_OBJECT_SIZE:
            method = "managed-copy"
            config = TransferConfig(
                multipart_threshold=MAX_COPY_OBJECT_SIZE,
                multipart_chunksize=COPY_PART_SIZE,
                max_concurrency=COPY_CONCURRENCY,
            )

            def managed_copy() -> None:
                try:
                    # boto3's managed copy, called as the function it injects into boto3's clients
                    # (ours are botocore's: promotion/s3_client.py).
                    managed_copy_of(
                        dest.client, dict(copy_source), dest.bucket, key, ExtraArgs=args, Config=config
                    )
                except S3CopyFailedError as exc:
                    # s3transfer turns the 412 of an UploadPartCopy into its own exception.
                    if "did not match expected ETag" in str(exc):
                        raise PreconditionFailed(f"CopyObject {key}: precondition failed") from None
                    raise StoreError(f"managed copy to s3://{dest.bucket}/{key} failed: {exc}") from None

            dest.call("CopyObject", key, managed_copy)
        else:
            method = "CopyObject"
            dest.call(
                "CopyObject",
                key,
                lambda: dest.client.copy_object(Bucket=dest.bucket, Key=key, CopySource=copy_source, **args),
            )
    except PreconditionFailed:
        raise SourceChanged(digest, f"s3://{store.s3.bucket}/{src_key}") from None
    except BucketNotFound:
        raise TargetBucketNotFound(dest.bucket, dest.endpoint, environment) from None
    verification, detail, size, etag = _verify(dest, key, digest, expected_size=source.size, full=full_verify)
    result = CopyResult(
        digest=digest,
        bucket=dest.bucket,
        key=key,
        size=size,
        etag=etag,
        method=method,
        verification=verification,
        detail=detail,
    )
    log.info("copied %s (%s bytes) to %s by %s, verified: %s", digest.short, size, result.url, method, detail)
    return result


def verify_target(
    store: ArtifactStore,
    target: CopyTarget,
    service: str,
    version: str | None,
    digest: Digest,
    *,
    environment: str | None = None,
    full: bool = False,
) -> CheckResult:
    """Check that the environment's copy holds exactly the bytes of ``digest``.

    Uses the server's full-object SHA-256 checksum of the copy when it reports one, and otherwise
    (no SHA-256, or a composite checksum of a multipart copy) re-hashes the whole object in
    4 MiB reads; ``full`` always re-hashes. Raises :class:`TargetCorrupt` (a
    :class:`~promotion.errors.DigestMismatch`) when the copy is missing, differs, or is tagged
    with another digest, and :class:`TargetBucketNotFound` when the bucket does not exist.
    """
    key = target_key(target, service, version, digest)
    dest = _target_s3(store, target)
    _check_target_bucket(dest, environment)
    method, detail, _, _ = _verify(dest, key, digest, expected_size=None, full=full)
    return CheckResult(digest, method, detail)


def _verify(
    dest: S3, key: str, digest: Digest, *, expected_size: int | None, full: bool
) -> tuple[VerificationMethod, str, int, str]:
    """(method, detail, size, etag) of a copy that holds ``digest``; else :class:`TargetCorrupt`."""
    where = f"s3://{dest.bucket}/{key}"
    head = dest.head(key)
    if head is None:
        raise TargetCorrupt(str(digest), "nothing (the object is missing)", where)
    size, etag = head.size, head.etag
    tagged = head.metadata.get("sha256")
    if tagged != digest.hex:
        raise TargetCorrupt(str(digest), f"an object tagged sha256:{tagged}", where)
    if expected_size is not None and size != expected_size:
        raise TargetCorrupt(str(digest), f"{size} bytes instead of {expected_size}", where)
    checksum = head.checksum_sha256
    # A multipart copy has a composite checksum (a hash of the part hashes, "<b64>-<parts>") that
    # says nothing directly about the digest. Those, and servers that keep no SHA-256 for the copy
    # (SeaweedFS ignores ChecksumAlgorithm on CopyObject: the copy keeps the source's checksum,
    # or none; a multipart blob's is a composite of its parts' CRC32s), get the full re-hash.
    composite = head.composite_checksum is not None or (
        checksum is not None and head.checksum_type == "COMPOSITE"
    )
    if checksum is not None and not composite and not full:
        actual = Digest("sha256:" + base64.b64decode(checksum).hex())
        if actual != digest:
            raise TargetCorrupt(str(digest), f"{actual} (the server's SHA-256 checksum)", where)
        return "checksum", "the server's SHA-256 checksum of the copy equals the digest", size, etag
    chunks = dest.stream(key, CHUNK_SIZE)
    if chunks is None:
        raise TargetCorrupt(str(digest), "nothing (the object is missing)", where)
    actual = Digest.of_chunks(chunks)
    if actual != digest:
        raise TargetCorrupt(str(digest), f"{actual} (re-hashed)", where)
    why = "forced" if full else ("composite checksum" if composite else "no SHA-256 checksum reported")
    return "full", f"every byte of the copy re-hashed ({why})", size, etag


def read_target_digest(
    store: ArtifactStore,
    target: CopyTarget,
    service: str,
    version: str | None,
    *,
    environment: str | None = None,
) -> Digest | None:
    """The digest the environment's copy is tagged with (its ``sha256`` metadata), or None.

    None means there is no copy, or an object without the tag (not written by a promotion).
    This reads the tag only (one HEAD); :func:`verify_target` checks the bytes. The key template
    must not use ``{digest_hex}`` (the key would depend on the answer).
    """
    key = target_key(target, service, version, None)
    dest = _target_s3(store, target)
    try:
        head = dest.head(key)
    except BucketNotFound:
        raise TargetBucketNotFound(dest.bucket, dest.endpoint, environment) from None
    if head is None:
        # A missing bucket answers a HEAD with the same bare 404 as a missing key.
        _check_target_bucket(dest, environment)
        return None
    tagged = head.metadata.get("sha256")
    if tagged is None:
        return None
    try:
        return Digest("sha256:" + tagged)
    except PromotionError:
        raise DeployError(
            f"s3://{dest.bucket}/{key} has the sha256 metadata {tagged[:80]!r}, which is not a "
            "digest: the object was not written by a promotion. Promote an artifact to this "
            "environment again to replace it."
        ) from None


# --- presigned URLs ---------------------------------------------------------------------------


def presign_blob(
    store: ArtifactStore, digest: Digest, expires: dt.timedelta = dt.timedelta(hours=1)
) -> SecretStr:
    """A presigned GET URL of the blob, valid for ``expires``, wrapped so it never shows in reprs.

    The blob must exist (checked with one HEAD, so a receiver never gets a URL to nothing).
    """
    if not dt.timedelta(seconds=1) <= expires <= MAX_PRESIGN:
        raise UsageError(f"a presigned URL must expire in 1 second to 7 days, not {expires}")
    key = store.blob_key(digest)
    if store.s3.head(key) is None:
        raise ArtifactNotFound(str(digest))
    url = store.s3.call(
        "presign GET",
        key,
        lambda: store.s3.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": store.s3.bucket, "Key": key},
            ExpiresIn=int(expires.total_seconds()),
        ),
    )
    return SecretStr(url)
