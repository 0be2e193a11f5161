"""The ASGI app that answers ``POST /hooks/{source}``, and the HTTP status of each error."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import SecretStr
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from promotion import signing
from promotion.config import Pipeline, WebhookSource
from promotion.digest import Digest
from promotion.errors import (
    ArtifactMismatch,
    ArtifactNotFound,
    BodyTimeout,
    DeliveryConflict,
    DeliveryIdInvalid,
    IncompleteBody,
    InfrastructureError,
    InvalidContentLength,
    InvalidDigest,
    PayloadInvalid,
    PayloadTooLarge,
    PromotionError,
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
from promotion.webhook.events import Accepted, BuildPublished, ErrorBody, Ignored, Intent, interpret
from promotion.webhook.secrets import NOT_CACHED, DefaultSecrets, SecretResolver, _NotCached
from promotion.webhook.signatures import authenticate
from promotion.webhook.trigger import PrefectTrigger, RunRequest, Trigger

if TYPE_CHECKING:
    from promotion.models import ArtifactRecord
    from promotion.store import ArtifactStore


# Every part of the receiver logs under the one name operators filter on (and the package's own).
logger = logging.getLogger("promotion.webhook")

#: The sources ``/hooks/{source}`` knows (each served only when configured with a secret).
SOURCES = ("github", "gitlab", "standard")

#: Largest body accepted. CI events are a few KiB; GitHub caps its payloads at 25 MB, but a
#: workflow_run delivery is ~20 KiB, so 1 MiB leaves room without letting a client fill memory.
MAX_BODY_BYTES = 1024 * 1024
#: A client that trickles its body slower than this is dropped (408) instead of holding a slot.
BODY_TIMEOUT_S = 10.0

_CONTENT_LENGTH_RE = re.compile(r"[0-9]{1,19}")


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
            unplanned=intent.unplanned,
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
