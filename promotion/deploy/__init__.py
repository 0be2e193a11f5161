"""Deploying an artifact to an environment, without Prefect: the copy target and the deploy webhook.

Two independent ways to hand an environment its artifact, both driven by
:class:`~promotion.config.DeploymentTarget`:

* **copy** (:func:`copy_to_target`): a server-side copy of the blob into the environment's own
  bucket under a stable key (``{service}/current`` by default), tagged with the digest in its
  ``sha256`` metadata, then verified against the digest. :func:`read_target_digest` reads that
  tag back; the nightly sweep compares it with the ledger to detect drift.
* **webhook** (:func:`call_deploy_webhook`): a signed POST of a :class:`DeployPayload` (digest,
  version, size and a presigned GET URL of the blob) to a receiver that deploys it.

Webhook signatures
------------------
Every request carries two independent signatures over the exact body bytes, so a receiver can
use whichever its framework supports:

* `Standard Webhooks <https://www.standardwebhooks.com/>`_: ``webhook-id`` (the payload's
  idempotency key, identical across retries), ``webhook-timestamp`` (Unix seconds) and
  ``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``. As in the spec and
  its reference libraries, the HMAC key is the secret base64-decoded after an optional ``whsec_``
  prefix. A ``whsec_`` secret that is not base64 is refused (:class:`WebhookSecretError`); a
  secret without the prefix that is not base64 either is a plain shared secret, which no Standard
  Webhooks verifier could use: the request then carries only the GitHub-style signature, and a
  warning says so.
* GitHub style: ``X-Promotion-Signature-256: sha256=<hex HMAC-SHA256 of the body>``, keyed with the
  secret string's UTF-8 bytes exactly as configured (``whsec_`` prefix included), which is what
  GitHub-style verifiers do with a configured secret.

Both are computed by :mod:`promotion.signing`, the same code the CI webhook receiver checks with.

Neither the secret nor the presigned URL's query string (it holds a signature that grants read
access to the blob) ever appears in a message, a log record or an exception; see
:func:`redact_url`.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import re
import string
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

import httpx
from boto3.s3.transfer import TransferConfig
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from s3transfer.exceptions import S3CopyFailedError

from promotion import signing
from promotion.config import CopyTarget, WebhookTarget
from promotion.digest import CHUNK_SIZE, Digest
from promotion.errors import (
    ArtifactNotFound,
    BucketNotFound,
    PreconditionFailed,
    PromotionError,
    SigningSecretInvalid,
    StoreError,
    UsageError,
)

# The errors of deploying live in promotion.errors; re-exported under their old address, which
# tests and promotion.sweep import them from.
from promotion.errors import DeployError as DeployError
from promotion.errors import DeployFailed as DeployFailed
from promotion.errors import KeyTemplateError as KeyTemplateError
from promotion.errors import SourceChanged as SourceChanged
from promotion.errors import TargetBucketNotFound as TargetBucketNotFound
from promotion.errors import TargetCorrupt as TargetCorrupt
from promotion.errors import WebhookSecretError as WebhookSecretError
from promotion.s3 import S3
from promotion.store import ArtifactStore, CheckResult

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import CopySourceTypeDef

log = logging.getLogger(__name__)

MiB = 1024 * 1024
GiB = 1024 * MiB
#: The largest object a single CopyObject request may copy (an S3 limit); larger blobs are copied
#: by boto3's managed copy (multipart UploadPartCopy).
MAX_COPY_OBJECT_SIZE = 5 * GiB
#: Part size of the managed copy. boto3 enlarges it when 10,000 parts would not be enough.
COPY_PART_SIZE = 256 * MiB
COPY_CONCURRENCY = 8
#: How much of a failed webhook answer is kept in the error.
BODY_EXCERPT = 200
#: S3 presigned URLs signed with SigV4 are valid for at most 7 days.
MAX_PRESIGN = dt.timedelta(days=7)

VerificationMethod = Literal["checksum", "full"]
CopyMethod = Literal["CopyObject", "managed-copy"]


# --- copy target ------------------------------------------------------------------------------


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
                    dest.client.copy(copy_source, dest.bucket, key, ExtraArgs=args, Config=config)
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
    return CheckResult(digest, True, method, detail)


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
    # or none), get the full re-hash.
    composite = checksum is not None and ("-" in checksum or head.checksum_type == "COMPOSITE")
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


# --- presigned URLs and redaction -------------------------------------------------------------


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


def redact_url(url: str) -> str:
    """``url`` without its query string and user info: safe for messages and logs.

    >>> redact_url("https://s3.example/b/k?X-Amz-Signature=abc&X-Amz-Expires=3600")
    'https://s3.example/b/k?[redacted]'
    """
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "[redacted]" if parts.query else "", ""))


_SIGNATURE_RE = re.compile(
    r"(?i)((?:x-amz-signature|x-amz-credential|x-amz-security-token|signature|awsaccesskeyid)=)[^&\s\"'\\<]+"
)


def _scrubber(secrets: Iterable[str], url_parts: Iterable[str]) -> Callable[[str], str]:
    """A function removing ``secrets``, the ``url_parts`` and any URL signature from a text."""
    forms: set[str] = {s for s in secrets if s}
    for part in url_parts:
        # Also the forms a receiver may echo them in: URL-decoded, URL-encoded, JSON-escaped.
        # Short pieces ("3600") are left alone: they reveal nothing and would garble the text.
        forms.update(
            v for v in (part, unquote(part), quote(part, safe=""), part.replace("/", "\\/")) if len(v) >= 6
        )
    ordered = sorted(forms, key=len, reverse=True)

    def scrub(text: str) -> str:
        for v in ordered:
            text = text.replace(v, "[redacted]")
        return _SIGNATURE_RE.sub(r"\1[redacted]", text)

    return scrub


def _url_secrets(url: str) -> list[str]:
    query = urlsplit(url).query
    return (
        [query, *(v for _, v in parse_qsl(query, keep_blank_values=True)), *query.split("&")] if query else []
    )


# --- deploy webhook ---------------------------------------------------------------------------


class DeployPayload(BaseModel):
    """What a deploy webhook receives: which bytes to deploy where, and how to download them.

    ``presigned_url`` is a :class:`~pydantic.SecretStr`: it shows as ``**********`` in reprs and
    ``model_dump``; only :meth:`body` reveals it, into the request body.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    service: str = Field(min_length=1)
    environment: str = Field(min_length=1)
    digest: Digest
    version: str | None = None
    presigned_url: SecretStr
    size: int = Field(ge=0)
    requested_by: str = Field(min_length=1)
    #: Sent as ``webhook-id`` too: the same key on a retry lets the receiver deploy only once.
    idempotency_key: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")

    def body(self) -> bytes:
        """The canonical JSON of the payload (sorted keys, no spaces, UTF-8): the signed bytes."""
        data = self.model_dump(mode="json")
        data["presigned_url"] = self.presigned_url.get_secret_value()
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class WebhookResult:
    """A deploy webhook's 2xx answer."""

    url: str  # redacted
    status: int
    webhook_id: str
    timestamp: int
    elapsed_ms: float
    body_excerpt: str


def _standard_webhooks_key(secret: str, safe_url: str) -> bytes | None:
    """The Standard Webhooks key of the deploy secret, or None for a plain (non-base64) secret."""
    try:
        return signing.standard_webhooks_key(secret)
    except SigningSecretInvalid:
        if secret.strip().startswith(signing.WHSEC_PREFIX):
            # Never echo the secret: say what is wrong with it, not what it is.
            raise WebhookSecretError(
                "the deploy webhook secret starts with 'whsec_' but the rest is not valid base64; "
                "store a 'whsec_<base64>' secret (e.g. 'whsec_' + base64 of 24 random bytes) in the "
                "webhook's secret block"
            ) from None
    log.warning(
        "deploy webhook %s: its secret is not base64, so it cannot key a Standard Webhooks signature; "
        "sending only X-Promotion-Signature-256 (store 'whsec_' + base64 of 24 random bytes to send both)",
        safe_url,
    )
    return None


def call_deploy_webhook(
    target: WebhookTarget,
    secret: SecretStr | None,
    payload: DeployPayload,
    *,
    client: httpx.Client | None = None,
    timestamp: int | None = None,
) -> WebhookResult:
    """POST ``payload`` to the deploy webhook, signed with ``secret``; return its 2xx answer.

    ``secret`` None sends the request unsigned (a warning is logged). Redirects are not followed
    (a signed deploy request must not be re-sent elsewhere); the request times out after
    ``target.timeout``. There is no retry here: retry the whole call, and the unchanged
    idempotency key (``webhook-id``) lets the receiver de-duplicate.

    Raises :class:`DeployFailed` on a non-2xx answer (with the status and at most 200 scrubbed
    characters of the body), a timeout or a connection error.
    """
    url = str(target.url)
    safe_url = redact_url(url)
    body = payload.body()
    ts = int(time.time()) if timestamp is None else timestamp
    msg_id = payload.idempotency_key
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "prefect-promotion",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
    }
    hidden: list[str] = []
    if secret is not None:
        raw = secret.get_secret_value()
        key = _standard_webhooks_key(raw, safe_url)
        if key is not None:
            headers["webhook-signature"] = signing.standard_webhooks_signature(key, msg_id, ts, body)
        headers["X-Promotion-Signature-256"] = signing.github_signature(raw, body)
        hidden += [raw, raw.removeprefix("whsec_")]
    else:
        log.warning("deploy webhook %s has no secret: sending the request UNSIGNED", safe_url)
    scrub = _scrubber(hidden, _url_secrets(payload.presigned_url.get_secret_value()) + _url_secrets(url))
    what = f"deploy webhook {safe_url} ({payload.service} {payload.digest.short} to {payload.environment})"
    timeout = target.timeout.total_seconds()
    started = time.monotonic()
    try:
        if client is None:
            with httpx.Client(follow_redirects=False) as own:
                resp = own.post(url, content=body, headers=headers, timeout=timeout)
        else:
            resp = client.post(url, content=body, headers=headers, timeout=timeout, follow_redirects=False)
    except httpx.TimeoutException:
        raise DeployFailed(
            f"{what} did not answer within {timeout:g}s. Check that the receiver is up and fast "
            "enough, or raise target.webhook.timeout; retrying is safe: the receiver sees the same "
            "webhook-id and can ignore a deploy it already did.",
            url=safe_url,
        ) from None
    except httpx.HTTPError as exc:
        raise DeployFailed(
            f"{what} could not be reached: {scrub(_first_line(exc))}. Check target.webhook.url and "
            "that the receiver is running and reachable from this worker.",
            url=safe_url,
        ) from None
    elapsed_ms = (time.monotonic() - started) * 1000
    excerpt = scrub(resp.text[:65536])[:BODY_EXCERPT]
    if not 200 <= resp.status_code < 300:
        raise DeployFailed(
            f"{what} answered HTTP {resp.status_code}: {excerpt!r}. The receiver refused or failed "
            "the deploy; see its logs. Retrying is safe (same webhook-id).",
            url=safe_url,
            status=resp.status_code,
            body_excerpt=excerpt,
        )
    log.info("%s answered HTTP %s in %.0f ms", what, resp.status_code, elapsed_ms)
    return WebhookResult(
        url=safe_url,
        status=resp.status_code,
        webhook_id=msg_id,
        timestamp=ts,
        elapsed_ms=elapsed_ms,
        body_excerpt=excerpt,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
