"""Owners are told: what an incident says, when it was already told, and the signed JSON webhook.

An incident is one of six things that halt or undo a service's delivery (``INCIDENT_KINDS``). The
flows hand it to :func:`flows._report.tell_owners`, which emits one ``promotion.incident`` event
(promote setup's automations send it through each owner's Prefect notification block) and POSTs
it, signed with Standard Webhooks, to each owner's webhook.

One notification per incident, not one per retry: an incident is named by (service, environment,
digest, kind); a marker under ``notified/`` in the store says when it was last told, and the same
incident within ``DEDUPE_WINDOW`` is not told again (a task retry, a re-run of the same failing
promotion, the next sweep finding the same drift). The marker is written after the telling, so a
crash in between tells twice rather than never. The event id and the ``webhook-id`` header are
derived from the name and the window, so Prefect's event de-duplication and a receiver's
idempotency check see a repeat as the same message.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
import uuid
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict

from promotion import signing
from promotion.config import OwnerWebhook
from promotion.digest import Digest
from promotion.errors import NotificationFailed
from promotion.s3 import S3

IncidentKind = Literal["gate_failed", "rejected", "rolled_back", "verification_failed", "drift", "flagged"]
INCIDENT_KINDS: tuple[IncidentKind, ...] = (
    "gate_failed",
    "rejected",
    "rolled_back",
    "verification_failed",
    "drift",
    "flagged",
)
HEADLINES: dict[IncidentKind, str] = {
    "gate_failed": "Gate failed",
    "rejected": "Rejected",
    "rolled_back": "Rolled back",
    "verification_failed": "Verification failed",
    "drift": "Drift",
    "flagged": "Digest flagged (corrupted)",
}

#: The same incident told again within this long is a retry, not news.
DEDUPE_WINDOW = dt.timedelta(hours=1)

#: A webhook receiver that does not answer within this is a failed delivery (retried next time).
WEBHOOK_TIMEOUT_S = 10.0

_NAMESPACE = uuid.UUID("6f1d1c4e-3a55-4f0e-9a57-0d5b9f3f6c11")  # this product's incident ids


class Incident(BaseModel):
    """What every owner notification says; also the ``promotion.incident`` event's payload."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: IncidentKind
    service: str
    environment: str | None
    digest: Digest
    version: str | None = None
    reasons: list[str]
    flow_run_id: str | None = None
    run_url: str | None = None
    stage_report: str | None = None  # the Prefect artifact key of the stage (or sweep) report
    owners: list[str] = []

    @property
    def key(self) -> str:
        return f"{self.service}:{self.environment or 'all'}:{self.digest}:{self.kind}"

    @property
    def headline(self) -> str:
        where = f" -> {self.environment}" if self.environment else ""
        return f"{HEADLINES[self.kind]}: {self.service} {self.version or self.digest.short}{where}"

    def payload(self) -> dict[str, Any]:
        return {
            **self.model_dump(mode="json"),
            "digest_short": self.digest.short,
            "headline": self.headline,
            "reasons_text": "; ".join(self.reasons) or "no reason recorded",
            "run_url": self.run_url or "n/a",
            "stage_report": self.stage_report or "n/a",
        }


def window_start(now: dt.datetime) -> int:
    """The start (epoch seconds) of the dedupe window ``now`` falls in."""
    size = int(DEDUPE_WINDOW.total_seconds())
    return int(now.timestamp()) // size * size


def message_id(incident: Incident, now: dt.datetime) -> str:
    """The same for every telling of one incident in one window: the event id, the webhook-id."""
    return f"msg_{uuid.uuid5(_NAMESPACE, f'{incident.key}:{window_start(now)}').hex}"


def event_id(incident: Incident, now: dt.datetime) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"{incident.key}:{window_start(now)}")


def _marker(s3: S3, incident: Incident) -> str:
    name = hashlib.sha256(incident.key.encode()).hexdigest()[:32]
    return s3.key("notified", incident.service, f"{incident.kind}-{name}.json")


def already_told(s3: S3, incident: Incident, now: dt.datetime) -> bool:
    """Whether this incident was told less than DEDUPE_WINDOW ago (its marker says when)."""
    raw = s3.get(_marker(s3, incident))
    if raw is None:
        return False
    try:
        told = dt.datetime.fromisoformat(json.loads(raw)["told_at"])
    except (ValueError, KeyError, TypeError):
        return False  # an unreadable marker: telling twice beats never telling
    return now - told < DEDUPE_WINDOW


def mark_told(s3: S3, incident: Incident, now: dt.datetime, told: list[str]) -> None:
    body = {"key": incident.key, "told_at": now.isoformat(), "owners": told}
    s3.put(_marker(s3, incident), json.dumps(body).encode(), content_type="application/json")


def webhook_body(incident: Incident, msg_id: str) -> bytes:
    """The generic JSON notification: a Standard Webhooks ``type`` and ``data`` envelope."""
    envelope = {"type": f"promotion.incident.{incident.kind}", "id": msg_id, "data": incident.payload()}
    return json.dumps(envelope, sort_keys=True).encode()


def send_webhook(owner: str, target: OwnerWebhook, incident: Incident, msg_id: str) -> None:
    """POST the signed notification; :class:`NotificationFailed` (never naming the secret) if not 2xx.

    The secret is read here, from the environment of the process that tells, and only the HMAC
    leaves it.
    """
    secret = os.environ.get(target.secret_env)
    if not secret:
        raise NotificationFailed(
            owner, f"the signing secret is not set: environment variable {target.secret_env}"
        )
    key = signing.standard_webhooks_key(secret)
    body = webhook_body(incident, msg_id)
    ts = int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signing.standard_webhooks_signature(key, msg_id, ts, body),
    }
    try:
        answer = httpx.post(target.url, content=body, headers=headers, timeout=WEBHOOK_TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise NotificationFailed(owner, f"webhook unreachable: {type(exc).__name__}") from None
    if not 200 <= answer.status_code < 300:
        raise NotificationFailed(owner, f"webhook answered HTTP {answer.status_code}")
