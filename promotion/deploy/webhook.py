"""The deploy webhook: a signed POST of what to deploy (:class:`DeployPayload`) to a receiver.

The payload carries the digest, version, size and a presigned GET URL of the blob. Each request
is signed twice over the exact body bytes (Standard Webhooks and GitHub style, both computed by
:mod:`promotion.signing`; see :mod:`promotion.deploy`); the secret and the URL's signature are
scrubbed from every message (:mod:`promotion.deploy.redaction`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from promotion import signing
from promotion.config import WebhookTarget
from promotion.deploy.redaction import redact_url, scrubber, url_secrets
from promotion.digest import Digest
from promotion.errors import DeployFailed, SigningSecretInvalid, WebhookSecretError

# One logger name for the whole package, as before the split: log configuration that names
# "promotion.deploy" keeps seeing every record.
log = logging.getLogger("promotion.deploy")

#: How much of a failed webhook answer is kept in the error.
BODY_EXCERPT = 200


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
    scrub = scrubber(hidden, url_secrets(payload.presigned_url.get_secret_value()) + url_secrets(url))
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
