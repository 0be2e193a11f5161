"""The CI webhook receiver against real servers: SeaweedFS (artifact records) and Prefect (flow runs).

Signatures are computed here with ``hmac`` directly, not with the module's own helpers, and the
helpers are checked against the published test vectors in ../shared/fixtures/webhooks.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import hypothesis
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from promotion import errors, signing, webhook
from promotion.config import Pipeline, parse_pipeline
from promotion.digest import Digest
from promotion.local_s3 import LocalS3
from promotion.models import Provenance
from promotion.store import ArtifactStore
from promotion.webhook import PrefectTrigger, RunRequest, TriggeredRun, create_app, serve_in_thread

PIPELINE = """
store: {{endpoint_url: "{endpoint}", bucket: {bucket}, prefix: "{prefix}"}}
services: [{{name: api}}, {{name: web}}]
environments: [{{name: dev}}, {{name: staging}}, {{name: prod}}]
webhooks:
  deployment: {deployment}
  sources:
{sources}
"""

UNSIGNED = object()


# --- signing, independently of the code under test ----------------------------------------------


def gh_sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def std_sign(secret: str, msg_id: str, ts: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


@dataclass
class Secrets:
    github: str = field(default_factory=lambda: "gh-" + secrets.token_hex(16))
    gitlab: str = field(default_factory=lambda: "gl-" + secrets.token_hex(16))
    standard: str = field(default_factory=lambda: "whsec_" + base64.b64encode(os.urandom(24)).decode())

    def headers(
        self,
        source: str,
        body: bytes,
        *,
        delivery: str | None = None,
        ts: int | None = None,
        event: str | None = None,
    ) -> dict[str, str]:
        delivery = delivery or str(uuid.uuid4())
        if source == "github":
            h = {"X-Hub-Signature-256": gh_sign(self.github, body), "X-GitHub-Delivery": delivery}
            if event:
                h["X-GitHub-Event"] = event
            return h
        if source == "gitlab":
            return {"X-Gitlab-Token": self.gitlab, "X-Gitlab-Event-UUID": delivery}
        ts = int(time.time()) if ts is None else ts
        return {
            "webhook-id": delivery,
            "webhook-timestamp": str(ts),
            "webhook-signature": std_sign(self.standard, delivery, ts, body),
        }

    def values(self) -> list[str]:
        return [self.github, self.gitlab, self.standard, self.standard.removeprefix("whsec_")]


class RecordingTrigger:
    """Records run requests instead of creating Prefect runs (for the pure-HTTP tests)."""

    def __init__(self) -> None:
        self.calls: list[RunRequest] = []

    async def __call__(self, request: RunRequest) -> TriggeredRun:
        self.calls.append(request)
        return TriggeredRun(
            flow_run_id=f"run-{request.delivery_id}", flow_run_url="http://ui/runs/flow-run/x"
        )


def make_pipeline(
    server: LocalS3, prefix: str, deployment: str = "promote-pipeline/pipeline", **sources: str
) -> Pipeline:
    lines = "\n".join(f"    {name}: {{{how}}}" for name, how in sources.items()) or "    {}"
    if not sources:
        lines = "    {}"
    text = PIPELINE.format(
        endpoint=server.endpoint_url,
        bucket=server.bucket,
        prefix=prefix,
        deployment=deployment,
        sources=lines,
    )
    return parse_pipeline(text.replace("sources:\n    {}", "sources: {}"))


def publish(store: ArtifactStore, tmp_path: Path, service: str = "api") -> Digest:
    f = tmp_path / f"build-{uuid.uuid4().hex[:8]}.bin"
    f.write_bytes(os.urandom(4096))
    prov = Provenance(commit="c0ffee", build_url="https://ci.example/1", published_by="ci")
    return store.publish(f, service=service, version="1.2.3", provenance=prov).digest


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> Secrets:
    s = Secrets()
    monkeypatch.setenv("TEST_WEBHOOK_GITHUB", s.github)
    monkeypatch.setenv("TEST_WEBHOOK_GITLAB", s.gitlab)
    monkeypatch.setenv("TEST_WEBHOOK_STANDARD", s.standard)
    return s


ENV_SOURCES = {
    "github": "secret_env: TEST_WEBHOOK_GITHUB",
    "gitlab": "secret_env: TEST_WEBHOOK_GITLAB",
    "standard": "secret_env: TEST_WEBHOOK_STANDARD",
}


@pytest.fixture
def hook_pipeline(s3_server: LocalS3, prefix: str, keys: Secrets) -> Pipeline:
    return make_pipeline(s3_server, prefix, **ENV_SOURCES)


@pytest.fixture
def published(hook_pipeline: Pipeline, tmp_path: Path) -> Digest:
    return publish(ArtifactStore(hook_pipeline), tmp_path)


@pytest.fixture
def recorder() -> RecordingTrigger:
    return RecordingTrigger()


@pytest.fixture
def client(hook_pipeline: Pipeline, recorder: RecordingTrigger) -> Iterator[TestClient]:
    with TestClient(create_app(hook_pipeline, trigger=recorder)) as c:
        yield c


def event(digest: str, **extra: Any) -> bytes:
    return json.dumps({"service": "api", "digest": str(digest), **extra}).encode()


def expect(r: httpx.Response, status: int, error: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    if error is not None:
        assert body["error"] == error, body
        assert body["detail"], body
    return body


# --- signature schemes against the published vectors ----------------------------------------------


@pytest.fixture
def vectors(shared_fixtures: Path) -> dict[str, Any]:
    path = shared_fixtures / "webhooks" / "signature-test-vectors.json"
    if not path.is_file():
        pytest.skip(f"{path} not present on this machine")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_github_vectors(vectors: dict[str, Any]) -> None:
    for v in vectors["github_x_hub_signature_256"]:
        secret, body = SecretStr(v["secret"]), v["payload"].encode()
        assert signing.github_signature(v["secret"], body) == v["expected_header_value"]
        webhook.verify_github(secret, body, v["expected_header_value"])
        with pytest.raises(errors.SignatureInvalid):
            webhook.verify_github(secret, body + b" ", v["expected_header_value"])
        with pytest.raises(errors.SignatureInvalid):
            webhook.verify_github(SecretStr(v["secret"] + "x"), body, v["expected_header_value"])
        with pytest.raises(errors.SignatureMissing):
            webhook.verify_github(secret, body, None)
        with pytest.raises(errors.SignatureInvalid):  # non-ASCII header: refused, not a TypeError
            webhook.verify_github(secret, body, "sha256=é")


def test_standard_webhooks_vectors(vectors: dict[str, Any]) -> None:
    for v in vectors["standard_webhooks"]:
        secret, body, ts = SecretStr(v["secret"]), v["payload"].encode(), v["timestamp"]
        key = signing.standard_webhooks_key(v["secret"])
        assert signing.standard_webhooks_signature(key, v["msg_id"], ts, body) == v["expected_signature"]
        ok = {"msg_id": v["msg_id"], "timestamp": str(ts), "signature": v["expected_signature"]}
        webhook.verify_standard(secret, body, now=ts, **ok)
        # a space-separated list: one matching v1 entry is enough; other versions never match
        listed = {**ok, "signature": f"v1,bm9wZQ== v1a,xyz {v['expected_signature']}"}
        webhook.verify_standard(secret, body, now=ts + 300, **listed)
        webhook.verify_standard(secret, body, now=ts - 300, **listed)
        wrong_version = {**ok, "signature": "v2," + v["expected_signature"].removeprefix("v1,")}
        with pytest.raises(errors.SignatureInvalid):
            webhook.verify_standard(secret, body, now=ts, **wrong_version)
        with pytest.raises(errors.SignatureInvalid):
            webhook.verify_standard(secret, body + b" ", now=ts, **ok)
        with pytest.raises(errors.SignatureInvalid):
            webhook.verify_standard(secret, body, now=ts, **{**ok, "msg_id": v["msg_id"] + "x"})
        with pytest.raises(errors.StaleTimestamp):
            webhook.verify_standard(secret, body, now=ts + 301, **ok)
        with pytest.raises(errors.StaleTimestamp):
            webhook.verify_standard(secret, body, now=ts - 301, **ok)
        with pytest.raises(errors.SignatureMissing):
            webhook.verify_standard(secret, body, now=ts, **{**ok, "signature": None})
        # the prefix is optional, as in the reference libraries
        assert signing.standard_webhooks_key(v["secret"].removeprefix("whsec_")) == key
        # our independent signer agrees with the vector too
        assert std_sign(v["secret"], v["msg_id"], ts, body) == v["expected_signature"]


def test_vectors_through_the_app(
    vectors: dict[str, Any], s3_server: LocalS3, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The vectors' payloads pass authentication and then fail parsing: 422, not 401."""
    gh = vectors["github_x_hub_signature_256"][0]
    sw = vectors["standard_webhooks"][0]
    monkeypatch.setenv("TEST_VEC_GITHUB", gh["secret"])
    monkeypatch.setenv("TEST_VEC_STANDARD", sw["secret"])
    p = make_pipeline(
        s3_server, prefix, github="secret_env: TEST_VEC_GITHUB", standard="secret_env: TEST_VEC_STANDARD"
    )
    sw_headers = {
        "webhook-id": sw["msg_id"],
        "webhook-timestamp": str(sw["timestamp"]),
        "webhook-signature": sw["expected_signature"],
    }
    for offset, status in ((0, 422), (299, 422), (-299, 422), (301, 401), (-301, 401)):
        app = create_app(p, trigger=RecordingTrigger(), clock=lambda o=offset: sw["timestamp"] + o)  # type: ignore[misc]
        with TestClient(app) as c:
            r = c.post("/hooks/standard", content=sw["payload"].encode(), headers=sw_headers)
            body = expect(r, status, "PayloadInvalid" if status == 422 else "StaleTimestamp")
            if status == 422:
                assert "service: required" in body["detail"] and "test: unknown field" in body["detail"]
    with TestClient(create_app(p, trigger=RecordingTrigger())) as c:
        r = c.post(
            "/hooks/github",
            content=gh["payload"].encode(),
            headers={"X-Hub-Signature-256": gh["expected_header_value"], "X-GitHub-Delivery": "d-1"},
        )
        assert "not valid JSON" in expect(r, 422, "PayloadInvalid")["detail"]


# --- status codes (pure HTTP; the store is the real SeaweedFS) ------------------------------------


def test_healthz_and_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/hooks/{source}"]["post"]
    assert {"202", "401", "404", "413", "422"} <= set(post["responses"])
    schemas = post["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert schemas[0]["title"] == "BuildPublished" and schemas[0]["additionalProperties"] is False
    expect(client.get("/nowhere"), 404, "NotFound")
    expect(client.get("/hooks/github"), 405, "MethodNotAllowed")


def test_404_unknown_or_unconfigured_source(
    s3_server: LocalS3, prefix: str, monkeypatch: pytest.MonkeyPatch, keys: Secrets
) -> None:
    p = make_pipeline(s3_server, prefix, github="secret_env: TEST_WEBHOOK_GITHUB")
    with TestClient(create_app(p, trigger=RecordingTrigger())) as c:
        body = b"{}"
        expect(c.post("/hooks/bitbucket", content=body), 404, "SourceNotServed")
        expect(c.post("/hooks/GITHUB", content=body), 404, "SourceNotServed")
        # declared sources that this pipeline file does not configure
        expect(c.post("/hooks/gitlab", content=body, headers=keys.headers("gitlab", body)), 404)
        expect(c.post("/hooks/standard", content=body, headers=keys.headers("standard", body)), 404)
        # configured, but the variable holding the secret is unset or empty
        monkeypatch.delenv("TEST_WEBHOOK_GITHUB")
        r = c.post("/hooks/github", content=body, headers=keys.headers("github", body))
        assert "not available" in expect(r, 404, "SourceNotServed")["detail"]
        monkeypatch.setenv("TEST_WEBHOOK_GITHUB", "")
        expect(c.post("/hooks/github", content=body, headers=keys.headers("github", body)), 404)
    # a Standard Webhooks secret that is not whsec_<base64> is not served either (logged)
    monkeypatch.setenv("TEST_WEBHOOK_STANDARD", "whsec_not base64!")
    p = make_pipeline(s3_server, prefix, standard="secret_env: TEST_WEBHOOK_STANDARD")
    with TestClient(create_app(p, trigger=RecordingTrigger())) as c:
        expect(c.post("/hooks/standard", content=b"{}"), 404, "SourceNotServed")
    # no webhooks section at all
    with TestClient(create_app(make_pipeline(s3_server, prefix), trigger=RecordingTrigger())) as c:
        expect(c.post("/hooks/github", content=b"{}"), 404, "SourceNotServed")


def test_413_with_and_without_content_length(client: TestClient, recorder: RecordingTrigger) -> None:
    big = b"{" + b" " * webhook.MAX_BODY_BYTES + b"}"
    # Content-Length says too much: refused before the body is read (and before authentication)
    expect(client.post("/hooks/github", content=big), 413, "PayloadTooLarge")
    # no Content-Length (chunked upload): counted while reading

    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b" " * 65536

    r = client.post("/hooks/gitlab", content=chunks())
    assert "content-length" not in {k.lower() for k in r.request.headers}
    expect(r, 413, "PayloadTooLarge")
    # a Content-Length that lies (small) does not make the receiver buffer more than the limit
    r = client.post("/hooks/standard", content=big, headers={"Content-Length": "10"})
    expect(r, 413, "PayloadTooLarge")
    # exactly at the limit is fine (then fails authentication)
    at_limit = b" " * webhook.MAX_BODY_BYTES
    expect(client.post("/hooks/github", content=at_limit), 401, "SignatureMissing")
    expect(client.post("/hooks/github", content=b"{}", headers={"Content-Length": "1e3"}), 400)
    assert recorder.calls == []


def test_401_missing_bad_and_stale(
    client: TestClient, keys: Secrets, published: Digest, recorder: RecordingTrigger
) -> None:
    body = event(published)
    # missing
    expect(client.post("/hooks/github", content=body), 401, "SignatureMissing")
    expect(client.post("/hooks/gitlab", content=body), 401, "SignatureMissing")
    expect(client.post("/hooks/standard", content=body), 401, "SignatureMissing")
    # bad: another secret, another body, a malformed header
    other = Secrets()
    for source in ("github", "gitlab", "standard"):
        r = client.post(f"/hooks/{source}", content=body, headers=other.headers(source, body))
        expect(r, 401, "SignatureInvalid")
    h = keys.headers("github", body)
    expect(client.post("/hooks/github", content=body + b" ", headers=h), 401, "SignatureInvalid")
    h["X-Hub-Signature-256"] = h["X-Hub-Signature-256"].removeprefix("sha256=")
    expect(client.post("/hooks/github", content=body, headers=h), 401, "SignatureInvalid")
    h = keys.headers("standard", body)
    expect(client.post("/hooks/standard", content=body + b"\n", headers=h), 401, "SignatureInvalid")
    h["webhook-timestamp"] = "soon"
    expect(client.post("/hooks/standard", content=body, headers=h), 401, "SignatureInvalid")
    # stale, both ways, although correctly signed
    for skew in (-301, 301, -3600):
        h = keys.headers("standard", body, ts=int(time.time()) + skew)
        expect(client.post("/hooks/standard", content=body, headers=h), 401, "StaleTimestamp")
    h = keys.headers("standard", body, ts=int(time.time()) - 240)
    expect(client.post("/hooks/standard", content=body, headers=h), 202)
    assert len(recorder.calls) == 1


def test_400_without_delivery_id(client: TestClient, keys: Secrets, published: Digest) -> None:
    body = event(published)
    h = keys.headers("github", body)
    del h["X-GitHub-Delivery"]
    expect(client.post("/hooks/github", content=body, headers=h), 400, "DeliveryIdInvalid")
    h = keys.headers("gitlab", body, delivery="has space")
    expect(client.post("/hooks/gitlab", content=body, headers=h), 400, "DeliveryIdInvalid")
    # GitLab 17.4+ sends Idempotency-Key, stable across its retries: it wins over the event UUID
    h = {**keys.headers("gitlab", body), "Idempotency-Key": "retry-stable-1"}
    expect(client.post("/hooks/gitlab", content=body, headers=h), 202)


def test_422_json_and_schema_errors(
    client: TestClient, keys: Secrets, published: Digest, recorder: RecordingTrigger
) -> None:
    def post(body: bytes, source: str = "standard") -> dict[str, Any]:
        r = client.post(f"/hooks/{source}", content=body, headers=keys.headers(source, body))
        return expect(r, 422)

    assert "not valid JSON" in post(b'{"service": "api",')["detail"]
    assert "not valid JSON" in post(b"")["detail"]
    assert (
        "UTF-8" in post(b'{"service": "\xff"}')["detail"] or "JSON" in post(b'{"service": "\xff"}')["detail"]
    )
    assert "expected a JSON object" in post(b"[1, 2]")["detail"]
    assert "not usable JSON" in post(b"[" * 100_000)["detail"]
    assert "not usable JSON" in post(b"1" * 5000)["detail"]
    assert "duplicate key 'digest'" in post(b'{"service":"api","digest":"a","digest":"b"}')["detail"]
    d = post(json.dumps({"service": "api"}).encode())
    assert d["error"] == "PayloadInvalid" and d["detail"] == "digest: required"
    d = post(event("sha256:abc"))
    assert d["detail"].startswith("digest: expected 'sha256:' followed by 64 lowercase hex")
    d = post(event(published, colour="blue"))
    assert d["detail"].startswith("colour: unknown field; allowed fields: service, digest, version")
    d = post(event(published, to=5))
    assert d["detail"].startswith("to: ")
    d = post(json.dumps({"service": "API!", "digest": str(published)}).encode())
    assert d["detail"].startswith("service: ")
    assert recorder.calls == []


def test_422_unknown_names_and_unpublished_digest(
    client: TestClient, keys: Secrets, published: Digest, recorder: RecordingTrigger
) -> None:
    def post(body: bytes) -> httpx.Response:
        r: httpx.Response = client.post("/hooks/github", content=body, headers=keys.headers("github", body))
        return r

    d = expect(post(event(published).replace(b'"api"', b'"billing"')), 422, "UnknownService")
    assert "'billing' is not declared" in d["detail"] and "api, web" in d["detail"]
    d = expect(post(event(published, to="qa")), 422, "UnknownEnvironment")
    assert "'qa'" in d["detail"] and "dev, staging, prod" in d["detail"]
    never = Digest.of_bytes(os.urandom(32))
    d = expect(post(event(never)), 422, "ArtifactNotFound")
    assert "never published" in d["detail"] and "promote publish" in d["detail"]
    # published for api, not for web
    d = expect(post(event(published).replace(b'"api"', b'"web"')), 422, "ArtifactNotFound")
    d = expect(post(event(published, version="9.9.9")), 422, "ArtifactMismatch")
    assert "version: event says '9.9.9', record says '1.2.3'" in d["detail"]
    expect(post(event(published, version="1.2.3", commit="c0ffee", build_url="https://ci.example/1")), 202)
    assert len(recorder.calls) == 1


class RaisingTrigger:
    """A trigger that fails with a given error, as a real one could (issue 9: no 422 default)."""

    def __init__(self, exc: errors.PromotionError) -> None:
        self.exc = exc

    async def __call__(self, request: RunRequest) -> TriggeredRun:
        raise self.exc


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        # Not the sender's fault and not in the receiver's table: 500 and logged, never a 4xx the
        # sender would give up on.
        (errors.SetupRequired("the deployment promote-pipeline/pipeline is missing: run promote setup"), 500),
        (errors.LedgerCorrupt("api", ["record 3 was edited"]), 500),
        # The receiver's infrastructure (Prefect, a lock, the ledger busy): 503, the sender retries.
        (errors.PrefectUnreachable("http://127.0.0.1:1/api", "ConnectError"), 503),
        (errors.LedgerContention("api", 5), 503),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_an_error_the_receiver_has_no_answer_for_is_500_and_logged(
    hook_pipeline: Pipeline,
    keys: Secrets,
    published: Digest,
    caplog: pytest.LogCaptureFixture,
    exc: errors.PromotionError,
    status: int,
) -> None:
    caplog.set_level(logging.WARNING, logger="promotion.webhook")
    with TestClient(create_app(hook_pipeline, trigger=RaisingTrigger(exc))) as c:
        body = event(published)
        r = c.post("/hooks/github", content=body, headers=keys.headers("github", body))
    d = expect(r, status, type(exc).__name__)
    assert d["detail"] == str(exc)
    logged = [
        rec for rec in caplog.records if rec.name == "promotion.webhook" and type(exc).__name__ in rec.message
    ]
    assert [rec.levelno for rec in logged] == [logging.ERROR], [rec.message for rec in caplog.records]


def test_native_events_without_the_digest(client: TestClient, keys: Secrets, shared_fixtures: Path) -> None:
    gh = (shared_fixtures / "webhooks" / "github-workflow_run.completed.payload.json").read_bytes()
    r = client.post("/hooks/github", content=gh, headers=keys.headers("github", gh, event="workflow_run"))
    d = expect(r, 422, "PromotionTargetMissing")
    assert "workflow_run.display_title is 'ci(action): update actions/setup-node" in d["detail"]
    assert "run-name to 'promote <service> sha256:<64 hex>'" in d["detail"]
    gl = (shared_fixtures / "webhooks" / "gitlab-pipeline.json").read_bytes()
    r = client.post("/hooks/gitlab", content=gl, headers=keys.headers("gitlab", gl))
    d = expect(r, 422, "PromotionTargetMissing")
    assert "no PROMOTION_SERVICE and no PROMOTION_DIGEST in object_attributes.variables" in d["detail"]


def test_native_events_with_bad_names(
    client: TestClient, keys: Secrets, shared_fixtures: Path, published: Digest
) -> None:
    gl = json.loads((shared_fixtures / "webhooks" / "gitlab-pipeline.json").read_text())
    gl["object_attributes"]["variables"] = [
        {"key": "PROMOTION_SERVICE", "value": "Not A Name" * 50},
        {"key": "PROMOTION_DIGEST", "value": str(published)},
    ]
    body = json.dumps(gl).encode()
    d = expect(
        client.post("/hooks/gitlab", content=body, headers=keys.headers("gitlab", body)),
        422,
        "PayloadInvalid",
    )
    assert d["detail"].startswith("object_attributes.variables.PROMOTION_SERVICE: 'Not A Name")
    assert len(d["detail"]) < 250  # a long value is not echoed whole
    gl["object_attributes"]["variables"][1]["value"] = "sha256:nope"
    gl["object_attributes"]["variables"][0]["value"] = "api"
    body = json.dumps(gl).encode()
    d = expect(client.post("/hooks/gitlab", content=body, headers=keys.headers("gitlab", body)), 422)
    assert d["detail"].startswith(
        "object_attributes.variables.PROMOTION_DIGEST: 'sha256:nope' is not a digest"
    )
    gh = json.loads((shared_fixtures / "webhooks" / "github-workflow_run.completed.payload.json").read_text())
    gh["workflow_run"]["display_title"] = f"promote billing {published}"
    body = json.dumps(gh).encode()
    r = client.post("/hooks/github", content=body, headers=keys.headers("github", body, event="workflow_run"))
    expect(r, 422, "UnknownService")


def read_response(sock: socket.socket) -> bytes:
    """One HTTP response: headers and body may arrive in separate segments."""
    data = b""
    while True:
        head, sep, rest = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length: *(\d+)", head) if sep else None
        if length is not None and len(rest) >= int(length[1]):
            return data
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk


def test_408_slow_body(hook_pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that sends half a body and stalls is dropped, on the real uvicorn server."""
    # The app reads the limit from its own module (promotion.webhook re-exports it).
    monkeypatch.setattr("promotion.webhook.app.BODY_TIMEOUT_S", 0.5)
    with serve_in_thread(create_app(hook_pipeline, trigger=RecordingTrigger())) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /hooks/github HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            answer = read_response(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b'"error":"BodyTimeout"' in answer


def test_native_events_that_promote_nothing(
    client: TestClient, keys: Secrets, shared_fixtures: Path, published: Digest, recorder: RecordingTrigger
) -> None:
    gh_payload = json.loads(
        (shared_fixtures / "webhooks" / "github-workflow_run.completed.payload.json").read_text()
    )
    gh_payload["workflow_run"]["display_title"] = f"promote api {published}"
    cases: list[tuple[Callable[[dict[str, Any]], object], str]] = [
        (lambda p: p["workflow_run"].update(conclusion="failure"), "concluded failure"),
        (
            lambda p: (p.update(action="in_progress"), p["workflow_run"].update(status="in_progress")),
            "in_progress",
        ),
        (lambda p: p["workflow_run"]["head_repository"].update(full_name="mallory/octo-repo"), "fork"),
    ]
    for mutate, why in cases:
        p = copy.deepcopy(gh_payload)
        mutate(p)
        body = json.dumps(p).encode()
        r = client.post(
            "/hooks/github", content=body, headers=keys.headers("github", body, event="workflow_run")
        )
        assert why in expect(r, 200)["ignored"]
    body = b'{"zen": "Keep it logically awesome.", "hook_id": 1}'
    r = client.post("/hooks/github", content=body, headers=keys.headers("github", body, event="ping"))
    assert expect(r, 200)["ignored"].startswith("ping")
    r = client.post("/hooks/github", content=body, headers=keys.headers("github", body, event="push"))
    assert "'push' is not used" in expect(r, 200)["ignored"]

    gl_payload = json.loads((shared_fixtures / "webhooks" / "gitlab-pipeline.json").read_text())
    gl_payload["object_attributes"]["status"] = "failed"
    body = json.dumps(gl_payload).encode()
    r = client.post("/hooks/gitlab", content=body, headers=keys.headers("gitlab", body))
    assert "pipeline 31 is failed" in expect(r, 200)["ignored"]
    body = json.dumps({"object_kind": "push", "ref": "main"}).encode()
    assert (
        "'push'"
        in expect(client.post("/hooks/gitlab", content=body, headers=keys.headers("gitlab", body)), 200)[
            "ignored"
        ]
    )
    assert recorder.calls == []


# --- against the real Prefect server -----------------------------------------------------------------


@pytest.fixture(scope="module")
def deployment(prefect_api: str) -> str:
    """A real deployment of the pipeline flow, unique to this module, served by no worker."""
    from flows.pipeline import promote_pipeline

    name = f"webhook-test-{uuid.uuid4().hex[:8]}"
    runner_deployment: Any = promote_pipeline.to_deployment(name=name)  # sync here, not a coroutine
    runner_deployment.apply()
    return f"{promote_pipeline.name}/{name}"


@dataclass
class Live:
    url: str
    pipeline: Pipeline
    digest: Digest
    keys: Secrets
    deployment: str

    def post(self, source: str, body: bytes, **kw: Any) -> httpx.Response:
        headers = kw.pop("headers") if "headers" in kw else self.keys.headers(source, body, **kw)
        return httpx.post(f"{self.url}/hooks/{source}", content=body, headers=headers, timeout=60)


@pytest.fixture
def live(deployment: str, s3_server: LocalS3, prefix: str, keys: Secrets, tmp_path: Path) -> Iterator[Live]:
    p = make_pipeline(s3_server, prefix, deployment=deployment, **ENV_SOURCES)
    digest = publish(ArtifactStore(p), tmp_path)
    with serve_in_thread(create_app(p)) as url:
        yield Live(url, p, digest, keys, deployment)


def runs_with_key(key: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterIdempotencyKey

    with get_client(sync_client=True) as c:
        return list(
            c.read_flow_runs(
                flow_run_filter=FlowRunFilter(idempotency_key=FlowRunFilterIdempotencyKey(any_=[key]))
            )
        )


def test_202_creates_a_real_flow_run(live: Live, prefect_api: str) -> None:
    delivery = f"msg_{uuid.uuid4().hex}"
    body = event(live.digest, to="staging", requested_by="ci-bot", version="1.2.3")
    created = expect(live.post("standard", body, delivery=delivery), 202)
    assert set(created) == {"flow_run_id", "flow_run_url"}
    runs = runs_with_key(f"standard:{live.deployment}:{delivery}")
    assert [str(r.id) for r in runs] == [created["flow_run_id"]]
    run = runs[0]
    assert run.parameters == {
        "service": "api",
        "digest": str(live.digest),
        "to": "staging",
        "requested_by": "ci-bot",
    }
    assert run.state is not None and run.state.is_scheduled()
    assert {"webhook", "webhook:standard"} <= set(run.tags)
    ui = prefect_api.removesuffix("/api")
    assert created["flow_run_url"] == f"{ui}/runs/flow-run/{run.id}"


def test_native_events_create_runs(live: Live, shared_fixtures: Path) -> None:
    gh = json.loads((shared_fixtures / "webhooks" / "github-workflow_run.completed.payload.json").read_text())
    gh["workflow_run"]["display_title"] = f"promote api {live.digest} to dev"
    body = json.dumps(gh).encode()
    delivery = str(uuid.uuid4())
    created = expect(live.post("github", body, delivery=delivery, event="workflow_run"), 202)
    (run,) = runs_with_key(f"github:{live.deployment}:{delivery}")
    assert str(run.id) == created["flow_run_id"]
    assert run.parameters == {
        "service": "api",
        "digest": str(live.digest),
        "to": "dev",
        "requested_by": "Codertocat",
    }

    gl = json.loads((shared_fixtures / "webhooks" / "gitlab-pipeline.json").read_text())
    gl["object_attributes"]["variables"] += [
        {"key": "PROMOTION_SERVICE", "value": "api"},
        {"key": "PROMOTION_DIGEST", "value": str(live.digest)},
    ]
    body = json.dumps(gl).encode()
    delivery = str(uuid.uuid4())
    created = expect(live.post("gitlab", body, delivery=delivery), 202)
    (run,) = runs_with_key(f"gitlab:{live.deployment}:{delivery}")
    assert run.parameters == {
        "service": "api",
        "digest": str(live.digest),
        "to": None,
        "requested_by": "user1",
    }


def test_replayed_delivery_creates_one_run(live: Live, tmp_path: Path) -> None:
    body = event(live.digest)
    headers = live.keys.headers("github", body)
    first = expect(live.post("github", body, headers=headers), 202)
    again = expect(live.post("github", body, headers=headers), 202)
    assert again == first
    delivery = headers["X-GitHub-Delivery"]
    assert len(runs_with_key(f"github:{live.deployment}:{delivery}")) == 1
    # the same delivery id with other content is refused: its run promotes something else
    other = publish(ArtifactStore(live.pipeline), tmp_path)
    r = live.post("github", event(other), delivery=delivery)
    assert first["flow_run_id"] in expect(r, 409, "DeliveryConflict")["detail"]
    assert len(runs_with_key(f"github:{live.deployment}:{delivery}")) == 1


@pytest.mark.parametrize("max_in_flight", [1, 10])
def test_concurrent_duplicates_create_one_run(live: Live, max_in_flight: int) -> None:
    """10 copies of one delivery at once: one run. With 10 creations in flight per process (as with
    several receiver replicas), Prefect's idempotency key is what keeps it to one."""
    trigger = PrefectTrigger(live.deployment, max_in_flight=max_in_flight)
    body = event(live.digest, requested_by="ci")
    with serve_in_thread(create_app(live.pipeline, trigger=trigger)) as url:
        for source in ("standard", "gitlab") if max_in_flight == 1 else ("github",):
            headers = live.keys.headers(source, body)

            def send(_: int, source: str = source, headers: dict[str, str] = headers) -> httpx.Response:
                return httpx.post(f"{url}/hooks/{source}", content=body, headers=headers, timeout=120)

            with ThreadPoolExecutor(max_workers=10) as pool:
                answers = list(pool.map(send, range(10)))
            assert [r.status_code for r in answers] == [202] * 10, [r.text for r in answers]
            ids = {r.json()["flow_run_id"] for r in answers}
            assert len(ids) == 1
            delivery = (
                headers.get("webhook-id")
                or headers.get("X-Gitlab-Event-UUID")
                or headers["X-GitHub-Delivery"]
            )
            runs = runs_with_key(f"{source}:{live.deployment}:{delivery}")
            assert [str(r.id) for r in runs] == list(ids)


def test_secret_block_source(
    prefect_api: str, deployment: str, s3_server: LocalS3, prefix: str, tmp_path: Path
) -> None:
    from prefect.blocks.system import Secret

    token = "gl-block-" + secrets.token_hex(12)
    name = f"webhook-gitlab-{uuid.uuid4().hex[:8]}"
    Secret(value=SecretStr(token)).save(name)
    p = make_pipeline(
        s3_server,
        prefix,
        deployment=deployment,
        gitlab=f"secret_block: {name}",
        github="secret_block: nope-missing",
    )
    digest = publish(ArtifactStore(p), tmp_path)
    recorder = RecordingTrigger()
    with TestClient(create_app(p, trigger=recorder)) as c:
        body = event(digest)
        expect(
            c.post(
                "/hooks/gitlab", content=body, headers={"X-Gitlab-Token": token, "X-Gitlab-Event-UUID": "u1"}
            ),
            202,
        )
        expect(
            c.post(
                "/hooks/gitlab",
                content=body,
                headers={"X-Gitlab-Token": token + "x", "X-Gitlab-Event-UUID": "u2"},
            ),
            401,
        )
        # a block that does not exist: the source is not served
        expect(c.post("/hooks/github", content=body), 404, "SourceNotServed")
    assert [c.delivery_id for c in recorder.calls] == ["u1"]


SIGNATURE_HEADERS = {"x-hub-signature-256", "x-gitlab-token", "webhook-signature"}


def test_secrets_never_appear_in_responses_or_logs(
    live: Live, caplog: pytest.LogCaptureFixture, shared_fixtures: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    extra = [logging.getLogger(n) for n in ("prefect", "uvicorn", "uvicorn.error", "uvicorn.access", "httpx")]
    for lg in extra:
        lg.addHandler(caplog.handler)
    responses: list[httpx.Response] = []
    sent: list[str] = []  # every signature or token value sent
    oracles: list[str] = []  # the signatures a refused body would have needed

    def post(source: str, body: bytes, headers: dict[str, str]) -> None:
        sent.extend(
            v.removeprefix("sha256=").removeprefix("v1,")
            for k, v in headers.items()
            if k.lower() in SIGNATURE_HEADERS
        )
        responses.append(live.post(source, body, headers=headers))

    try:
        body = event(live.digest)
        tampered = body + b" "
        for source in ("github", "gitlab", "standard"):
            post(source, body, live.keys.headers(source, body))  # 202
            h = live.keys.headers(source, body)
            post(source, tampered, h)  # 401 (gitlab: the token does not cover the body: 202)
            if source == "github":
                oracles.append(gh_sign(live.keys.github, tampered).removeprefix("sha256="))
            if source == "standard":
                ts = int(h["webhook-timestamp"])
                oracles.append(
                    std_sign(live.keys.standard, h["webhook-id"], ts, tampered).removeprefix("v1,")
                )
            post(source, b"{not json", {})  # 401
            bad = event("sha256:00")
            post(source, bad, live.keys.headers(source, bad))  # 422
        wrong = Secrets()
        for source in ("github", "gitlab", "standard"):
            post(source, body, wrong.headers(source, body))  # 401
        # someone sends the secret itself where a signature belongs
        post("github", body, {"X-Hub-Signature-256": live.keys.github, "X-GitHub-Delivery": "x"})
        post(
            "standard", body, {**live.keys.headers("standard", body), "webhook-signature": live.keys.standard}
        )
        gl = (shared_fixtures / "webhooks" / "gitlab-pipeline.json").read_bytes()
        post("gitlab", gl, live.keys.headers("gitlab", gl))  # 422
    finally:
        for lg in extra:
            lg.removeHandler(caplog.handler)
    statuses = sorted({r.status_code for r in responses})
    assert statuses == [202, 401, 422], statuses
    assert len(oracles) == 2 and len(sent) >= 15
    never_shown = live.keys.values() + sent + oracles
    for r in responses:
        shown = r.text + json.dumps(dict(r.headers))
        for s in never_shown:
            assert s not in shown
    records = [r for r in caplog.records if r.name == "promotion.webhook"]
    assert len(records) >= len(responses), "the receiver logs every delivery; else this proves nothing"
    for rec in caplog.records:
        text = rec.getMessage() + str(rec.args) + (rec.exc_text or "")
        for s in never_shown:
            assert s not in text, (rec.name, rec.getMessage())


# --- fuzzing -------------------------------------------------------------------------------------

_header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=80
)
_HEADER_NAMES = [
    "X-Hub-Signature-256",
    "X-GitHub-Delivery",
    "X-GitHub-Event",
    "X-Gitlab-Token",
    "X-Gitlab-Event-UUID",
    "Idempotency-Key",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "Content-Type",
]
_json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30)
)
_json = st.recursive(
    _json_leaf,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=5),
    max_leaves=12,
)
_event_like = st.fixed_dictionaries(
    {},
    optional={
        "service": st.sampled_from(["api", "api", "web", "nope", "", "API"]) | st.text(max_size=10),
        "digest": st.sampled_from(["PUBLISHED", "sha256:" + "0" * 64, "sha256:", "latest"])
        | st.text(max_size=70),
        "to": st.sampled_from(["dev", "prod", "qa", None]) | _json_leaf,
        "version": _json_leaf,
        "requested_by": _json_leaf,
        "object_kind": st.sampled_from(["pipeline", "push"]),
        "object_attributes": _json,
        "action": st.sampled_from(["completed", "requested"]),
        "workflow_run": _json,
        "extra": _json,
    },
)


_valid_event = st.fixed_dictionaries(
    {
        "service": st.sampled_from(["api", "web", "nope"]),
        "digest": st.sampled_from(["PUBLISHED", "sha256:" + "0" * 64]),
    },
    optional={
        "to": st.sampled_from(["dev", "prod", "qa"]),
        "requested_by": st.text(min_size=1, max_size=20),
        "version": st.sampled_from(["1.2.3", "2"]),
    },
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["binary", "json", "event", "event", "valid", "valid"]))
    if kind == "binary":
        return draw(st.binary(max_size=300))
    if kind == "valid":
        return json.dumps(draw(_valid_event)).encode()
    value = draw(_json) if kind == "json" else draw(_event_like)
    return json.dumps(value).encode()


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    # mostly served sources and signed bodies, so most examples get past authentication
    source=st.integers(0, 7).flatmap(
        lambda i: st.text(max_size=20) if i == 7 else st.sampled_from(["github", "gitlab", "standard"])
    ),
    body=bodies(),
    headers=st.dictionaries(st.sampled_from(_HEADER_NAMES), _header_text, max_size=6),
    sign=st.sampled_from([True, True, True, False]),
    content_length=st.integers(0, 7).flatmap(lambda i: _header_text if i == 7 else st.none()),
    event_header=st.sampled_from([None, "workflow_run", "ping", "push"]),
    skew=st.sampled_from([0, 0, 299, -299, 301, -100_000]),
)
def test_fuzz_never_5xx(
    client: TestClient,
    keys: Secrets,
    published: Digest,
    source: str,
    body: bytes,
    headers: dict[str, str],
    sign: bool,
    content_length: str | None,
    event_header: str | None,
    skew: int,
) -> None:
    body = body.replace(b'"PUBLISHED"', f'"{published}"'.encode())
    h = dict(headers)
    if sign and source in ("github", "gitlab", "standard"):
        h.update(keys.headers(source, body, event=event_header, ts=int(time.time()) + skew))
    # bytes, so latin-1 values reach the server as they are (httpx encodes str headers as ASCII)
    if content_length is not None:
        h["Content-Length"] = content_length
    raw = {k: v.encode("latin-1") for k, v in h.items()}
    r = client.post(f"/hooks/{quote(source, safe='')}", content=body, headers=raw)
    assert r.status_code < 500, (r.status_code, r.text)
    hypothesis.event(f"{r.status_code} {r.json().get('error', '')}")
    data = r.json()
    assert set(data) in ({"error", "detail"}, {"ignored"}, {"flow_run_id", "flow_run_url"}), data
