"""Close approval requests whose deadline passed while nothing ran (see promotion/deadlines.py).

A pipeline run of a deployment suspends to wait for approval: no process of it is left to see the
deadline come. So before it suspends it schedules a run of this flow (deployment
``close-expired-approvals/approval-deadlines``, served by ``promote serve``) a few seconds after
the deadline; the server has by then failed the suspended run ("paused and never resumed"), so
its form is no longer offered, and this run records the timeout in the ledger and announces it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows import _report as report
from promotion.ci_context import current_actor
from promotion.deadlines import close_expired

FLOW_NAME = "close-expired-approvals"
DEPLOYMENT_NAME = "approval-deadlines"
#: After the deadline: the server fails the suspended run first (it checks every 5 s).
AFTER_DEADLINE_S = 10.0


@flow(name=FLOW_NAME, validate_parameters=True)
def close_expired_approvals(config: str | None = None, service: str | None = None) -> dict[str, Any]:
    """Record every undecided request past its deadline as rejected (timeout)."""
    from flows.pipeline import _load

    logger = get_run_logger()
    pipeline, store = _load(config)
    services = [pipeline.service(service).name] if service else None
    run_id = str(flow_run.id or "local")
    closed = close_expired(
        pipeline,
        store,
        actor=current_actor(),
        flow_run_id=run_id,
        services=services,
        keep_open=_running_again,
    )
    for request, rec in closed:
        logger.warning(
            "%s %s in %s: %s", request.service, request.digest.short, request.environment, rec.reason
        )
        artifact = store.record(request.service, request.digest)
        current = rec.state.environments.get(request.environment)
        report.approval_timed_out(
            store, artifact, request.environment, current, request.flow_run_id, rec.reason
        )
    if not closed:
        logger.info("no approval request is past its deadline")
    return {"closed": [f"{r.service} {r.environment} {r.digest}" for r, _ in closed]}


def _running_again(request: Any) -> str | None:
    """Why not to close ``request`` now: its run was resumed and judges the deadline itself.

    A run still suspended on the request is failed here first, whatever the server's own pause
    expiry did or not: from now on its form is not offered, and a late answer is refused.
    """
    from prefect.client.orchestration import get_client
    from prefect.states import Failed

    if request.flow_run_id is None:
        return None
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(uuid.UUID(request.flow_run_id))
        except Exception:  # noqa: BLE001 - a run Prefect no longer knows waits for nothing
            return None
        state = run.state
        if state is None or state.is_final():
            return None
        if state.is_paused():
            client.set_flow_run_state(
                run.id,
                Failed(message=f"approval timed out at {request.deadline:%Y-%m-%d %H:%M:%S}Z: never resumed"),
                force=True,
            )
            return None
    return f"its run {run.id} is {state.name}"


def schedule_check(
    service: str, environment: str, digest: str, request_seq: int, deadline: dt.datetime
) -> str:
    """Schedule this flow just after ``deadline``; the line to log (also when it cannot be scheduled).

    Idempotent per request: each suspension of the same request finds the same scheduled run.
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Scheduled

    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(f"{FLOW_NAME}/{DEPLOYMENT_NAME}")
        except ObjectNotFound:
            return (
                f"no deployment {FLOW_NAME}/{DEPLOYMENT_NAME} (promote serve serves it): the timeout "
                "is recorded by the next run of this digest or by the nightly sweep"
            )
        at = deadline + dt.timedelta(seconds=AFTER_DEADLINE_S)
        run = client.create_flow_run_from_deployment(
            deployment.id,
            parameters={"service": service},
            state=Scheduled(scheduled_time=at),
            idempotency_key=f"{FLOW_NAME}:{deployment.id}:{service}:{environment}:{digest}:{request_seq}",
        )
    return f"deadline check {run.id} scheduled at {at:%Y-%m-%d %H:%M:%S}Z"
