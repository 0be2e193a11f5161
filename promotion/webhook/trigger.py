"""Run creation: a validated delivery becomes one flow run of the pipeline's deployment."""

from __future__ import annotations

import asyncio
import logging
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from promotion.digest import Digest
from promotion.errors import (
    ConfigError,
    DeliveryConflict,
    PromotionError,
    ReceiverUnavailable,
)

if TYPE_CHECKING:
    from uuid import UUID

    from prefect.client.orchestration import PrefectClient


# Every part of the receiver logs under the one name operators filter on (and the package's own).
logger = logging.getLogger("promotion.webhook")

#: Flow-run creations in flight per receiver process (see :class:`PrefectTrigger`); the
#: environment variable overrides it.
DEFAULT_MAX_IN_FLIGHT = 2
MAX_IN_FLIGHT_ENV = "PROMOTION_WEBHOOK_MAX_IN_FLIGHT"


@dataclass(frozen=True)
class RunRequest:
    """One authentic, validated delivery that asks for a promotion."""

    source: str
    delivery_id: str
    service: str
    digest: Digest
    to: str | None
    requested_by: str | None
    unplanned: bool = False

    @property
    def parameters(self) -> dict[str, Any]:
        """The flow run's parameters (the deployment supplies the rest, e.g. ``config``)."""
        params: dict[str, Any] = {
            "service": self.service,
            "digest": str(self.digest),
            "to": self.to,
            "requested_by": self.requested_by,
        }
        if self.unplanned:
            # Only when set: a planned delivery's parameters stay what they were before hotfixes.
            params["unplanned"] = True
        return params

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
