"""Each source's authentication: signature, token or Standard Webhooks headers, and the delivery id."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pydantic import SecretStr

from promotion import signing
from promotion.errors import (
    DeliveryIdInvalid,
    SignatureInvalid,
    SignatureMissing,
    StaleTimestamp,
)

if TYPE_CHECKING:
    pass


#: Standard Webhooks' recommended tolerance for webhook-timestamp, both ways.
TIMESTAMP_TOLERANCE_S = 5 * 60
#: Delivery ids go into Prefect's idempotency key; real ones are UUIDs or short message ids.
MAX_DELIVERY_ID = 200

_DELIVERY_ID_RE = re.compile(rf"[\x21-\x7e]{{1,{MAX_DELIVERY_ID}}}")
_TIMESTAMP_RE = re.compile(r"[0-9]{1,15}")


# The schemes themselves are computed in promotion.signing (shared with the deploy webhook and the
# demo); this section maps what does not match to the receiver's 401 answers.


def verify_github(secret: SecretStr, body: bytes, header: str | None) -> None:
    """Raise unless ``header`` is ``sha256=<hex HMAC-SHA256 of body>``."""
    if not header:
        raise SignatureMissing(
            "X-Hub-Signature-256 is missing: set the webhook's secret in GitHub (Settings -> "
            "Webhooks) so GitHub signs deliveries"
        )
    if not signing.github_signature_matches(secret.get_secret_value(), body, header):
        raise SignatureInvalid(
            "X-Hub-Signature-256 does not match the body: the secret in GitHub differs from the "
            "receiver's, or the body was changed on the way (sign the exact bytes sent)"
        )


def verify_gitlab(secret: SecretStr, header: str | None) -> None:
    """Raise unless ``header`` equals the secret token."""
    if not header:
        raise SignatureMissing(
            "X-Gitlab-Token is missing: set the webhook's secret token in GitLab (Settings -> Webhooks)"
        )
    if not signing.secrets_match(secret.get_secret_value(), header):
        raise SignatureInvalid(
            "X-Gitlab-Token does not match the receiver's secret for source gitlab: update the "
            "webhook's secret token in GitLab"
        )


def verify_standard(
    secret: SecretStr,
    body: bytes,
    *,
    msg_id: str | None,
    timestamp: str | None,
    signature: str | None,
    now: float,
    tolerance: float = TIMESTAMP_TOLERANCE_S,
) -> None:
    """Raise unless one ``v1`` signature matches and the timestamp is within ``tolerance`` of ``now``.

    A secret that is not ``whsec_<base64>`` raises :class:`~promotion.errors.SigningSecretInvalid`
    (the receiver checks it before serving the source).
    """
    if not msg_id or not timestamp or not signature:
        absent = [
            n
            for n, v in (
                ("webhook-id", msg_id),
                ("webhook-timestamp", timestamp),
                ("webhook-signature", signature),
            )
            if not v
        ]
        raise SignatureMissing(
            f"{', '.join(absent)} missing: a Standard Webhooks sender sends webhook-id, "
            "webhook-timestamp and webhook-signature"
        )
    if not _TIMESTAMP_RE.fullmatch(timestamp.strip()):
        raise SignatureInvalid("webhook-timestamp must be whole seconds since the Unix epoch")
    ts = int(timestamp.strip())
    key = signing.standard_webhooks_key(secret.get_secret_value())
    if not signing.standard_webhooks_signature_matches(key, msg_id, ts, body, signature):
        raise SignatureInvalid(
            "no webhook-signature entry matches: expected a 'v1,<base64>' entry signed with the "
            "receiver's secret over webhook-id.webhook-timestamp.body"
        )
    if ts < now - tolerance:
        raise StaleTimestamp(
            f"webhook-timestamp is {int(now - ts)} s old, more than {tolerance:g} s: send a fresh "
            "delivery (and check the sender's clock)"
        )
    if ts > now + tolerance:
        raise StaleTimestamp(
            f"webhook-timestamp is {int(ts - now)} s in the future, more than {tolerance:g} s: "
            "check the sender's clock"
        )


def _delivery_id(value: str | None, header: str) -> str:
    if value is None or not _DELIVERY_ID_RE.fullmatch(value):
        raise DeliveryIdInvalid(
            f"{header} is missing or not 1-{MAX_DELIVERY_ID} printable ASCII characters; the "
            "receiver needs it to create one flow run per delivery"
        )
    return value


def authenticate(source: str, secret: SecretStr, headers: Mapping[str, str], body: bytes, now: float) -> str:
    """Check the delivery's signature; return its delivery id."""
    if source == "github":
        verify_github(secret, body, headers.get("x-hub-signature-256"))
        return _delivery_id(headers.get("x-github-delivery"), "X-GitHub-Delivery")
    if source == "gitlab":
        verify_gitlab(secret, headers.get("x-gitlab-token"))
        if "idempotency-key" in headers:
            return _delivery_id(headers.get("idempotency-key"), "Idempotency-Key")
        return _delivery_id(headers.get("x-gitlab-event-uuid"), "X-Gitlab-Event-UUID")
    msg_id = headers.get("webhook-id")
    verify_standard(
        secret,
        body,
        msg_id=msg_id,
        timestamp=headers.get("webhook-timestamp"),
        signature=headers.get("webhook-signature"),
        now=now,
    )
    return _delivery_id(msg_id, "webhook-id")
