"""promotion.signing: the published vectors, the reference library, and both directions agreeing.

The vectors come from ``../shared/fixtures/webhooks/signature-test-vectors.json`` (GitHub's docs
and the Standard Webhooks reference libraries' tests), read in place. The reference Python library
(``standardwebhooks``) is the oracle for everything else; the deploy webhook's requests are checked
by the receiver's own verifiers, over real HTTP.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from promotion import signing, webhook
from promotion.cli import exit_code_for
from promotion.config import WebhookTarget
from promotion.deploy import DeployPayload, WebhookSecretError, call_deploy_webhook
from promotion.digest import Digest
from promotion.errors import SigningSecretInvalid


@pytest.fixture
def vectors(shared_fixtures: Path) -> dict[str, Any]:
    path = shared_fixtures / "webhooks" / "signature-test-vectors.json"
    if not path.is_file():
        pytest.skip(f"{path} not present on this machine")
    data: dict[str, Any] = json.loads(path.read_text())
    assert data["github_x_hub_signature_256"] and data["standard_webhooks"]
    return data


# --- the published vectors ----------------------------------------------------------------------


def test_github_vectors(vectors: dict[str, Any]) -> None:
    for v in vectors["github_x_hub_signature_256"]:
        body = v["payload"].encode()
        assert signing.github_signature(v["secret"], body) == v["expected_header_value"], v["id"]
        assert v["expected_header_value"] == "sha256=" + v["expected_signature_hex"]
        assert (
            signing.github_signature_matches(v["secret"], body, v["expected_header_value"])
            is v["expected_valid"]
        )
        assert signing.github_signature_matches(v["secret"], body, f" {v['expected_header_value']}\t")
        assert not signing.github_signature_matches(v["secret"], body + b" ", v["expected_header_value"])
        assert not signing.github_signature_matches(v["secret"] + "x", body, v["expected_header_value"])
        assert not signing.github_signature_matches(v["secret"], body, v["expected_signature_hex"])
        assert not signing.github_signature_matches(v["secret"], body, "sha256=é")  # False, not TypeError


def test_standard_webhooks_vectors(vectors: dict[str, Any]) -> None:
    for v in vectors["standard_webhooks"]:
        body, ts, msg_id = v["payload"].encode(), v["timestamp"], v["msg_id"]
        key = signing.standard_webhooks_key(v["secret"])
        assert signing.standard_webhooks_signature(key, msg_id, ts, body) == v["expected_signature"], v["id"]
        sig = v["expected_signature"]
        assert signing.standard_webhooks_signature_matches(key, msg_id, ts, body, sig) is v["expected_valid"]
        # a space-separated list: one v1 entry is enough, other versions never match
        assert signing.standard_webhooks_signature_matches(
            key, msg_id, ts, body, f"v1a,xyz  v1,bm9wZQ== {sig}"
        )
        assert not signing.standard_webhooks_signature_matches(key, msg_id, ts, body, "v2," + sig[3:])
        assert not signing.standard_webhooks_signature_matches(key, msg_id, ts, body, sig[3:])
        assert not signing.standard_webhooks_signature_matches(key, msg_id, ts, body + b" ", sig)
        assert not signing.standard_webhooks_signature_matches(key, msg_id + "x", ts, body, sig)
        assert not signing.standard_webhooks_signature_matches(key, msg_id, ts + 1, body, sig)
        assert not signing.standard_webhooks_signature_matches(key, msg_id, ts, body, "v1,é")
        # the secret's spellings that mean the same key: prefix optional, whitespace around ignored
        bare = v["secret"].removeprefix("whsec_")
        for spelling in (bare, f"  {v['secret']}\n", bare.rstrip("=")):
            assert signing.standard_webhooks_key(spelling) == key
        # the reference library agrees with the vector, so it is a fair oracle below
        ref = Webhook(v["secret"])
        assert ref.sign(msg_id, dt.datetime.fromtimestamp(ts, dt.UTC), v["payload"]) == sig


def test_every_signer_in_the_product_uses_this_module() -> None:
    """The receiver, the deploy webhook and the demo hold no HMAC of their own any more."""
    repo = Path(__file__).resolve().parents[2]
    for rel in ("promotion/webhook", "promotion/deploy", "scripts/demo.py"):
        path = repo / rel
        # The receiver and the deploy code are packages: their modules are read together.
        files = sorted(path.glob("*.py")) if path.is_dir() else [path]
        text = "".join(f.read_text() for f in files)
        assert "import hmac" not in text and "hmac.new" not in text and "compare_digest" not in text, rel
        assert "signing" in text, rel


# --- secrets that are not Standard Webhooks secrets -----------------------------------------------


@pytest.mark.parametrize(
    "secret",
    [
        "whsec_not base64!",
        "whsec_",
        "",
        "   ",
        "whsec_abc-def_ghi",  # the URL-safe alphabet is not the spec's
        "whsec_QUJDRAxyz",  # one character more than a multiple of 4 cannot be base64
        "whsec_YWJj=ZGVm",  # padding in the middle
        "plain-shared-secret",
    ],
)
def test_a_secret_that_is_not_base64_is_refused_without_echoing_it(secret: str) -> None:
    with pytest.raises(SigningSecretInvalid) as exc_info:
        signing.standard_webhooks_key(secret)
    assert exit_code_for(exc_info.value) == 2
    message = str(exc_info.value)
    assert "\n" not in message and message.startswith("the Standard Webhooks secret is")
    if secret.strip().removeprefix("whsec_"):
        assert secret.strip().removeprefix("whsec_") not in message


# --- the reference library as an oracle -----------------------------------------------------------

_msg_ids = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(
    key=st.binary(min_size=1, max_size=64),
    msg_id=_msg_ids,
    ts=st.integers(min_value=0, max_value=2**33),
    payload=st.text(max_size=300),
    spelling=st.sampled_from(["whsec_", "", "unpadded"]),
)
def test_signatures_equal_the_reference_library(
    key: bytes, msg_id: str, ts: int, payload: str, spelling: str
) -> None:
    encoded = base64.b64encode(key).decode()
    secret = "whsec_" + encoded if spelling == "whsec_" else encoded
    if spelling == "unpadded":
        secret = encoded.rstrip("=")
    assert signing.standard_webhooks_key(secret) == key
    ours = signing.standard_webhooks_signature(key, msg_id, ts, payload.encode())
    assert ours == Webhook(secret).sign(msg_id, dt.datetime.fromtimestamp(ts, dt.UTC), payload)


def signed_headers(key: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers a Standard Webhooks sender adds, with our signature."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signing.standard_webhooks_signature(key, msg_id, timestamp, body),
    }


@settings(max_examples=50, deadline=None)
@given(key=st.binary(min_size=1, max_size=64), payload=st.text(max_size=300))
def test_the_reference_library_verifies_what_we_sign_and_we_verify_what_it_signs(
    key: bytes, payload: str
) -> None:
    secret, msg_id, now = (
        "whsec_" + base64.b64encode(key).decode(),
        f"msg_{uuid.uuid4().hex}",
        int(time.time()),
    )
    headers = signed_headers(key, msg_id, now, payload.encode())
    Webhook(secret).verify(payload, headers, json_parse=False)  # raises if it disagrees
    theirs = Webhook(secret).sign(msg_id, dt.datetime.fromtimestamp(now, dt.UTC), payload)
    assert signing.standard_webhooks_signature_matches(key, msg_id, now, payload.encode(), theirs)
    other = signed_headers(key + b"x", msg_id, now, payload.encode())
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(payload, other, json_parse=False)


# --- outgoing and incoming agree: the deploy webhook, checked by the receiver's verifiers ----------


@contextmanager
def capturing_receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    """A real HTTP server on 127.0.0.1 that records each request's headers and body, answers 202."""
    seen: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/deploy", seen
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def _payload() -> DeployPayload:
    return DeployPayload(
        service="api",
        environment="prod",
        digest=Digest.of_bytes(b"abc"),
        version="1.0.0",
        presigned_url=SecretStr("http://127.0.0.1:9/b/k?X-Amz-Signature=00"),
        size=3,
        requested_by="alice",
        idempotency_key=f"promote-api-prod-{uuid.uuid4().hex[:8]}",
    )


_key = os.urandom(32)  # 44 base64 characters, one '=' of padding: the unpadded spelling differs


@pytest.mark.parametrize(
    "secret",
    [
        "whsec_" + base64.b64encode(_key).decode(),
        base64.b64encode(_key).decode(),  # no prefix: base64-decoded, as the reference does
        "whsec_" + base64.b64encode(_key).decode().rstrip("="),  # unpadded, as the reference accepts
    ],
    ids=["whsec", "no-prefix", "unpadded"],
)
def test_the_receiver_accepts_what_the_deploy_webhook_signs(secret: str) -> None:
    with capturing_receiver() as (url, seen):
        target = WebhookTarget.model_validate({"url": url, "timeout": 10})
        result = call_deploy_webhook(target, SecretStr(secret), _payload())
    assert result.status == 202
    ((headers, body),) = seen
    ts = int(headers["webhook-timestamp"])
    # Both directions read the same secret the same way: the receiver's Standard Webhooks check
    # passes on the deploy's signature (before, a secret without whsec_ was keyed differently).
    webhook.verify_standard(
        SecretStr(secret),
        body,
        msg_id=headers["webhook-id"],
        timestamp=headers["webhook-timestamp"],
        signature=headers["webhook-signature"],
        now=ts,
    )
    webhook.verify_github(SecretStr(secret), body, headers["x-promotion-signature-256"])
    Webhook(secret).verify(body, headers, json_parse=False)  # the reference library agrees


def test_a_whsec_secret_that_is_not_base64_stops_the_deploy_webhook_before_sending() -> None:
    with capturing_receiver() as (url, seen):
        target = WebhookTarget.model_validate({"url": url, "timeout": 10})
        with pytest.raises(WebhookSecretError) as exc_info:
            call_deploy_webhook(target, SecretStr("whsec_not*base64!"), _payload())
    assert seen == [] and "not*base64!" not in str(exc_info.value)


# --- the CI example (bash + openssl) signs what the receiver accepts -------------------------------

SENDER = Path(__file__).resolve().parents[2] / "examples" / "ci" / "send-webhook.sh"


@pytest.mark.skipif(
    not all(shutil.which(t) for t in ("bash", "openssl", "xxd", "curl", "base64")),
    reason="send-webhook.sh needs bash, openssl, xxd, curl and base64",
)
@pytest.mark.parametrize(
    "secret",
    [
        "whsec_" + base64.b64encode(_key).decode(),
        base64.b64encode(_key).decode(),
        "whsec_" + base64.b64encode(_key).decode().rstrip("="),
    ],
    ids=["whsec", "no-prefix", "unpadded"],
)
def test_the_ci_example_signs_what_the_receiver_accepts(secret: str) -> None:
    digest = str(Digest.of_bytes(b"ci example"))
    with capturing_receiver() as (url, seen):
        done = subprocess.run(
            ["bash", str(SENDER), "api", digest, "1.0.0"],
            env={
                **os.environ,
                "PROMOTION_WEBHOOK_URL": url.removesuffix("/deploy"),
                "PROMOTION_WEBHOOK_SECRET": secret,
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    ((headers, body),) = seen
    assert json.loads(body) == {"service": "api", "digest": digest, "version": "1.0.0"}
    webhook.verify_standard(
        SecretStr(secret),
        body,
        msg_id=headers["webhook-id"],
        timestamp=headers["webhook-timestamp"],
        signature=headers["webhook-signature"],
        now=int(headers["webhook-timestamp"]),
    )
