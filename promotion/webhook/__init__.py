"""The CI webhook receiver: a signed "build published" delivery starts the promotion pipeline.

``POST /hooks/{source}`` takes a delivery from one of three sources, each authenticated with its
own shared secret (``webhooks.sources`` in the pipeline file names where the secret lives: a
Prefect Secret block or an environment variable, never the file itself):

``github``
    ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>``; delivery id
    ``X-GitHub-Delivery`` (GitHub keeps it when a delivery is redelivered).
``gitlab``
    ``X-Gitlab-Token`` equal to the secret; delivery id ``Idempotency-Key`` (GitLab 17.4+, stable
    across GitLab's retries), else ``X-Gitlab-Event-UUID``.
``standard``
    Standard Webhooks: ``webhook-id``, ``webhook-timestamp`` (at most 5 minutes off, either way)
    and ``webhook-signature: v1,<base64>`` (a space-separated list; one match is enough), HMAC-SHA256
    of ``id.timestamp.body`` keyed with the base64-decoded secret ``whsec_<base64>``.

The body is the strict *build published* event (:class:`BuildPublished`), or a CI system's own
event that carries the service and digest in a documented place:

GitHub ``workflow_run`` (header ``X-GitHub-Event: workflow_run``)
    The run's ``display_title``, set with ``run-name:`` in the workflow to
    ``promote <service> sha256:<64 hex>`` (optionally followed by `` to <environment>``). It is the
    only value in the payload a workflow controls; ``run-name`` may use the ``github`` and
    ``inputs`` contexts only, so the digest must be known when the run starts: typically a
    ``workflow_dispatch`` workflow with ``service``/``digest`` inputs that the build dispatches
    after ``promote publish``. Runs of forks are ignored.
GitLab Pipeline Hook (``object_kind: "pipeline"``)
    Pipeline variables ``PROMOTION_SERVICE``, ``PROMOTION_DIGEST`` and optional ``PROMOTION_TO``,
    which GitLab lists in ``object_attributes.variables``. GitLab lists only variables given when
    the pipeline was created (trigger token, API, manual run, schedule), not ``.gitlab-ci.yml``
    variables, so the build triggers a pipeline with those variables after ``promote publish``.

Only successful runs/pipelines promote; others (and events that are not used, like GitHub's
``ping``) are answered ``200 {"ignored": "<why>"}``.

Answers: unknown or unconfigured source 404; body over 1 MiB 413; missing or bad signature, or a
stale timestamp, 401; malformed JSON, a schema error, an unknown service or environment, or a digest
never published 422; a delivery id reused with different content 409; success ``202
{"flow_run_id", "flow_run_url"}``. Errors are ``{"error": "<Class>", "detail": "<how to fix it>"}``.
The Prefect API or S3 being unreachable is the receiver's problem, not the sender's: 503. Any other
error is one nobody decided an answer for: 500, logged (the statuses are mapped once, in
:data:`STATUS_BY_ERROR`; the error classes are in :mod:`promotion.errors`).

Each delivery creates at most one flow run, also when duplicates arrive concurrently: the flow run
is created with the idempotency key ``{source}:{deployment}:{delivery id}`` and Prefect returns the
existing run for a key it has seen (keys are unique per flow, so the key names the deployment).

Secrets and signature headers are never logged or echoed. Importing this module does not import
Prefect, boto3 or uvicorn.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import json
import logging
import os
import re
import socket
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from promotion import signing
from promotion.config import Name, Pipeline, WebhookSource
from promotion.digest import Digest
from promotion.errors import (
    ArtifactMismatch,
    ArtifactNotFound,
    BodyTimeout,
    ConfigError,
    DeliveryConflict,
    DeliveryIdInvalid,
    IncompleteBody,
    InfrastructureError,
    InvalidContentLength,
    InvalidDigest,
    PayloadInvalid,
    PayloadTooLarge,
    PromotionError,
    PromotionTargetMissing,
    ReceiverUnavailable,
    SignatureInvalid,
    SignatureMissing,
    SigningSecretInvalid,
    SourceNotServed,
    StaleTimestamp,
    StoreError,
    UnknownEnvironment,
    UnknownService,
    WebhookError,
)

if TYPE_CHECKING:
    from uuid import UUID

    from prefect.client.orchestration import PrefectClient

    from promotion.models import ArtifactRecord
    from promotion.store import ArtifactStore

logger = logging.getLogger("promotion.webhook")

#: The sources ``/hooks/{source}`` knows (each served only when configured with a secret).
SOURCES = ("github", "gitlab", "standard")

#: Largest body accepted. CI events are a few KiB; GitHub caps its payloads at 25 MB, but a
#: workflow_run delivery is ~20 KiB, so 1 MiB leaves room without letting a client fill memory.
MAX_BODY_BYTES = 1024 * 1024
#: Standard Webhooks' recommended tolerance for webhook-timestamp, both ways.
TIMESTAMP_TOLERANCE_S = 5 * 60
#: A client that trickles its body slower than this is dropped (408) instead of holding a slot.
BODY_TIMEOUT_S = 10.0
#: Delivery ids go into Prefect's idempotency key; real ones are UUIDs or short message ids.
MAX_DELIVERY_ID = 200
#: How long a secret read from a Prefect Secret block is reused before it is read again (rotation).
SECRET_TTL_S = 60.0
DEFAULT_PORT = 8787
#: Flow-run creations in flight per receiver process (see :class:`PrefectTrigger`); the
#: environment variable overrides it.
DEFAULT_MAX_IN_FLIGHT = 2
MAX_IN_FLIGHT_ENV = "PROMOTION_WEBHOOK_MAX_IN_FLIGHT"

_DELIVERY_ID_RE = re.compile(rf"[\x21-\x7e]{{1,{MAX_DELIVERY_ID}}}")
_CONTENT_LENGTH_RE = re.compile(r"[0-9]{1,19}")
_TIMESTAMP_RE = re.compile(r"[0-9]{1,15}")
_NAME = r"[a-z0-9][a-z0-9_-]{0,62}"
_NAME_RE = re.compile(_NAME)
#: The documented ``run-name`` of a GitHub workflow run that promotes.
GITHUB_TITLE_RE = re.compile(
    rf"promote (?P<service>{_NAME}) (?P<digest>sha256:[0-9a-f]{{64}})(?: to (?P<to>{_NAME}))?"
)
GITLAB_SERVICE_VAR = "PROMOTION_SERVICE"
GITLAB_DIGEST_VAR = "PROMOTION_DIGEST"
GITLAB_TO_VAR = "PROMOTION_TO"


# --- errors: their HTTP statuses, mapped once ---------------------------------------------------

#: The answer to each error a delivery can raise (the classes are in promotion.errors). The first
#: entry the error is an instance of wins, so a subclass comes before its base class.
STATUS_BY_ERROR: tuple[tuple[type[PromotionError], int], ...] = (
    (SourceNotServed, 404),
    (PayloadTooLarge, 413),
    (BodyTimeout, 408),
    (SignatureMissing, 401),
    (SignatureInvalid, 401),
    (StaleTimestamp, 401),
    (DeliveryConflict, 409),
    (InvalidContentLength, 400),
    (IncompleteBody, 400),
    (DeliveryIdInvalid, 400),
    # The event names something that does not exist, or is malformed: the sender must fix it.
    (PayloadInvalid, 422),
    (UnknownService, 422),
    (UnknownEnvironment, 422),
    (ArtifactNotFound, 422),
    (InvalidDigest, 422),
    (WebhookError, 400),
    # The receiver's own problem (Prefect or S3 unreachable, S3 failing): the sender may retry.
    (InfrastructureError, 503),
    (StoreError, 503),
)


def status_for(exc: PromotionError) -> int:
    """The HTTP status for an error raised while handling a delivery: 500 for one not in the table.

    An error the table does not name is a bug or a case nobody decided on, not the sender's
    fault, so it is not answered as a 4xx the sender would give up on (the handler logs it).
    """
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    return 500


def _error(status: int, name: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": name, "detail": detail}, status_code=status)


# --- bodies ---------------------------------------------------------------------------------------


class BuildPublished(BaseModel):
    """The strict event a CI job sends after ``promote publish``: promote this digest."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="BuildPublished")

    service: Name = Field(description="a service declared in the pipeline file")
    digest: Digest = Field(
        description="sha256:<64 lowercase hex> of a published artifact",
        json_schema_extra={"pattern": "^sha256:[0-9a-f]{64}$"},
    )
    version: str | None = Field(
        default=None, max_length=128, description="must equal the published record's version if given"
    )
    commit: str | None = Field(
        default=None, max_length=128, description="must equal the published record's commit if given"
    )
    build_url: str | None = Field(
        default=None, max_length=2048, description="must equal the published record's build URL if given"
    )
    requested_by: str | None = Field(
        default=None, min_length=1, max_length=128, description="who asks for the promotion"
    )
    to: Name | None = Field(
        default=None, description="stop after this environment (a declared one); default: the last"
    )


class _Loose(BaseModel):
    # GitHub and GitLab add fields to their payloads without notice: take the fields we use and
    # ignore the rest, unlike our own event, which forbids unknown keys.
    model_config = ConfigDict(extra="ignore", frozen=True)


class _GitHubAccount(_Loose):
    login: str


class _GitHubRepository(_Loose):
    full_name: str


class _GitHubRun(_Loose):
    id: int
    status: str
    conclusion: str | None = None
    display_title: str = ""
    head_repository: _GitHubRepository | None = None
    repository: _GitHubRepository | None = None
    actor: _GitHubAccount | None = None
    triggering_actor: _GitHubAccount | None = None


class GitHubWorkflowRun(_Loose):
    """The parts of GitHub's ``workflow_run`` event the receiver reads."""

    action: str
    workflow_run: _GitHubRun


class _GitLabVariable(_Loose):
    key: str
    value: str | None = None


class _GitLabAttributes(_Loose):
    id: int
    status: str
    variables: list[_GitLabVariable] | None = None


class _GitLabUser(_Loose):
    username: str


class GitLabPipeline(_Loose):
    """The parts of GitLab's Pipeline Hook the receiver reads."""

    object_kind: Literal["pipeline"]
    object_attributes: _GitLabAttributes
    user: _GitLabUser | None = None


class Accepted(BaseModel):
    """202: the flow run that promotes the digest (the same run for a repeated delivery)."""

    flow_run_id: str
    flow_run_url: str


class Ignored(BaseModel):
    """200: an authentic delivery that promotes nothing, and why."""

    ignored: str


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer: the error class and how to fix the request."""

    error: str
    detail: str


@dataclass(frozen=True)
class Intent:
    """What an authentic delivery asks for, before it is checked against the pipeline and store."""

    service: str
    digest: str
    to: str | None = None
    requested_by: str | None = None
    version: str | None = None
    commit: str | None = None
    build_url: str | None = None


def _describe(exc: ValidationError, allowed: tuple[str, ...] = ()) -> str:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(body)"
        if err["type"] == "extra_forbidden":
            msg = "unknown field" + (f"; allowed fields: {', '.join(allowed)}" if allowed else "")
        elif err["type"] == "missing":
            msg = "required"
        else:
            msg = err["msg"]
            inp = err.get("input")
            if isinstance(inp, str | int | float | bool) and "got" not in msg:
                shown = repr(inp) if len(repr(inp)) <= 80 else repr(inp)[:77] + "..."
                msg += f" (got {shown})"
        problems.append(f"{loc}: {msg}")
    return "; ".join(problems)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            # json.loads would keep the last one silently; the signed bytes must mean one thing.
            raise PayloadInvalid(f"duplicate key {key!r} in a JSON object; send each field once")
        out[key] = value
    return out


def parse_json(body: bytes) -> Any:
    """The body as JSON; :class:`PayloadInvalid` says where it is broken."""
    try:
        return json.loads(body, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise PayloadInvalid(
            f"the body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}; "
            "send a JSON object with Content-Type: application/json"
        ) from None
    except UnicodeDecodeError:
        raise PayloadInvalid("the body is not UTF-8 text; send UTF-8 encoded JSON") from None
    except (ValueError, RecursionError) as exc:
        # ValueError: e.g. an integer with more digits than Python converts; RecursionError: nesting
        raise PayloadInvalid(
            f"the body is not usable JSON ({type(exc).__name__}); send a flat object"
        ) from None


_STRICT_FIELDS = tuple(BuildPublished.model_fields)


def parse_build_published(data: Any) -> Intent:
    """The strict event, or :class:`PayloadInvalid` naming the field."""
    if not isinstance(data, dict):
        raise PayloadInvalid(
            f"(body): expected a JSON object with {', '.join(_STRICT_FIELDS)}, got {type(data).__name__}"
        )
    try:
        ev = BuildPublished.model_validate(data)
    except ValidationError as exc:
        raise PayloadInvalid(_describe(exc, _STRICT_FIELDS)) from None
    return Intent(
        service=ev.service,
        digest=str(ev.digest),
        to=ev.to,
        requested_by=ev.requested_by,
        version=ev.version,
        commit=ev.commit,
        build_url=ev.build_url,
    )


def parse_github_workflow_run(data: Any) -> Intent | Ignored:
    """GitHub's ``workflow_run``: the digest is in ``workflow_run.display_title`` (``run-name:``)."""
    if not isinstance(data, dict):
        raise PayloadInvalid("(body): a workflow_run event is a JSON object")
    try:
        ev = GitHubWorkflowRun.model_validate(data)
    except ValidationError as exc:
        raise PayloadInvalid(f"not a GitHub workflow_run event: {_describe(exc)}") from None
    run = ev.workflow_run
    if ev.action != "completed" or run.status != "completed":
        return Ignored(ignored=f"workflow run {run.id} is {run.status}: only completed runs promote")
    if run.conclusion != "success":
        return Ignored(
            ignored=f"workflow run {run.id} concluded {run.conclusion}: only successful runs promote"
        )
    if run.head_repository and run.repository and run.head_repository.full_name != run.repository.full_name:
        # A pull request from a fork runs the fork's workflow file, so its author writes run-name.
        return Ignored(
            ignored=f"workflow run {run.id} ran on {run.head_repository.full_name}, a fork of "
            f"{run.repository.full_name}: runs of forks never promote"
        )
    title = run.display_title.strip()
    m = GITHUB_TITLE_RE.fullmatch(title)
    if m is None:
        shown = repr(title) if len(title) <= 100 else repr(title[:97] + "...")
        raise PromotionTargetMissing(
            f"workflow_run.display_title is {shown}; to promote, set the workflow's run-name to "
            "'promote <service> sha256:<64 hex>' (optionally followed by ' to <environment>'), e.g. "
            "run-name: promote ${{ inputs.service }} ${{ inputs.digest }}"
        )
    actor = run.triggering_actor or run.actor
    return Intent(
        service=m["service"],
        digest=m["digest"],
        to=m["to"],
        requested_by=actor.login if actor else None,
    )


def parse_gitlab_pipeline(data: dict[str, Any]) -> Intent | Ignored:
    """GitLab's Pipeline Hook: the digest is in the pipeline variables ``PROMOTION_*``."""
    try:
        ev = GitLabPipeline.model_validate(data)
    except ValidationError as exc:
        raise PayloadInvalid(f"not a GitLab Pipeline Hook: {_describe(exc)}") from None
    attrs = ev.object_attributes
    if attrs.status != "success":
        return Ignored(ignored=f"pipeline {attrs.id} is {attrs.status}: only successful pipelines promote")
    found: dict[str, str] = {}
    for var in attrs.variables or []:
        if var.key in (GITLAB_SERVICE_VAR, GITLAB_DIGEST_VAR, GITLAB_TO_VAR):
            if var.key in found:
                raise PayloadInvalid(f"object_attributes.variables: {var.key} is given twice; give it once")
            found[var.key] = (var.value or "").strip()
    missing = [k for k in (GITLAB_SERVICE_VAR, GITLAB_DIGEST_VAR) if not found.get(k)]
    if missing:
        raise PromotionTargetMissing(
            f"pipeline {attrs.id} has no {' and no '.join(missing)} in object_attributes.variables; "
            f"to promote, create the pipeline with the variables {GITLAB_SERVICE_VAR}=<service> and "
            f"{GITLAB_DIGEST_VAR}=sha256:<64 hex> (and optionally {GITLAB_TO_VAR}=<environment>), e.g. "
            f"through a pipeline trigger: --form variables[{GITLAB_DIGEST_VAR}]=sha256:..."
        )
    try:
        digest = Digest(found[GITLAB_DIGEST_VAR])
    except PromotionError as exc:
        raise PayloadInvalid(f"object_attributes.variables.{GITLAB_DIGEST_VAR}: {exc}") from None
    for key in (GITLAB_SERVICE_VAR, GITLAB_TO_VAR):
        value = found.get(key)
        if value and not _NAME_RE.fullmatch(value):
            shown = repr(value) if len(value) <= 70 else repr(value[:67] + "...")
            raise PayloadInvalid(
                f"object_attributes.variables.{key}: {shown} is not a service or environment name "
                "(lowercase letters, digits, '-' and '_')"
            )
    return Intent(
        service=found[GITLAB_SERVICE_VAR],
        digest=str(digest),
        to=found.get(GITLAB_TO_VAR) or None,
        requested_by=ev.user.username if ev.user else None,
    )


def interpret(source: str, headers: Mapping[str, str], body: bytes) -> Intent | Ignored:
    """What an authentic delivery asks for: a promotion, or a reason to ignore it."""
    if source == "github":
        event = headers.get("x-github-event")
        if event == "ping":
            return Ignored(ignored="ping: GitHub checks the webhook; nothing to promote")
        if event == "workflow_run":
            return parse_github_workflow_run(parse_json(body))
        if event is not None:
            return Ignored(
                ignored=f"GitHub event {event[:40]!r} is not used: subscribe the webhook to "
                "'Workflow runs' only, or send the build-published event without X-GitHub-Event"
            )
        return parse_build_published(parse_json(body))
    data = parse_json(body)
    if source == "gitlab" and isinstance(data, dict) and "object_kind" in data:
        kind = data["object_kind"]
        if kind == "pipeline":
            return parse_gitlab_pipeline(data)
        shown = repr(kind)[:40]
        return Ignored(
            ignored=f"GitLab {shown} events are not used: enable only 'Pipeline events' on the webhook"
        )
    return parse_build_published(data)


# --- signatures -----------------------------------------------------------------------------------


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


# --- secrets --------------------------------------------------------------------------------------


class SecretResolver(Protocol):
    """Returns a source's secret, or None when it has none available. Called in a worker thread.

    A resolver may also have ``peek(source)``, answering without blocking (or :data:`NOT_CACHED`);
    the receiver then skips the worker thread, which costs as much as the rest of a request.
    """

    def __call__(self, source: WebhookSource) -> SecretStr | None: ...


class _NotCached(enum.Enum):
    NOT_CACHED = "not cached"


NOT_CACHED = _NotCached.NOT_CACHED


class DefaultSecrets:
    """Secrets from ``secret_env`` (read on every call) or ``secret_block`` (cached ``ttl`` seconds).

    A missing variable or block means the source is not served; a Prefect API that cannot be
    reached raises :class:`ReceiverUnavailable`.
    """

    def __init__(self, ttl: float = SECRET_TTL_S) -> None:
        self.ttl = ttl
        self._cache: dict[str, tuple[float, SecretStr]] = {}
        self._lock = threading.Lock()

    def peek(self, source: WebhookSource) -> SecretStr | None | _NotCached:
        """The secret if it can be had without blocking: a variable, or a block read recently."""
        if source.secret_env is not None:
            value = os.environ.get(source.secret_env)
            if not value:
                logger.warning("webhook secret variable %s is not set: source not served", source.secret_env)
                return None
            return SecretStr(value)
        assert source.secret_block is not None
        with self._lock:
            hit = self._cache.get(source.secret_block)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        return NOT_CACHED

    def __call__(self, source: WebhookSource) -> SecretStr | None:
        known = self.peek(source)
        if known is not NOT_CACHED:
            return known
        assert source.secret_block is not None
        name = source.secret_block
        secret = self._load_block(name)
        if secret is not None:
            with self._lock:
                self._cache[name] = (time.monotonic() + self.ttl, secret)
        return secret

    @staticmethod
    def _load_block(name: str) -> SecretStr | None:
        from prefect.blocks.system import Secret

        try:
            # Called in a worker thread without an event loop: load() runs synchronously.
            block: Secret[Any] = Secret.load(name)  # type: ignore[assignment]
        except ValueError:
            # Prefect raises ValueError for a block name that does not exist.
            logger.warning("webhook secret block %r does not exist: source not served", name)
            return None
        except Exception as exc:
            logger.error("cannot read webhook secret block %r: %s", name, type(exc).__name__)
            raise ReceiverUnavailable(
                "the receiver cannot read its secret from Prefect right now; retry later"
            ) from None
        value = block.get()
        if not isinstance(value, str) or not value:
            logger.warning("webhook secret block %r holds no non-empty string: source not served", name)
            return None
        return SecretStr(value)


# --- flow runs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRequest:
    """One authentic, validated delivery that asks for a promotion."""

    source: str
    delivery_id: str
    service: str
    digest: Digest
    to: str | None
    requested_by: str | None

    @property
    def parameters(self) -> dict[str, Any]:
        """The flow run's parameters (the deployment supplies the rest, e.g. ``config``)."""
        return {
            "service": self.service,
            "digest": str(self.digest),
            "to": self.to,
            "requested_by": self.requested_by,
        }

    def idempotency_key(self, deployment: str) -> str:
        """Unique per flow in Prefect, so it names the deployment as well as the delivery."""
        return f"{self.source}:{deployment}:{self.delivery_id}"


@dataclass(frozen=True)
class TriggeredRun:
    flow_run_id: str
    flow_run_url: str


class Trigger(Protocol):
    """Creates (or finds, for a repeated delivery) the flow run for a request."""

    async def __call__(self, request: RunRequest) -> TriggeredRun: ...


def flow_run_url(flow_run_id: str) -> str:
    """The run's page in the Prefect UI (from ``PREFECT_UI_URL``, else from ``PREFECT_API_URL``)."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    base = settings.ui_url
    if not base and settings.api.url:
        base = settings.api.url.rstrip("/").removesuffix("/api")
    from promotion.prefect_api import without_credentials

    # The answer goes back to CI (and into its logs): never with the API's credential in it.
    return without_credentials(f"{(base or '').rstrip('/')}/runs/flow-run/{flow_run_id}")


class _LoopClient:
    """The Prefect client of one event loop (an httpx client cannot cross loops)."""

    def __init__(self, max_in_flight: int) -> None:
        self.lock = asyncio.Lock()
        self.gate = asyncio.Semaphore(max_in_flight)
        self.client: PrefectClient | None = None


class PrefectTrigger:
    """Creates the run from the deployment ``flow-name/deployment-name`` through the Prefect API.

    One Prefect client per event loop is kept open (a new client per delivery would open a new
    connection each time); :meth:`aclose` closes it, and the app does so when it shuts down.

    At most ``max_in_flight`` flow-run creations are sent at once from this process (default 2,
    or ``$PROMOTION_WEBHOOK_MAX_IN_FLIGHT``). A Prefect server on SQLite serializes writes and
    answers 503 when they collide, also with its own background writes; Prefect's client then
    waits 2 s, 4 s, ... before retrying. Measured here (2 CPUs, 20 deliveries/s for 20 s, SQLite):
    p50 latency 27 s with 1 in flight (each 503 stalls the queue), 5.2 s with 2, 6.4 s with 4,
    9.3 s with 8; a burst of 10 at once can fall to ~1.4 runs/s. On PostgreSQL, raise it.
    Duplicates across processes are still caught by the idempotency key.
    """

    def __init__(self, deployment: str, *, max_in_flight: int | None = None) -> None:
        if max_in_flight is None:
            # Imported here: this edit leaves the module's import block to its restructuring.
            from promotion.settings import settings

            max_in_flight = settings().webhook_max_in_flight  # bad values raise ConfigError there
        if max_in_flight < 1:
            raise ConfigError(MAX_IN_FLIGHT_ENV, ["must be a whole number of at least 1"])
        self.deployment = deployment
        self.max_in_flight = max_in_flight
        self._deployment_id: UUID | None = None
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClient] = (
            weakref.WeakKeyDictionary()
        )

    async def _client(self) -> PrefectClient:
        from prefect.client.orchestration import get_client

        state = self._state()
        async with state.lock:
            if state.client is None:
                client = get_client()
                await client.__aenter__()
                state.client = client
            return state.client

    def _state(self) -> _LoopClient:
        return self._loops.setdefault(asyncio.get_running_loop(), _LoopClient(self.max_in_flight))

    async def aclose(self) -> None:
        """Close this event loop's client."""
        state = self._loops.pop(asyncio.get_running_loop(), None)
        if state is not None and state.client is not None:
            await state.client.__aexit__(None, None, None)

    async def __call__(self, request: RunRequest) -> TriggeredRun:
        from prefect.exceptions import ObjectNotFound

        key = request.idempotency_key(self.deployment)
        try:
            client = await self._client()
            for attempt in (1, 2):
                if self._deployment_id is None:
                    try:
                        self._deployment_id = (await client.read_deployment_by_name(self.deployment)).id
                    except ObjectNotFound:
                        logger.error("webhook: deployment %s does not exist", self.deployment)
                        raise ReceiverUnavailable(
                            f"the deployment {self.deployment} does not exist on the Prefect server; "
                            "the operator must deploy it (promote serve, or prefect deploy)"
                        ) from None
                try:
                    async with self._state().gate:
                        run = await client.create_flow_run_from_deployment(
                            self._deployment_id,
                            parameters=request.parameters,
                            idempotency_key=key,
                            tags=["webhook", f"webhook:{request.source}"],
                        )
                    break
                except ObjectNotFound:
                    # The deployment was re-created under a new id since it was looked up.
                    self._deployment_id = None
                    if attempt == 2:
                        raise
        except PromotionError:
            raise
        except Exception as exc:
            logger.error("webhook: creating the flow run failed: %s", _describe_failure(exc))
            raise ReceiverUnavailable(
                "the Prefect API could not create the flow run right now; retry the delivery later"
            ) from None
        stored = {k: run.parameters.get(k) for k in request.parameters}
        if stored != request.parameters:
            # Prefect returns the first run for a key it has seen, whatever the parameters.
            raise DeliveryConflict(
                f"delivery {request.delivery_id} from {request.source} already started flow run "
                f"{run.id} with other parameters ({stored['service']} {stored['digest']} to "
                f"{stored['to'] or 'the end'}); send a new delivery id for a new promotion"
            )
        return TriggeredRun(flow_run_id=str(run.id), flow_run_url=flow_run_url(str(run.id)))


def _describe_failure(exc: BaseException) -> str:
    # The status code and class only: messages of HTTP errors can carry URLs with credentials.
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return type(exc).__name__ + (f" (HTTP {status})" if status else "")


# --- the app --------------------------------------------------------------------------------------

_REQUEST_BODY_DOC: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    BuildPublished.model_json_schema(),
                    {
                        "title": "GitHubWorkflowRun",
                        "type": "object",
                        "description": "GitHub workflow_run event (header X-GitHub-Event: workflow_run, "
                        "source github). Promotes when action and status are 'completed', conclusion "
                        "is 'success' and workflow_run.display_title (run-name) is "
                        "'promote <service> sha256:<64 hex>[ to <environment>]'.",
                    },
                    {
                        "title": "GitLabPipelineHook",
                        "type": "object",
                        "description": "GitLab Pipeline Hook (object_kind 'pipeline', source gitlab). "
                        "Promotes when object_attributes.status is 'success'; service and digest are "
                        "the pipeline variables PROMOTION_SERVICE and PROMOTION_DIGEST (optional "
                        "PROMOTION_TO) in object_attributes.variables.",
                    },
                ]
            }
        }
    },
}

_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": Ignored, "description": "authentic, but nothing to promote"},
    400: {"model": ErrorBody, "description": "missing delivery id or malformed Content-Length"},
    401: {"model": ErrorBody, "description": "missing or bad signature, or stale timestamp"},
    404: {"model": ErrorBody, "description": "unknown source, or one without a secret"},
    408: {"model": ErrorBody, "description": "body too slow"},
    409: {"model": ErrorBody, "description": "delivery id reused with other content"},
    413: {"model": ErrorBody, "description": f"body over {MAX_BODY_BYTES} bytes"},
    422: {"model": ErrorBody, "description": "bad JSON or schema, unknown service, unpublished digest"},
    503: {"model": ErrorBody, "description": "Prefect or S3 unreachable: retry later"},
}


async def _read_body(request: Request) -> bytes:
    length = request.headers.get("content-length")
    if length is not None:
        if not _CONTENT_LENGTH_RE.fullmatch(length.strip()):
            raise InvalidContentLength("Content-Length must be a decimal number of bytes")
        if int(length) > MAX_BODY_BYTES:
            raise PayloadTooLarge(MAX_BODY_BYTES)
    # Count what actually arrives too: Content-Length may be absent (chunked) or wrong.
    buf = bytearray()
    try:
        # asyncio's timeout, not anyio's fail_after: a third of the cost on this hot path
        async with asyncio.timeout(BODY_TIMEOUT_S):
            async for chunk in request.stream():
                buf += chunk
                if len(buf) > MAX_BODY_BYTES:
                    raise PayloadTooLarge(MAX_BODY_BYTES)
    except TimeoutError:
        raise BodyTimeout(BODY_TIMEOUT_S) from None
    except ClientDisconnect:
        raise IncompleteBody("the client disconnected before the body was complete; send it again") from None
    return bytes(buf)


class _Receiver:
    def __init__(
        self,
        pipeline: Pipeline,
        secrets: SecretResolver,
        trigger: Trigger,
        clock: Callable[[], float],
    ) -> None:
        self.pipeline = pipeline
        self.secrets = secrets
        self.trigger = trigger
        self.clock = clock
        self._store: ArtifactStore | None = None
        self._store_lock = threading.Lock()

    def store(self) -> ArtifactStore:
        # Created on first use: building the S3 client costs ~100 ms and imports boto3.
        with self._store_lock:
            if self._store is None:
                from promotion.store import ArtifactStore

                self._store = ArtifactStore(self.pipeline)
            return self._store

    def find_record(self, service: str, digest: Digest) -> ArtifactRecord | None:
        return self.store().find_record(service, digest)

    async def secret_for(self, source: str) -> SecretStr:
        configured = None
        for name, cfg in self.pipeline.webhooks.sources.items():
            if name == source:
                configured = cfg
        if configured is None:
            raise SourceNotServed(
                f"this receiver serves no source {source[:40]!r}; sources are github, gitlab and "
                "standard, each configured under webhooks.sources in the pipeline file"
            )
        unavailable = SourceNotServed(
            f"source {source!r} is configured but its secret is not available on the receiver; "
            "the operator must provide it (the receiver's log says why)"
        )
        peek: Callable[[WebhookSource], SecretStr | None | _NotCached] | None = getattr(
            self.secrets, "peek", None
        )
        secret = peek(configured) if peek is not None else NOT_CACHED
        if secret is NOT_CACHED:
            secret = await run_in_threadpool(self.secrets, configured)
        if secret is None or not secret.get_secret_value():
            raise unavailable
        if source == "standard":
            try:
                signing.standard_webhooks_key(secret.get_secret_value())
            except SigningSecretInvalid as exc:
                logger.error("webhook source standard: %s; fix the secret on the receiver", exc)
                raise unavailable from None
        return secret

    async def handle(self, source: str, request: Request) -> JSONResponse:
        secret = await self.secret_for(source)
        body = await _read_body(request)
        delivery = authenticate(source, secret, request.headers, body, self.clock())
        intent = interpret(source, request.headers, body)
        if isinstance(intent, Ignored):
            logger.info("webhook %s delivery %s ignored: %s", source, delivery, intent.ignored)
            return JSONResponse(intent.model_dump(), status_code=200)
        run_request = await self.check(source, delivery, intent)
        run = await self.trigger(run_request)
        logger.info(
            "webhook %s delivery %s: %s %s -> flow run %s",
            source,
            delivery,
            run_request.service,
            run_request.digest.short,
            run.flow_run_id,
        )
        return JSONResponse(
            Accepted(flow_run_id=run.flow_run_id, flow_run_url=run.flow_run_url).model_dump(),
            status_code=202,
        )

    async def check(self, source: str, delivery: str, intent: Intent) -> RunRequest:
        """The intent against the pipeline file and the store: declared names, a published digest."""
        self.pipeline.service(intent.service)  # UnknownService: 422
        if intent.to is not None:
            self.pipeline.environment(intent.to)
        digest = Digest(intent.digest)
        try:
            record = await run_in_threadpool(self.find_record, intent.service, digest)
        except StoreError as exc:
            logger.error("webhook: artifact store lookup failed: %s", type(exc).__name__)
            raise ReceiverUnavailable("the artifact store cannot be reached right now; retry later") from None
        if record is None:
            raise ArtifactNotFound(str(digest), intent.service)
        claims = {
            "version": (intent.version, record.version),
            "commit": (intent.commit, record.provenance.commit),
            "build_url": (intent.build_url, record.provenance.build_url),
        }
        differ = [
            f"{k}: event says {said!r}, record says {stored!r}"
            for k, (said, stored) in claims.items()
            if said is not None and said != stored
        ]
        if differ:
            raise ArtifactMismatch(
                f"{digest} of {intent.service} was published with other metadata ({'; '.join(differ)}); "
                "send the values given to promote publish, or leave them out"
            )
        return RunRequest(
            source=source,
            delivery_id=delivery,
            service=intent.service,
            digest=digest,
            to=intent.to,
            requested_by=intent.requested_by,
        )


def create_app(
    pipeline: Pipeline,
    *,
    secrets: SecretResolver | None = None,
    trigger: Trigger | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """The receiver as an ASGI app.

    ``secrets`` defaults to :class:`DefaultSecrets`, ``trigger`` to a :class:`PrefectTrigger` for
    ``pipeline.webhooks.deployment``; ``clock`` (Unix seconds) is what Standard Webhooks
    timestamps are compared with.
    """
    trigger = trigger or PrefectTrigger(pipeline.webhooks.deployment)
    receiver = _Receiver(pipeline, secrets or DefaultSecrets(), trigger, clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logger.info(
            "webhook receiver ready: sources %s; deployment %s",
            ", ".join(sorted(pipeline.webhooks.sources)) or "none",
            pipeline.webhooks.deployment,
        )
        yield
        aclose = getattr(trigger, "aclose", None)
        if aclose is not None:
            await aclose()

    app = FastAPI(
        title="prefect-promotion webhook receiver",
        version="1",
        description=__doc__,
        lifespan=lifespan,
    )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        name = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        hint = "use POST /hooks/{github|gitlab|standard}, GET /healthz or GET /openapi.json"
        return _error(exc.status_code, name, f"{exc.detail}: {hint}")

    @app.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(
        "/hooks/{source}",
        status_code=202,
        response_model=Accepted,
        responses=_ERROR_RESPONSES,
        openapi_extra={"requestBody": _REQUEST_BODY_DOC},
        summary="Receive a signed CI delivery and start the promotion pipeline",
    )
    async def hook(source: str, request: Request) -> JSONResponse:
        try:
            return await receiver.handle(source, request)
        except PromotionError as exc:
            status = status_for(exc)
            (logger.error if status >= 500 else logger.warning)(
                "webhook %r: %d %s: %s", source[:40], status, type(exc).__name__, exc
            )
            return _error(status, type(exc).__name__, str(exc))

    return app


# --- serving --------------------------------------------------------------------------------------

#: uvicorn settings shared by :func:`serve`, :func:`serve_in_thread` and the benchmark.
UVICORN_SETTINGS: dict[str, Any] = {
    "proxy_headers": False,
    "server_header": False,
    "timeout_keep_alive": 5,
}


def serve(pipeline: Pipeline, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
    """Run the receiver with uvicorn until interrupted (``promote webhook serve``)."""
    import copy

    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    # uvicorn configures only its own loggers; without this, the receiver's INFO lines (each
    # delivery accepted or ignored) would never reach the operator.
    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config["loggers"][logger.name] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    uvicorn.run(
        create_app(pipeline),
        host=host,
        port=port,
        log_level="info",
        log_config=log_config,
        **UVICORN_SETTINGS,
    )


@contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a background thread; yields the base URL (``port=0``: free port).

    The thread runs in a copy of the caller's context, so Prefect settings set by the caller
    (e.g. a test harness) apply to the app.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, log_level="warning", **UVICORN_SETTINGS)
    server = uvicorn.Server(config)
    ctx = contextvars.copy_context()
    thread = threading.Thread(
        target=ctx.run, args=(server.run,), kwargs={"sockets": [sock]}, daemon=True, name="webhook-uvicorn"
    )
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the webhook server did not start")
            time.sleep(0.01)  # waiting for uvicorn's started flag, with a deadline
        yield f"http://{host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
