"""Deploy units against the real SeaweedFS of the session and real HTTP receivers on 127.0.0.1."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import SecretStr

from promotion import signing
from promotion.config import CopyTarget, WebhookTarget
from promotion.deploy import (
    DeployFailed,
    DeployPayload,
    KeyTemplateError,
    SourceChanged,
    TargetBucketNotFound,
    WebhookSecretError,
    call_deploy_webhook,
    copy_target,
    copy_to_target,
    presign_blob,
    read_target_digest,
    redact_url,
    target_key,
    verify_target,
)
from promotion.digest import Digest
from promotion.errors import ArtifactNotFound, DigestMismatch
from promotion.local_s3 import LocalS3
from promotion.models import Provenance
from promotion.store import ArtifactStore

PROV = Provenance(commit="abc123", build_url="https://ci.example/1", published_by="ci-bot")
MiB = 1024 * 1024


# --- S3 fixtures ------------------------------------------------------------------------------


@pytest.fixture
def target_bucket(s3_server: LocalS3) -> Iterator[str]:
    """A fresh bucket playing the environment's own bucket."""
    name = f"env-{uuid.uuid4().hex[:16]}"
    client = s3_server.client()
    client.create_bucket(Bucket=name)
    yield name
    for obj in client.list_objects_v2(Bucket=name).get("Contents", []):
        client.delete_object(Bucket=name, Key=obj["Key"])
    client.delete_bucket(Bucket=name)


def publish(store: ArtifactStore, tmp_path: Path, data: bytes, version: str = "1.0.0") -> Digest:
    f = tmp_path / f"artifact-{uuid.uuid4().hex[:8]}.bin"
    f.write_bytes(data)
    return store.publish(f, service="api", version=version, provenance=PROV).digest


def put_blob_without_sha256(store: ArtifactStore, s3_server: LocalS3, data: bytes) -> Digest:
    """A blob as another tool might have stored it: right key, but only a CRC32 checksum."""
    digest = Digest.of_bytes(data)
    s3_server.client().put_object(
        Bucket=store.s3.bucket, Key=store.blob_key(digest), Body=data, Metadata={"sha256": digest.hex}
    )
    return digest


# --- copy -------------------------------------------------------------------------------------


def test_copy_verified_by_server_checksum(
    store: ArtifactStore, s3_server: LocalS3, target_bucket: str, tmp_path: Path
) -> None:
    data = os.urandom(300_000)
    digest = publish(store, tmp_path, data)
    target = CopyTarget(
        bucket=target_bucket, prefix="envs/staging/", key_template="{service}/{version}/app.bin"
    )

    result = copy_to_target(store, target, "api", digest, "1.0.0")

    assert (result.bucket, result.key) == (target_bucket, "envs/staging/api/1.0.0/app.bin")
    assert (result.size, result.method, result.verification) == (len(data), "CopyObject", "checksum")
    obj = s3_server.client().get_object(Bucket=target_bucket, Key=result.key)
    assert obj["Body"].read() == data
    assert obj["Metadata"] == {"sha256": digest.hex, "service": "api", "version": "1.0.0"}
    assert read_target_digest(store, target, "api", "1.0.0") == digest
    assert verify_target(store, target, "api", "1.0.0", digest).method == "checksum"
    assert verify_target(store, target, "api", "1.0.0", digest, full=True).method == "full"


def test_copy_without_sha256_checksum_falls_back_to_full_rehash(
    store: ArtifactStore, s3_server: LocalS3, target_bucket: str
) -> None:
    # SeaweedFS keeps the source's checksum on CopyObject: a source with only a CRC32 gives a copy
    # with no SHA-256 to compare, so every byte is read back and hashed.
    data = os.urandom(5 * MiB + 7)  # more than one 4 MiB read
    digest = put_blob_without_sha256(store, s3_server, data)
    target = CopyTarget(bucket=target_bucket)

    result = copy_to_target(store, target, "api", digest, None)

    assert (result.key, result.verification) == ("api/current", "full")
    assert "no SHA-256 checksum reported" in result.detail
    assert read_target_digest(store, target, "api", None) == digest
    head = s3_server.client().head_object(Bucket=target_bucket, Key="api/current")
    assert head["Metadata"] == {"sha256": digest.hex, "service": "api"}


def test_copy_can_force_full_verification(store: ArtifactStore, target_bucket: str, tmp_path: Path) -> None:
    digest = publish(store, tmp_path, b"small artifact")
    result = copy_to_target(store, CopyTarget(bucket=target_bucket), "api", digest, "1.0.0", full_verify=True)
    assert result.verification == "full" and "forced" in result.detail


def test_managed_copy_above_the_copyobject_limit(
    store: ArtifactStore,
    s3_server: LocalS3,
    target_bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Real blobs above 5 GiB are too big for a test: lower the limit (in the module that reads it),
    # keep S3's 5 MiB minimum part.
    monkeypatch.setattr(copy_target, "MAX_COPY_OBJECT_SIZE", 1 * MiB)
    monkeypatch.setattr(copy_target, "COPY_PART_SIZE", 5 * MiB)
    data = os.urandom(6 * MiB + 3)
    digest = publish(store, tmp_path, data)

    result = copy_to_target(store, CopyTarget(bucket=target_bucket), "api", digest, "2.0.0")

    # A multipart copy has a composite checksum, which cannot be compared with the digest.
    assert (result.method, result.verification, result.size) == ("managed-copy", "full", len(data))
    assert "composite checksum" in result.detail
    obj = s3_server.client().get_object(Bucket=target_bucket, Key="api/current")
    assert obj["Body"].read() == data and obj["Metadata"]["sha256"] == digest.hex


@pytest.mark.parametrize("large", [False, True], ids=["CopyObject", "managed-copy"])
def test_copy_refused_when_source_replaced_between_head_and_copy(
    store: ArtifactStore,
    s3_server: LocalS3,
    target_bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    large: bool,
) -> None:
    data = os.urandom(6 * MiB + 3 if large else 1000)
    digest = publish(store, tmp_path, data)
    if large:
        monkeypatch.setattr(copy_target, "MAX_COPY_OBJECT_SIZE", 1 * MiB)
        monkeypatch.setattr(copy_target, "COPY_PART_SIZE", 5 * MiB)
    replaced: list[str] = []

    def replace_source(**_: Any) -> None:
        # Runs after copy_to_target read the source ETag and before the copy request is sent.
        if not replaced:
            replaced.append("x")
            s3_server.client().put_object(Bucket=store.s3.bucket, Key=store.blob_key(digest), Body=b"evil")

    # The managed copy's first request after its own HEAD is CreateMultipartUpload.
    event = "CreateMultipartUpload" if large else "CopyObject"
    store.s3.client.meta.events.register(f"before-call.s3.{event}", replace_source)
    target = CopyTarget(bucket=target_bucket)

    with pytest.raises(SourceChanged) as exc_info:
        copy_to_target(store, target, "api", digest, "1.0.0")

    assert replaced
    msg = str(exc_info.value)
    assert store.blob_key(digest) in msg and "CopySourceIfMatch" in msg and f"promote verify {digest}" in msg
    assert read_target_digest(store, target, "api", "1.0.0") is None  # nothing was copied


def test_verification_catches_a_corrupted_destination(
    store: ArtifactStore, s3_server: LocalS3, target_bucket: str, tmp_path: Path
) -> None:
    digest = publish(store, tmp_path, os.urandom(100_000))
    target = CopyTarget(bucket=target_bucket)
    copy_to_target(store, target, "api", digest, "1.0.0")
    raw = s3_server.client()
    evil = b"not the artifact"

    # Overwritten behind our back, keeping the tag: the tag alone cannot tell...
    raw.put_object(Bucket=target_bucket, Key="api/current", Body=evil, Metadata={"sha256": digest.hex})
    assert read_target_digest(store, target, "api", "1.0.0") == digest
    # ... the bytes can (full re-hash: this object has no SHA-256 checksum).
    with pytest.raises(DigestMismatch) as exc_info:
        verify_target(store, target, "api", "1.0.0", digest)
    assert exc_info.value.actual == f"{Digest.of_bytes(evil)} (re-hashed)"
    assert f"s3://{target_bucket}/api/current" in str(exc_info.value)
    assert "Promote again" in str(exc_info.value)

    # With a server SHA-256 checksum of the new bytes, the cheap comparison catches it.
    evil_b64 = base64.b64encode(hashlib.sha256(evil).digest()).decode()
    raw.put_object(
        Bucket=target_bucket,
        Key="api/current",
        Body=evil,
        Metadata={"sha256": digest.hex},
        ChecksumSHA256=evil_b64,
    )
    with pytest.raises(DigestMismatch, match="the server's SHA-256 checksum"):
        verify_target(store, target, "api", "1.0.0", digest)

    # Replaced by another artifact: the tag shows the drift.
    other = Digest.of_bytes(evil)
    raw.put_object(Bucket=target_bucket, Key="api/current", Body=evil, Metadata={"sha256": other.hex})
    assert read_target_digest(store, target, "api", "1.0.0") == other
    with pytest.raises(DigestMismatch, match="an object tagged"):
        verify_target(store, target, "api", "1.0.0", digest)

    # Deleted.
    raw.delete_object(Bucket=target_bucket, Key="api/current")
    assert read_target_digest(store, target, "api", "1.0.0") is None
    with pytest.raises(DigestMismatch, match="the object is missing"):
        verify_target(store, target, "api", "1.0.0", digest)


def test_copy_of_a_corrupted_blob_is_caught(
    store: ArtifactStore, s3_server: LocalS3, target_bucket: str, tmp_path: Path
) -> None:
    # The stored blob was overwritten (with a consistent checksum) after publish: the copy holds the
    # wrong bytes, and its verification against the digest refuses it.
    digest = publish(store, tmp_path, os.urandom(50_000))
    evil = os.urandom(50_000)
    s3_server.client().put_object(
        Bucket=store.s3.bucket,
        Key=store.blob_key(digest),
        Body=evil,
        Metadata={"sha256": digest.hex},
        ChecksumSHA256=base64.b64encode(hashlib.sha256(evil).digest()).decode(),
    )
    with pytest.raises(DigestMismatch) as exc_info:
        copy_to_target(store, CopyTarget(bucket=target_bucket), "api", digest, "1.0.0")
    assert exc_info.value.expected == str(digest)
    assert str(Digest.of_bytes(evil)) in exc_info.value.actual


def test_missing_target_bucket_names_bucket_and_setting(store: ArtifactStore, tmp_path: Path) -> None:
    digest = publish(store, tmp_path, b"bytes")
    missing = f"missing-{uuid.uuid4().hex[:12]}"
    target = CopyTarget(bucket=missing)
    calls: list[Callable[[], object]] = [
        lambda: copy_to_target(store, target, "api", digest, "1.0.0", environment="prod"),
        lambda: read_target_digest(store, target, "api", "1.0.0", environment="prod"),
        lambda: verify_target(store, target, "api", "1.0.0", digest, environment="prod"),
    ]
    for call in calls:
        with pytest.raises(TargetBucketNotFound) as exc_info:
            call()
        msg = str(exc_info.value)
        assert repr(missing) in msg and "environments[prod].target.copy_to.bucket" in msg
        assert "Create the bucket" in msg


def test_copy_of_an_unpublished_digest(store: ArtifactStore, target_bucket: str) -> None:
    with pytest.raises(ArtifactNotFound):
        copy_to_target(store, CopyTarget(bucket=target_bucket), "api", Digest.of_bytes(b"never"), None)


@pytest.mark.parametrize(
    ("template", "version", "digest", "expected"),
    [
        ("{service}/current", None, None, "p/api/current"),
        ("{service}/{version}.tar", "1.2", None, "p/api/1.2.tar"),
        ("{service}/{digest_hex}", None, Digest.of_bytes(b""), "p/api/" + Digest.of_bytes(b"").hex),
    ],
)
def test_target_key(template: str, version: str | None, digest: Digest | None, expected: str) -> None:
    assert (
        target_key(CopyTarget(bucket="env", prefix="p/", key_template=template), "api", version, digest)
        == expected
    )


@pytest.mark.parametrize(
    ("template", "version", "digest", "message"),
    [
        ("{service}/{version}", None, None, "has no version"),
        ("{service}/{digest_hex}", "1", None, "cannot be known without the digest"),
        ("{service}/{env}", "1", None, "may only use the fields"),
        ("{service.__class__}", "1", None, "may only use the fields"),
        ("{service!r}", "1", None, "may only use the fields"),
        ("{}", "1", None, "may only use the fields"),
        ("{service", "1", None, "is not a valid template"),
        ("{service}/", "1", None, "names no object"),
    ],
)
def test_bad_key_templates(template: str, version: str | None, digest: Digest | None, message: str) -> None:
    with pytest.raises(KeyTemplateError, match="copy_to") as exc_info:
        target_key(CopyTarget(bucket="env", key_template=template), "api", version, digest)
    assert message in str(exc_info.value)


# --- presigned URL ------------------------------------------------------------------------------


def test_presign_blob(store: ArtifactStore, tmp_path: Path) -> None:
    data = os.urandom(10_000)
    digest = publish(store, tmp_path, data)
    url = presign_blob(store, digest, dt.timedelta(minutes=5))
    assert "Signature" not in repr(url) and "Signature" not in str(url)
    assert httpx.get(url.get_secret_value()).content == data
    assert (
        redact_url(url.get_secret_value())
        == f"{store.s3.endpoint.rstrip('/')}/{store.s3.bucket}/{store.blob_key(digest)}?[redacted]"
    )
    with pytest.raises(ArtifactNotFound):
        presign_blob(store, Digest.of_bytes(b"never published"))


# --- webhook: a receiver that verifies both signature schemes ---------------------------------


def verify_standard_webhooks(secret: str, headers: Message, body: bytes, now: int | None = None) -> bool:
    """A Standard Webhooks verifier written from the spec (not from promotion.deploy)."""
    msg_id, ts, sigs = headers["webhook-id"], headers["webhook-timestamp"], headers["webhook-signature"]
    if not (msg_id and ts and sigs):
        return False
    if abs((now if now is not None else int(time.time())) - int(ts)) > 300:
        return False
    try:  # as the reference libraries: base64 after an optional whsec_ prefix, unpadded accepted
        key = base64.b64decode(secret.removeprefix("whsec_") + "==")
    except ValueError:
        return False
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest())
    return any(
        version == "v1" and hmac.compare_digest(sig.encode(), expected)
        for version, _, sig in (s.partition(",") for s in sigs.split(" "))
    )


def verify_github_style(secret: str, header: str | None, body: bytes) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return header is not None and hmac.compare_digest(header, expected)


@dataclass
class Received:
    path: str
    headers: Message
    body: bytes
    standard_ok: bool
    github_ok: bool
    downloaded: Digest | None = None


@dataclass
class Receiver:
    """A deploy receiver: checks both signatures, downloads the presigned URL, answers ``mode``."""

    secret: str
    mode: str = "ok"  # ok | fail | hang
    standard_required: bool = True  # False: the GitHub-style signature alone is accepted
    download: bool = False
    requests: list[Received] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    def handle(self, path: str, headers: Message, body: bytes) -> tuple[int, bytes]:
        got = Received(
            path,
            headers,
            body,
            verify_standard_webhooks(self.secret, headers, body),
            verify_github_style(self.secret, headers["X-Promotion-Signature-256"], body),
        )
        self.requests.append(got)
        if self.mode == "hang":
            self.release.wait(10)
            return 200, b"too late"
        payload = json.loads(body)
        if self.mode == "fail":
            # A careless receiver that echoes everything, secrets first, in its error.
            url = payload["presigned_url"]
            signature = parse_qs(urlsplit(url).query)["X-Amz-Signature"][0]
            return 500, (
                f"deploy failed: key {self.secret} signature {signature} cannot fetch {url} "
                f"request was {body.decode()} " + "x" * 500
            ).encode()
        if not ((got.standard_ok or not self.standard_required) and got.github_ok):
            return 401, b"bad signature"
        if self.download:
            got.downloaded = Digest.of_bytes(httpx.get(payload["presigned_url"]).content)
        return 202, json.dumps({"accepted": payload["digest"]}).encode()


@contextmanager
def receiver(secret: str, **kw: Any) -> Iterator[Receiver]:
    rcv = Receiver(secret, **kw)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, out = rcv.handle(self.path, self.headers, body)
            rcv.sent.append(out)
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(out)))
            try:
                self.end_headers()
                self.wfile.write(out)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up first (the timeout tests make it): nothing to answer

    # Bound and listening once constructed: usable before serve_forever starts, no sleep needed.
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    rcv.url = f"http://127.0.0.1:{httpd.server_address[1]}/deploy"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield rcv
    finally:
        rcv.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def whsec() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def webhook(url: str, timeout: float = 10) -> WebhookTarget:
    return WebhookTarget.model_validate({"url": url, "timeout": timeout})


def make_payload(presigned: str, digest: Digest | None = None, size: int = 3) -> DeployPayload:
    return DeployPayload(
        service="api",
        environment="prod",
        digest=digest or Digest.of_bytes(b"abc"),
        version="1.0.0",
        presigned_url=SecretStr(presigned),
        size=size,
        requested_by="alice",
        idempotency_key=f"promote-api-prod-{uuid.uuid4().hex[:8]}",
    )


FAKE_PRESIGNED = (
    "http://127.0.0.1:9/bucket/blobs/sha256/abc?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAEXAMPLE%2F20250101%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)


def test_webhook_delivers_a_payload_the_receiver_verifies_and_downloads(
    store: ArtifactStore, tmp_path: Path
) -> None:
    data = os.urandom(20_000)
    digest = publish(store, tmp_path, data)
    secret = whsec()
    payload = make_payload(presign_blob(store, digest).get_secret_value(), digest, len(data))

    with receiver(secret, download=True) as rcv, httpx.Client() as client:
        result = call_deploy_webhook(webhook(rcv.url), SecretStr(secret), payload, client=client)

    assert (result.status, result.webhook_id) == (202, payload.idempotency_key)
    (got,) = rcv.requests
    assert got.standard_ok and got.github_ok
    assert got.downloaded == digest  # the presigned URL in the body really fetches the blob
    assert got.headers["webhook-id"] == payload.idempotency_key
    assert got.headers["Content-Type"] == "application/json"
    assert got.body == payload.body()
    body = json.loads(got.body)
    assert body == {
        "digest": str(digest),
        "environment": "prod",
        "idempotency_key": payload.idempotency_key,
        "presigned_url": payload.presigned_url.get_secret_value(),
        "requested_by": "alice",
        "service": "api",
        "size": len(data),
        "version": "1.0.0",
    }
    # Canonical: sorted keys, no whitespace.
    assert got.body == json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def test_webhook_with_a_base64_secret_without_prefix_decodes_it_as_the_reference_does() -> None:
    secret = whsec().removeprefix("whsec_")
    with receiver(secret) as rcv:
        result = call_deploy_webhook(webhook(rcv.url), SecretStr(secret), make_payload(FAKE_PRESIGNED))
    assert result.status == 202
    assert rcv.requests[0].standard_ok and rcv.requests[0].github_ok


def test_webhook_with_a_plain_secret_signs_github_style_only_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A secret that is not base64 cannot key a Standard Webhooks signature (no reference verifier
    could decode it): the request carries the GitHub-style signature alone, and a warning says why."""
    secret = "plain-shared-secret"
    with receiver(secret, standard_required=False) as rcv:
        result = call_deploy_webhook(webhook(rcv.url), SecretStr(secret), make_payload(FAKE_PRESIGNED))
    assert result.status == 202
    (got,) = rcv.requests
    assert got.github_ok and got.headers["webhook-signature"] is None
    assert got.headers["webhook-id"] and got.headers["webhook-timestamp"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("not base64" in w and "only X-Promotion-Signature-256" in w for w in warnings), warnings
    assert not any(secret in r.getMessage() for r in caplog.records)


def test_receiver_rejects_a_wrong_secret() -> None:
    with receiver(whsec()) as rcv:
        with pytest.raises(DeployFailed) as exc_info:
            call_deploy_webhook(webhook(rcv.url), SecretStr(whsec()), make_payload(FAKE_PRESIGNED))
    assert exc_info.value.status == 401
    assert not rcv.requests[0].standard_ok and not rcv.requests[0].github_ok


def test_signatures_match_the_published_test_vectors(shared_fixtures: Path) -> None:
    vectors = json.loads((shared_fixtures / "webhooks" / "signature-test-vectors.json").read_text())
    for v in vectors["standard_webhooks"]:
        key = signing.standard_webhooks_key(v["secret"])
        sig = signing.standard_webhooks_signature(key, v["msg_id"], v["timestamp"], v["payload"].encode())
        assert sig == v["expected_signature"], v["id"]
        # The test receiver's verifier agrees with the vector too, so it checks the real scheme.
        headers = Message()
        headers["webhook-id"], headers["webhook-timestamp"] = v["msg_id"], str(v["timestamp"])
        headers["webhook-signature"] = v["expected_signature"]
        assert verify_standard_webhooks(v["secret"], headers, v["payload"].encode(), now=v["timestamp"])
    for v in vectors["github_x_hub_signature_256"]:
        signed = signing.github_signature(v["secret"], v["payload"].encode())
        assert signed == v["expected_header_value"], v["id"]
        assert verify_github_style(v["secret"], v["expected_header_value"], v["payload"].encode())


def test_webhook_500_is_deploy_failed_without_secrets(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # httpx and httpcore included
    secret = whsec()
    payload = make_payload(FAKE_PRESIGNED)
    query = urlsplit(FAKE_PRESIGNED).query
    signature = query.rpartition("=")[2]

    with receiver(secret, mode="fail") as rcv:
        with pytest.raises(DeployFailed) as exc_info:
            call_deploy_webhook(webhook(rcv.url), SecretStr(secret), payload)

    exc = exc_info.value
    assert exc.status == 500
    assert 0 < len(exc.body_excerpt) <= 200 and exc.body_excerpt.startswith("deploy failed: key [redacted]")
    assert "HTTP 500" in str(exc) and rcv.url in str(exc)
    # The receiver did echo the secret and the URL signature within its first 200 characters, and
    # the rest of the query soon after: the error and the logs must show none of them.
    head = rcv.sent[0][:200]
    assert secret.encode() in head and signature.encode() in head and b"sha256/abc?X-Amz" in head
    assert b"X-Amz-Credential=AKIA" in rcv.sent[0]
    assert "sha256/abc?[redacted] request was {" in exc.body_excerpt  # the whole query, scrubbed
    texts = [str(exc), repr(exc), exc.body_excerpt, repr(payload), str(payload), payload.model_dump_json()]
    texts += [r.getMessage() for r in caplog.records]
    for text in texts:
        assert secret not in text and secret.removeprefix("whsec_") not in text
        assert query not in text and signature not in text and "X-Amz-Credential=AKIA" not in text


def test_webhook_timeout_is_deploy_failed() -> None:
    with receiver(whsec(), mode="hang") as rcv:
        with pytest.raises(DeployFailed) as exc_info:
            call_deploy_webhook(
                webhook(rcv.url, timeout=0.3), SecretStr(whsec()), make_payload(FAKE_PRESIGNED)
            )
    assert exc_info.value.status is None
    assert "did not answer within 0.3s" in str(exc_info.value)
    assert len(rcv.requests) == 1


def test_webhook_connection_refused_is_deploy_failed() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    try:
        url = f"http://127.0.0.1:{s.getsockname()[1]}/deploy?token=tok-in-query"
        with pytest.raises(DeployFailed) as exc_info:
            call_deploy_webhook(webhook(url), SecretStr("k" * 16), make_payload(FAKE_PRESIGNED))
    finally:
        s.close()
    msg = str(exc_info.value)
    assert "could not be reached" in msg and "tok-in-query" not in msg and "?[redacted]" in msg
    assert exc_info.value.status is None


def test_unsigned_webhook_warns(caplog: pytest.LogCaptureFixture) -> None:
    with receiver("unused") as rcv:
        with pytest.raises(DeployFailed):  # the receiver requires signatures
            call_deploy_webhook(webhook(rcv.url), None, make_payload(FAKE_PRESIGNED))
    headers = rcv.requests[0].headers
    assert headers["webhook-signature"] is None and headers["X-Promotion-Signature-256"] is None
    assert headers["webhook-id"] and headers["webhook-timestamp"]
    assert any("UNSIGNED" in r.getMessage() for r in caplog.records)


def test_invalid_whsec_secret_is_refused_without_echoing_it() -> None:
    with pytest.raises(WebhookSecretError) as exc_info:
        call_deploy_webhook(
            webhook("http://127.0.0.1:9/"), SecretStr("whsec_not*base64!"), make_payload(FAKE_PRESIGNED)
        )
    assert "not*base64!" not in str(exc_info.value)


def test_payload_hides_the_presigned_url() -> None:
    payload = make_payload(FAKE_PRESIGNED)
    for text in (repr(payload), str(payload), payload.model_dump_json()):
        assert "X-Amz-Signature" not in text
    assert FAKE_PRESIGNED.encode() in payload.body()
    with pytest.raises(ValueError):
        DeployPayload.model_validate({**payload.model_dump(), "idempotency_key": "has space\n"})
