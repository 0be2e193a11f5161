"""A thin layer over boto3's S3 client that speaks the product's errors.

Every call goes through :meth:`S3.call`, which turns botocore's exceptions into
:class:`~promotion.errors.PromotionError` subclasses with a message that says what to do, so
nothing above this module needs to know botocore.

It is the one place that knows how S3 says things: "not found" is decided by :func:`is_not_found`
alone (GET, HEAD and DELETE answer it differently: ``NoSuchKey``, a bare ``404``), and listing
with pagination is :meth:`S3.list_objects` / :meth:`S3.list_folders` alone.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from promotion.config import StoreConfig
from promotion.errors import (
    AccessDenied,
    BucketNotFound,
    PreconditionFailed,
    StoreCredentialsMissing,
    StoreError,
    StoreUnavailable,
    StoreUnreachable,
)
from promotion.s3_client import endpoint_for, new_client, new_session
from promotion.settings import settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ListObjectsV2OutputTypeDef

T = TypeVar("T")

_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden", "403"}
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
#: Answers that say "not now" about the server, not anything about the object: after botocore's
#: own retries they are infrastructure errors (StoreUnavailable), never a verdict.
_UNAVAILABLE = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "ServiceUnavailable",
    "InternalError",
    "RequestLimitExceeded",
}


@dataclass(frozen=True)
class Head:
    """What a HEAD (with ``ChecksumMode=ENABLED``) says about an object."""

    size: int
    etag: str
    #: The server's base64 SHA-256 checksum; a multipart upload's composite one ends in ``-<parts>``.
    checksum_sha256: str | None
    metadata: dict[str, str]
    #: ``FULL_OBJECT`` or ``COMPOSITE`` when the server says (SeaweedFS does not).
    checksum_type: str | None = None
    #: The server's base64 CRC32 checksum: what a multipart blob's parts carry (composite,
    #: ``<b64>-<parts>``), see :mod:`promotion.store`.
    checksum_crc32: str | None = None

    @property
    def composite_checksum(self) -> str | None:
        """A multipart upload's composite checksum (``<b64>-<parts>``), whichever algorithm."""
        for value in (self.checksum_crc32, self.checksum_sha256):
            if value is not None and "-" in value:
                return value
        return None


@dataclass(frozen=True)
class ListedObject:
    """One object as a listing reports it (LastModified is the upload time)."""

    key: str
    size: int
    last_modified: dt.datetime
    etag: str


def make_client(cfg: StoreConfig, *, max_attempts: int | None = None, pool: int = 32) -> S3Client:
    """An S3 client for the configured endpoint (:func:`promotion.s3_client.new_client`).

    Credentials come from the Prefect ``AwsCredentials`` block named in the config, or else from
    the standard AWS chain (environment, profile, instance role).
    """
    profile, credentials = (
        _credentials_from_block(cfg.credentials_block) if cfg.credentials_block else (None, {})
    )
    return new_client(
        endpoint=endpoint_for(cfg.endpoint_url),
        region=cfg.region,
        max_attempts=settings().s3_max_attempts if max_attempts is None else max_attempts,
        pool=pool,
        session=new_session(profile) if profile else None,
        credentials=credentials,
    )


def _credentials_from_block(name: str) -> tuple[str | None, dict[str, str]]:
    """(profile, credentials) from a Prefect credentials block: ``SLUG/NAME``, or ``NAME`` for
    prefect-aws's ``aws-credentials`` type (read through Prefect's API, so prefect-aws need not be
    installed). A region in the block is not used: the store's ``region`` is the client's.

    Prefect is imported here only: it costs seconds to import and most commands never need it.
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from promotion.errors import ConfigError

    slug, _, block = name.rpartition("/")
    slug = slug or "aws-credentials"
    try:
        with get_client(sync_client=True) as client:
            doc = client.read_block_document_by_name(name=block, block_type_slug=slug, include_secrets=True)
    except ObjectNotFound:
        raise ConfigError(
            "store.credentials_block",
            [f"no {slug} block named {block!r} on the Prefect server; create it or unset credentials_block"],
        ) from None
    data = doc.data
    kwargs: dict[str, Any] = {
        "aws_access_key_id": data.get("aws_access_key_id"),
        "aws_secret_access_key": _reveal(data.get("aws_secret_access_key")),
        "aws_session_token": _reveal(data.get("aws_session_token")),
    }
    return data.get("profile_name") or None, {k: str(v) for k, v in kwargs.items() if v}


def _reveal(value: Any) -> str | None:
    if value is None:
        return None
    getter = getattr(value, "get_secret_value", None)
    return str(getter() if getter else value)


class S3:
    """Bucket-bound S3 operations raising product errors."""

    def __init__(self, cfg: StoreConfig, client: S3Client | None = None) -> None:
        self.cfg = cfg
        self.bucket = cfg.bucket
        self.prefix = cfg.prefix
        self._client: S3Client | None = client
        self._client_lock = threading.Lock()
        self.endpoint = str(cfg.endpoint_url) if cfg.endpoint_url else f"s3.{cfg.region}.amazonaws.com"

    @property
    def client(self) -> S3Client:
        """The boto3 client, made on first use (once, whichever thread gets here first)."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = make_client(self.cfg)
        return self._client

    @client.setter
    def client(self, value: S3Client) -> None:
        self._client = value

    def warm_up(self) -> None:
        """Make the client on a background thread now, so that a caller with other work to do
        first (hashing a file) does not wait for it later. An error is not raised here: the
        first real use makes the client again and raises it."""

        def make() -> None:
            try:
                self.client  # noqa: B018 - the property makes the client
            except Exception:  # noqa: BLE001, S110 - raised again by the first real use
                pass

        threading.Thread(target=make, name="s3-client-warm-up", daemon=True).start()

    def key(self, *parts: str) -> str:
        return self.prefix + "/".join(parts)

    # -- error translation ----------------------------------------------------------------------

    def call(self, operation: str, key: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except ClientError as exc:
            raise self._translate(exc, operation, key) from None
        except NoCredentialsError:
            raise StoreCredentialsMissing(
                "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or "
                "AWS_PROFILE), or name an AwsCredentials block in store.credentials_block"
            ) from None
        except (BotoConnectionError, ReadTimeoutError) as exc:
            raise StoreUnreachable(self.endpoint, _short(exc)) from None
        except HTTPClientError as exc:
            # A connection closed or reset before an answer (botocore's ConnectionClosedError and
            # kin, after its retries): the transport failed, not the request. Infrastructure.
            why = f"{operation} {key}: no answer from {self.endpoint}: {_short(exc)}"
            raise StoreUnavailable(why) from None
        except (ResponseStreamingError, IncompleteReadError) as exc:
            # The connection broke while a body was read: the transport, not the object.
            raise StoreUnavailable(f"{operation} {key}: the response was cut short: {_short(exc)}") from None
        except BotoCoreError as exc:
            raise StoreError(f"{operation} {key} failed: {_short(exc)}") from None

    def _translate(self, exc: ClientError, operation: str, key: str) -> StoreError:
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return BucketNotFound(self.bucket, self.endpoint)
        if code in ("PreconditionFailed", "412") or status == 412:
            return PreconditionFailed(f"{operation} {key}: precondition failed")
        if code in _DENIED:
            return AccessDenied(operation, f"s3://{self.bucket}/{key}")
        if code == "BadDigest" or code == "InvalidDigest":
            return StoreError(
                f"{operation} {key}: the server refused the upload because the bytes it received "
                "do not match their SHA-256 checksum (corrupted in transit). Retry the upload."
            )
        message = err.get("Message") or code or str(status)
        if code in _UNAVAILABLE or (isinstance(status, int) and status >= 500):
            return StoreUnavailable(
                f"{operation} s3://{self.bucket}/{key} failed: {code or status}: {message} "
                "(after botocore's retries; PROMOTION_S3_MAX_ATTEMPTS)"
            )
        return StoreError(f"{operation} s3://{self.bucket}/{key} failed: {code or status}: {message}")

    # -- operations -------------------------------------------------------------------------------

    def call_or_none(self, operation: str, key: str, fn: Callable[[], T]) -> T | None:
        """:meth:`call`, with None when S3 answers "not found" (:func:`is_not_found`): the one
        not-found path of every GET, HEAD and DELETE."""

        def do() -> T | None:
            try:
                return fn()
            except ClientError as exc:
                if is_not_found(exc):
                    return None
                raise

        return self.call(operation, key, do)

    def head(self, key: str) -> Head | None:
        """Size, ETag, metadata and the server's SHA-256 checksum; None when it does not exist."""

        def do() -> Head:
            r = self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
            return Head(
                size=r["ContentLength"],
                etag=r["ETag"],
                checksum_sha256=r.get("ChecksumSHA256"),
                metadata=r.get("Metadata", {}),
                checksum_type=r.get("ChecksumType"),
                checksum_crc32=r.get("ChecksumCRC32"),
            )

        return self.call_or_none("HEAD", key, do)

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None when it does not exist."""
        return self.call_or_none(
            "GET", key, lambda: self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        )

    def get_with_etag(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and ETag (for a later ``if_match``), or None when it does not exist."""

        def do() -> tuple[bytes, str]:
            r = self.client.get_object(Bucket=self.bucket, Key=key)
            return r["Body"].read(), r["ETag"]

        return self.call_or_none("GET", key, do)

    def stream(self, key: str, chunk_size: int) -> Iterator[bytes] | None:
        """Iterate over the object's bytes; None when it does not exist."""
        r = self.call_or_none("GET", key, lambda: self.client.get_object(Bucket=self.bucket, Key=key))
        if r is None:
            return None
        body = r["Body"]

        def chunks() -> Iterator[bytes]:
            try:
                while True:
                    chunk = self.call("GET", key, lambda: body.read(chunk_size))
                    if not chunk:
                        return
                    yield chunk
            finally:
                body.close()

        return chunks()

    def put(
        self,
        key: str,
        body: bytes,
        *,
        create_only: bool = False,
        if_match: str | None = None,
        checksum_sha256: str | None = None,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
    ) -> str:
        """Write an object; returns its ETag. ``create_only`` sends ``If-None-Match: *``
        (PreconditionFailed if it exists), ``if_match`` sends ``If-Match`` (PreconditionFailed if
        the object changed since that ETag was read)."""
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "Body": body,
            "ContentType": content_type,
        }
        if create_only:
            kwargs["IfNoneMatch"] = "*"
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        if checksum_sha256:
            kwargs["ChecksumSHA256"] = checksum_sha256
        else:
            kwargs["ChecksumAlgorithm"] = "SHA256"
        if metadata:
            kwargs["Metadata"] = metadata
        return self.call("PUT", key, lambda: self.client.put_object(**kwargs))["ETag"]

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        """Delete an object; with ``if_match``, only if it is still that version (else
        PreconditionFailed; SeaweedFS and AWS S3 honour ``If-Match`` on DELETE).

        A key that is not there is not an error: S3 answers an unconditional DELETE of it 204,
        and a "not found" answer (a conditional one on AWS) means the same thing, it is gone."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        self.call_or_none("DELETE", key, lambda: self.client.delete_object(**kwargs))

    def _pages(
        self, prefix: str, *, delimiter: str | None = None, start_after: str | None = None
    ) -> Iterator[ListObjectsV2OutputTypeDef]:
        """Every page of a ListObjectsV2 of ``prefix``: the one pagination loop."""
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": 1000}
            if delimiter:
                kwargs["Delimiter"] = delimiter
            if token:
                kwargs["ContinuationToken"] = token
            elif start_after:
                kwargs["StartAfter"] = start_after
            page = self.call("LIST", prefix, lambda kw=kwargs: self.client.list_objects_v2(**kw))  # type: ignore[misc]
            yield page
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")
            if not token:
                # Going on without one would list the first page again, forever; stopping would
                # pass off part of the listing as all of it.
                raise StoreError(
                    f"LIST s3://{self.bucket}/{prefix}: a truncated page without a continuation token"
                )

    def list_objects(self, prefix: str, *, start_after: str | None = None) -> Iterator[ListedObject]:
        """Every object under ``prefix`` (recursively) in lexicographic key order, page by page."""
        for page in self._pages(prefix, start_after=start_after):
            for obj in page.get("Contents", []):
                yield ListedObject(
                    key=obj["Key"], size=obj["Size"], last_modified=obj["LastModified"], etag=obj["ETag"]
                )

    def list_keys(self, prefix: str, start_after: str | None = None) -> Iterator[str]:
        """All keys under ``prefix`` in lexicographic order, page by page."""
        return (obj.key for obj in self.list_objects(prefix, start_after=start_after))

    def list_folders(self, prefix: str) -> set[str]:
        """Names of the "folders" directly under ``prefix`` (which ends in ``/``): one listing
        with a delimiter, so the objects below them are not listed."""
        return {
            p["Prefix"][len(prefix) :].rstrip("/")
            for page in self._pages(prefix, delimiter="/")
            for p in page.get("CommonPrefixes", [])
        }

    def check_bucket(self) -> None:
        """Raise a clear error unless the bucket exists and is reachable with these credentials.

        HEAD bucket has no body to say NoSuchBucket in: its "not found" is the bare 404."""
        found = self.call_or_none("HEAD bucket", "", lambda: self.client.head_bucket(Bucket=self.bucket))
        if found is None:
            raise BucketNotFound(self.bucket, self.endpoint)


def is_not_found(exc: ClientError) -> bool:
    """Whether S3 answered "no such object": ``NoSuchKey`` (GET), a bare ``404`` (HEAD has no
    body), ``NotFound``; never ``NoSuchBucket``, which is an installation error, not an answer."""
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code != "NoSuchBucket" and (code in _NOT_FOUND or status == 404)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]
