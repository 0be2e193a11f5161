"""Owners are told: what an incident says, who may tell it, and the signed JSON webhook.

An incident is one of seven things that halt or undo a service's delivery (``INCIDENT_KINDS``;
``timed_out`` is an approval nobody answered in time, a rejection nobody gave). The flows hand it
to :func:`flows._report.tell_owners`, which emits one ``promotion.incident`` event (promote
setup's automations send it through each owner's Prefect notification block) and POSTs it,
signed with Standard Webhooks, to each owner's webhook. The nightly sweep's metric alerts reach
webhook owners the same way (``promotion.metric.crossed`` / ``.recovered``, flows/sweep.py).

One notification per incident, not one per retry: an incident is named by (service, environment,
digest, kind), and a marker under ``notified/`` in the store says who may tell it (:func:`claim`).
It is created with a conditional write, so of the processes meeting the same incident at once (a
task retry, a re-run of the same failing promotion, a stage and the sweep) exactly one tells;
the same incident within ``DEDUPE_WINDOW`` of its telling is not told again. The event id and the
``webhook-id`` are derived from the store, the name and the window, so Prefect's event
de-duplication and a receiver's idempotency check see a repeat as the same message.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
import uuid
from typing import TYPE_CHECKING, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict

from promotion import signing
from promotion.config import OwnerWebhook
from promotion.digest import Digest
from promotion.errors import NotificationFailed, PreconditionFailed
from promotion.s3 import S3

if TYPE_CHECKING:
    from promotion.metrics.alerts import Transition

IncidentKind = Literal[
    "gate_failed", "rejected", "timed_out", "rolled_back", "verification_failed", "drift", "flagged"
]
INCIDENT_KINDS: tuple[IncidentKind, ...] = (
    "gate_failed",
    "rejected",
    "timed_out",
    "rolled_back",
    "verification_failed",
    "drift",
    "flagged",
)
HEADLINES: dict[IncidentKind, str] = {
    "gate_failed": "Gate failed",
    "rejected": "Rejected",
    "timed_out": "Approval timed out",
    "rolled_back": "Rolled back",
    "verification_failed": "Verification failed",
    "drift": "Drift",
    "flagged": "Digest flagged (corrupted)",
}

#: The same incident told again within this long is a retry, not news.
DEDUPE_WINDOW = dt.timedelta(hours=1)

#: A webhook receiver that does not answer within this is a failed delivery (retried next time).
WEBHOOK_TIMEOUT_S = 10.0

#: A claim to tell (:func:`claim`) that is neither told nor released after this long is dead: its
#: process crashed mid-telling, or could not release it. Far above one telling (an event and a
#: POST per webhook owner, each at most WEBHOOK_TIMEOUT_S), so a live telling is never taken over.
CLAIM_LEASE = dt.timedelta(minutes=2)

#: A metric transition's marker says "told" this long: past the next night, whose sweep finds the
#: same transition again when the one that told it died before saving the alert state. Not
#: forever: the alert state, if lost after a recovery, names the next crossing like the first,
#: and that one must be told (telling twice beats never telling).
METRIC_TOLD_WINDOW = dt.timedelta(days=7)

NAMESPACE = uuid.UUID("6f1d1c4e-3a55-4f0e-9a57-0d5b9f3f6c11")  # this product's incident ids


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


def _scope(s3: S3) -> str:
    """Which store: ids are also unique between pipelines sharing one Prefect server (whose event
    de-duplication would drop the second of two equal ids) or one webhook receiver."""
    return f"s3://{s3.bucket}/{s3.prefix}"


def message_id(s3: S3, incident: Incident, now: dt.datetime) -> str:
    """The same for every telling of one incident in one window: the webhook-id."""
    return f"msg_{event_id(s3, incident, now).hex}"


def event_id(s3: S3, incident: Incident, now: dt.datetime) -> uuid.UUID:
    """The same for every telling of one incident in one window: the event id."""
    return uuid.uuid5(NAMESPACE, f"{_scope(s3)}:{incident.key}:{window_start(now)}")


def marker_key(s3: S3, incident: Incident) -> str:
    name = hashlib.sha256(incident.key.encode()).hexdigest()[:32]
    return s3.key("notified", incident.service, f"{incident.kind}-{name}.json")


class Claim(BaseModel):
    """This process holds the right to tell: the marker it wrote, at that ETag."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    etag: str
    token: str


def _marker_body(state: Literal["telling", "told"], now: dt.datetime, token: str, owners: list[str]) -> bytes:
    return json.dumps({"state": state, "at": now.isoformat(), "token": token, "owners": owners}).encode()


def _holds(raw: bytes, now: dt.datetime, window: dt.timedelta | None, token: str) -> bool | None:
    """Whether a marker found stops this process from telling: True (someone told, or is
    telling), False (stale: take it over), None (it is this process's own claim)."""
    try:
        marker = json.loads(raw)
        state = marker.get("state", "told")  # markers written before claims were told ones
        at = dt.datetime.fromisoformat(marker.get("at") or marker["told_at"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return False  # an unreadable marker: telling twice beats never telling
    if marker.get("token") == token:
        return None
    if state == "telling":
        return now - at < CLAIM_LEASE
    return window is None or now - at < window


def claim(s3: S3, key: str, now: dt.datetime, window: dt.timedelta | None = DEDUPE_WINDOW) -> Claim | None:
    """Take the right to tell what ``key`` names, atomically; None when another process holds it.

    The marker is created with ``If-None-Match: *``: of any number of processes meeting the same
    incident at once, exactly one creates it. One found is taken over, with ``If-Match`` on the
    ETag just read (so again by exactly one), only when it says nothing current: told longer ago
    than ``window`` (None: never, a metric transition is told once for good), a claim older than
    ``CLAIM_LEASE`` (its process died while telling, or could not release it), or unreadable.
    A 412 can also answer botocore's retry of this process's own PUT that landed: the token in
    the marker tells it apart, so a lost response never turns into "someone else tells".
    """
    token = uuid.uuid4().hex
    body = _marker_body("telling", now, token, [])
    for _ in range(3):  # a marker released or taken over between our reads: look again
        try:
            etag = s3.put(key, body, create_only=True, content_type="application/json")
            return Claim(key=key, etag=etag, token=token)
        except PreconditionFailed:
            pass
        found = s3.get_with_etag(key)
        if found is None:
            continue  # released since our PUT: try to create it again
        raw, etag = found
        holds = _holds(raw, now, window, token)
        if holds is None:
            return Claim(key=key, etag=etag, token=token)
        if holds:
            return None
        try:
            etag = s3.put(key, body, if_match=etag, content_type="application/json")
            return Claim(key=key, etag=etag, token=token)
        except PreconditionFailed:
            continue  # someone else took it over, or our own retried PUT did: the next read says
    return None


def settle(s3: S3, held: Claim, now: dt.datetime, told: list[str]) -> None:
    """Mark the claim told (the window runs from now). Lost to a takeover past the lease: fine."""
    body = _marker_body("told", now, held.token, told)
    try:
        s3.put(held.key, body, if_match=held.etag, content_type="application/json")
    except PreconditionFailed:
        pass


def release(s3: S3, held: Claim) -> None:
    """Give the claim up after a failed telling, so the next retry tells; only if still ours.

    If this fails too (S3 is what failed, most likely), the claim stays and expires after
    ``CLAIM_LEASE``: the same incident met after that is told. Retries within the lease are not
    told, which is the price of never letting two processes tell at once; a lease, not the whole
    window, bounds it, so "telling twice beats never telling" is kept for every later meeting.
    """
    try:
        s3.delete(held.key, if_match=held.etag)
    except PreconditionFailed:
        pass  # taken over past the lease: no longer ours to delete


def webhook_body(incident: Incident, msg_id: str) -> bytes:
    """The generic JSON notification: a Standard Webhooks ``type`` and ``data`` envelope."""
    envelope = {"type": f"promotion.incident.{incident.kind}", "id": msg_id, "data": incident.payload()}
    return json.dumps(envelope, sort_keys=True).encode()


def send_webhook(owner: str, target: OwnerWebhook, incident: Incident, msg_id: str) -> None:
    """POST the signed incident; :class:`NotificationFailed` (never naming the secret) if not 2xx."""
    send_signed(owner, target, msg_id, webhook_body(incident, msg_id))


def metric_event_id(s3: S3, transition: Transition) -> uuid.UUID:
    """The same for every sweep that finds one transition: the event id (Prefect drops a repeat)."""
    return uuid.uuid5(NAMESPACE, f"{_scope(s3)}:metric:{transition.transition_id}")


def metric_message_id(s3: S3, transition: Transition) -> str:
    """The same for every telling of one metric transition: the webhook-id."""
    return f"msg_{metric_event_id(s3, transition).hex}"


def metric_marker_key(s3: S3, transition: Transition) -> str:
    name = hashlib.sha256(transition.transition_id.encode()).hexdigest()[:32]
    return s3.key("notified", transition.service, f"metric-{transition.kind}-{name}.json")


def metric_webhook_body(transition: Transition, msg_id: str) -> bytes:
    """A metric alert as the generic JSON notification: ``promotion.metric.crossed|recovered``."""
    r = transition.reading
    data = {
        "service": transition.service,
        "environment": transition.environment,
        "metric": r.metric,
        "value": r.value,
        "threshold": r.threshold,
        "direction": r.direction,
        "band": transition.band,
        "summary": r.describe(),
        "window_days": transition.window_days,
    }
    envelope = {"type": f"promotion.metric.{transition.kind}", "id": msg_id, "data": data}
    return json.dumps(envelope, sort_keys=True).encode()


def send_signed(owner: str, target: OwnerWebhook, msg_id: str, body: bytes) -> None:
    """POST ``body`` signed with Standard Webhooks; :class:`NotificationFailed` (never naming the
    secret) if not 2xx.

    The secret is read here, from the environment of the process that tells, and only the HMAC
    leaves it.
    """
    secret = os.environ.get(target.secret_env)
    if not secret:
        raise NotificationFailed(
            owner, f"the signing secret is not set: environment variable {target.secret_env}"
        )
    key = signing.standard_webhooks_key(secret)
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
