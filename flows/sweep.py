"""The nightly sweep as a Prefect flow: the steps are :mod:`promotion.sweep`'s, their order is here.

>>> nightly_sweep(dry_run=True)        # doctest: +SKIP

1. every service is swept (re-verify, drift, decisions), ``sweep.max_parallel`` at a time, by a
   thread pool inside one task (a task run per service would cost ~30 ms of API writes each and
   load the server's database for nothing a table row does not say better);
2. drift is corrected where ``on_drift: correct``;
3. each ``promote``/``open_approval`` decision starts a pipeline run through the deployment named
   by ``webhooks.deployment``, with ``timeout=0``: an approval stage becomes a paused run people
   answer, and the sweep never waits for it;
4. retention lists (and with ``apply_retention`` deletes) blobs nothing references;
   before all this, approval requests past their deadline are closed as timed out
   (flows/deadlines.py), in case their own deadline check never ran;
5. a table artifact (key ``nightly-sweep``) lists every action and its reason, and events
   ``promotion.drift.detected`` / ``promotion.flagged`` are emitted;
6. each service's ``alerts`` thresholds are checked against its DORA metrics
   (promotion/metrics/alerts.py): ``promotion.metric.crossed`` when one is crossed,
   ``promotion.metric.recovered`` when it comes back, once each;
7. the delivery summary (``promote report``'s figures per service) is written as the table
   artifact ``delivery-summary`` and the markdown artifact ``delivery-summary-figures``.

Dry run changes nothing: no ledger writes, no copies, no runs, no deletes, no events (automations
may act on events); the table artifact says what would have happened.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, cast

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.runtime import flow_run
from prefect.states import Completed, Failed

from flows import _logging
from flows import _report as report
from promotion.config import Pipeline, Service, load_pipeline
from promotion.errors import PromotionError
from promotion.models import utcnow
from promotion.store import ArtifactStore
from promotion.sweep import (
    ACTOR,
    RetentionReport,
    ServiceReport,
    SweepPipelineRun,
    SweepReport,
    correct_all,
    run_retention,
    runs_to_start,
    sweep_date,
    sweep_services,
)

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

    from promotion.metrics.alerts import Transition

_logging.install()

ARTIFACT_KEY = "nightly-sweep"
#: The delivery summary (promotion/dashboard/summary.py): the table; its markdown adds "-figures".
SUMMARY_KEY = "delivery-summary"
#: Runs the sweep starts carry this tag, so they can be found (and told from webhook runs).
RUN_TAG = "nightly-sweep"
#: Proposals named one per line in the run log; the table artifact lists them all.
LOG_PROPOSALS = 20


def _run_name() -> str:
    return "nightly sweep" + (" (dry run)" if flow_run.parameters.get("dry_run") else "")


@task(name="sweep-services", cache_policy=NO_CACHE)
def sweep_all(store: ArtifactStore, now: dt.datetime, dry_run: bool) -> list[ServiceReport]:
    """Re-verify, find drift and decide, for every service (``sweep.max_parallel`` at once)."""
    return sweep_services(store, now=now, dry_run=dry_run)


@task(name="correct-drift", cache_policy=NO_CACHE)
def correct(store: ArtifactStore, reports: list[ServiceReport]) -> list[ServiceReport]:
    """Re-copy the ledger's digest where ``on_drift: correct``, then check the copy again."""
    return correct_all(store, reports)


@task(name="retention", cache_policy=NO_CACHE)
def retention(
    store: ArtifactStore, reports: list[ServiceReport], now: dt.datetime, apply: bool, dry_run: bool
) -> RetentionReport:
    """List (with ``apply`` and not ``dry_run``, delete) blobs nothing references, past the retention."""
    return run_retention(store, reports, now=now, apply=apply, dry_run=dry_run)


def _open_runs(deployment: str) -> tuple[dict[tuple[str, str, str], str], str | None]:
    """(service, to, digest) -> id of a run of ``deployment`` not yet finished; or why unknown."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.exceptions import ObjectNotFound

    waiting = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED]
    found: dict[tuple[str, str, str], str] = {}
    with get_client(sync_client=True) as client:
        try:
            dep = client.read_deployment_by_name(deployment)
        except ObjectNotFound:
            return found, (
                f"deployment {deployment!r} not found: deploy the pipeline flow under that name "
                "(promote_pipeline.to_deployment(name='pipeline')) or set webhooks.deployment"
            )
        flt = FlowRunFilter(
            deployment_id=FlowRunFilterDeploymentId(any_=[dep.id]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=waiting)),
        )
        offset = 0
        while True:
            page = client.read_flow_runs(flow_run_filter=flt, limit=200, offset=offset)
            for r in page:
                p = r.parameters
                found[(str(p.get("service")), str(p.get("to")), str(p.get("digest")))] = str(r.id)
            if len(page) < 200:
                return found, None
            offset += len(page)


@task(name="start-pipeline-runs", cache_policy=NO_CACHE)
def start_runs(requests: list[SweepPipelineRun]) -> list[SweepPipelineRun]:
    """Start one pipeline run per request (``timeout=0``: never wait), unless one is open already.

    A run still open from an earlier night (e.g. paused for approval) is not doubled; the same
    night run twice gets the same runs back (the idempotency key).
    """
    from prefect.deployments import run_deployment

    if not requests:
        return []
    logger = get_run_logger()
    out: list[SweepPipelineRun] = []
    cache: dict[str, tuple[dict[tuple[str, str, str], str], str | None]] = {}
    for r in requests:
        if r.deployment not in cache:
            cache[r.deployment] = _open_runs(r.deployment)
        open_runs, missing = cache[r.deployment]
        if missing is not None:
            out.append(r.model_copy(update={"outcome": "failed", "detail": missing}))
            continue
        existing = open_runs.get((r.service, r.environment, str(r.digest)))
        if existing is not None:
            out.append(
                r.model_copy(
                    update={
                        "outcome": "already open",
                        "flow_run_id": existing,
                        "detail": "a run for this promotion is waiting",
                    }
                )
            )
            continue
        try:
            run = run_deployment(
                r.deployment,
                parameters=r.parameters,
                timeout=0,
                idempotency_key=r.idempotency_key,
                tags=[RUN_TAG],
                # Its own top-level run, like a webhook's: it may wait days for approval and must
                # not hang off this sweep's run.
                as_subflow=False,
            )
        except Exception as exc:  # noqa: BLE001 - one refused run must not stop the others
            logger.warning("could not start %s → %s: %s", r.service, r.environment, exc)
            out.append(r.model_copy(update={"outcome": "failed", "detail": f"{type(exc).__name__}: {exc}"}))
            continue
        # async_dispatch types the call as "FlowRun or coroutine"; from sync code it is the run.
        started = cast("FlowRun", run)
        out.append(r.model_copy(update={"outcome": "started", "flow_run_id": str(started.id)}))
    return out


def _events(reports: list[ServiceReport], pipeline: Pipeline, store: ArtifactStore) -> None:
    for s in reports:
        for f in s.drift:
            digest = f.expected or f.actual
            if digest is None:
                continue  # a check that could not run names no digest: it is in the table
            report.tell_owners(
                pipeline, store.s3, "drift", service=s.service, environment=f.environment, digest=digest,
                reasons=[
                    f"{f.location}: expected {f.expected}, found {f.actual}", f.detail, f"action: {f.action}"
                ],
                report_key=ARTIFACT_KEY,
            )  # fmt: skip
            report.event(
                "drift.detected",
                service=s.service,
                environment=f.environment,
                digest=digest,
                payload={
                    "expected": str(f.expected) if f.expected else None,
                    "actual": str(f.actual) if f.actual else None,
                    "location": f.location,
                    "on_drift": f.on_drift,
                    "action": f.action,
                    "detail": f.detail,
                },
            )
        for c in s.newly_flagged:
            report.event(
                "flagged",
                service=s.service,
                environment=None,
                digest=c.digest,
                payload={"reason": c.flag_reason, "check": c.outcome, "roles": c.roles},
            )
            report.tell_owners(
                pipeline, store.s3, "flagged", service=s.service, environment=None, digest=c.digest,
                reasons=[str(c.flag_reason)], report_key=ARTIFACT_KEY,
            )  # fmt: skip


def metric_alerts(pipeline: Pipeline, store: ArtifactStore, now: dt.datetime) -> list[Transition]:
    """Check every service's ``alerts``; emit an event per crossing and recovery; remember them.

    The state is saved after its events were emitted (told at least once). An S3 error for one
    service is logged and leaves its state as it was: the next night tells what changed. Webhook
    owners get each transition signed (:func:`_tell_webhook_owners`), sent again next night if
    the POST failed.
    """
    from prefect.events import emit_event

    from promotion import owners
    from promotion.metrics.alerts import check_service, save_state

    logger = get_run_logger()
    told: list[Transition] = []
    for service in pipeline.services:
        if service.alerts is None:
            continue
        try:
            changes, state = check_service(store.s3, store.ledger, service.name, service.alerts, now)
            for t in changes:
                emit_event(
                    event=f"promotion.metric.{t.kind}",
                    resource={
                        "prefect.resource.id": f"promotion.{t.service}.{t.environment}",
                        "prefect.resource.name": f"{t.service} {t.environment}",
                        "promotion.service": t.service,
                        "promotion.environment": t.environment,
                        "promotion.metric": t.reading.metric,
                    },
                    related=[
                        {
                            "prefect.resource.id": f"promotion.service.{t.service}",
                            "prefect.resource.role": "service",
                        },
                        {
                            "prefect.resource.id": f"promotion.environment.{t.environment}",
                            "prefect.resource.role": "environment",
                        },
                    ],
                    payload={
                        "metric": t.reading.metric,
                        "value": t.reading.value,
                        "threshold": t.reading.threshold,
                        "direction": t.reading.direction,
                        "window_days": t.window_days,
                        "band": t.band,
                        "summary": t.reading.describe(),
                    },
                    id=owners.metric_event_id(store.s3, t),
                )
                logger.warning("%s/%s: metric %s: %s", t.service, t.environment, t.kind, t.reading.describe())
            # Webhook owners: tonight's transitions, and those a failed POST left unsent (for as
            # long as their claim would say "told"); what fails again waits for the next night.
            retry = [u for u in state.unsent if now - u.at < owners.METRIC_TOLD_WINDOW]
            unsent = [u for u in [*retry, *changes] if not _tell_webhook_owners(service, store, u, now)]
            save_state(store.s3, state.model_copy(update={"unsent": unsent}))
            told += changes
        except PromotionError as exc:
            logger.error("metric alerts of %s not checked: %s: %s", service.name, type(exc).__name__, exc)
    return told


def _tell_webhook_owners(service: Service, store: ArtifactStore, t: Transition, now: dt.datetime) -> bool:
    """POST the signed ``promotion.metric.<kind>`` to the service's webhook owners, once per
    transition (block owners hear of it through their automation, from the event); False when
    some owner was not reached (the caller keeps it in the alert state's ``unsent``, and the
    next sweep sends it again). Claimed like an incident (promotion.owners.claim), so a sweep
    that died before saving the alert state, or two sweeps at once, do not send it again; a
    failed POST releases the claim. Never raises: the alert state is saved anyway."""
    from promotion import owners

    hooks = [(o.name, o.webhook) for o in service.owners if o.webhook is not None]
    if not hooks:
        return True
    logger = get_run_logger()
    try:
        held = owners.claim(store.s3, owners.metric_marker_key(store.s3, t), now, owners.METRIC_TOLD_WINDOW)
        if held is None:
            logger.info("webhook owners of %s already told of %s %s", t.service, t.reading.metric, t.kind)
            return True
        msg_id = owners.metric_message_id(store.s3, t)
        body = owners.metric_webhook_body(t, msg_id)
        reached: list[str] = []
        for name, webhook in hooks:
            try:
                owners.send_signed(name, webhook, msg_id, body)
                reached.append(name)
            except Exception as exc:  # noqa: BLE001 - one owner's broken webhook must not stop the rest
                logger.warning("could not tell %s", exc)
        if len(reached) == len(hooks):
            owners.settle(store.s3, held, now, reached)
            return True
        owners.release(store.s3, held)
    except Exception as exc:  # noqa: BLE001 - telling must never stop the alert step
        logger.warning("could not tell the webhook owners of %s: %s: %s", t.service, type(exc).__name__, exc)
    return False


def delivery_summary(pipeline: Pipeline, store: ArtifactStore, now: dt.datetime) -> str | None:
    """The dashboard's figures per service (``promote report``'s default window) as a table and
    a markdown artifact. Read-only: an S3 error is logged and returned (the sweep then fails, as
    for any ledger it could not read), never a figure; nothing is recorded and no artifact is
    written, so the last one written stays, with its own date."""
    from promotion.dashboard import summary
    from promotion.dashboard.model import gather

    envs = [e.name for e in pipeline.environments]
    environment = "prod" if "prod" in envs else envs[-1]
    try:
        found = gather(
            store.ledger, [s.name for s in pipeline.services], envs, environment, now - summary.WINDOW, now
        )
    except PromotionError as exc:
        error = f"delivery summary not written: {type(exc).__name__}: {exc}"
        get_run_logger().error("%s", error)
        return error
    described = f"{len(found.services)} service(s), {found.deployments} deployment(s) to {environment}"
    report.table(SUMMARY_KEY, summary.rows(found), described)
    report.markdown(SUMMARY_KEY + "-figures", summary.markdown(found), described)
    return None


def _summary(rep: SweepReport) -> str:
    runs = [r for r in rep.runs if r.outcome in ("started", "already open")]
    drift = sum(len(s.drift) for s in rep.services)
    flagged = sum(1 for s in rep.services for c in s.checks if c.flag_reason)
    ret = rep.retention
    deleted = len(ret.deleted)
    listed = len(ret.candidates)
    text = (
        f"{len(rep.services)} service(s): {len(rep.runs)} promotion(s) proposed"
        f"{'' if rep.dry_run else f', {len(runs)} run(s) started or open'}, {drift} drift finding(s), "
        f"{flagged} {'to flag' if rep.dry_run else 'flagged'}, retention: {listed} unreferenced old blob(s)"
        f"{f', {deleted} deleted' if deleted else ''}"
    )
    return ("dry run: " if rep.dry_run else "") + text


def schedule(pipeline: Pipeline) -> dict[str, Any]:
    """Keyword arguments for ``nightly_sweep.to_deployment``: the configured cron and time zone."""
    from prefect.schedules import Cron

    return {
        "schedules": [Cron(pipeline.sweep.schedule, timezone=pipeline.sweep.timezone)],
        # Two sweeps at once would only do the same work twice.
        "concurrency_limit": 1,
    }


@flow(name="nightly-sweep", flow_run_name=_run_name, validate_parameters=True)
def nightly_sweep(
    dry_run: bool = False, apply_retention: bool = False, config: str | None = None
) -> State[Any]:
    """Promote what has soaked, find drift and rot, list (or delete) unreferenced blobs.

    Completes with a one-line summary and the :class:`~promotion.sweep.SweepReport` as its
    result; fails (after writing the table artifact) when something could not be done: a ledger
    that cannot be read, a run that could not be started, a correction or deletion that failed.
    """
    logger = get_run_logger()
    try:
        pipeline = load_pipeline(config)
        store = ArtifactStore(pipeline)
    except PromotionError as exc:
        logger.error("%s: %s", type(exc).__name__, exc)
        return Failed(message=f"{type(exc).__name__}: {exc}")
    if not dry_run:
        # The backstop for approval deadlines that passed while nothing ran (a deadline check
        # that never ran: promote serve was down, or its deployment is not served).
        from flows.deadlines import close_expired_approvals

        closing = close_expired_approvals(config=config, return_state=True)
        if not closing.is_completed():
            logger.error("closing expired approval requests failed: %s", closing.message)
    now = utcnow()
    reports = sweep_all(store, now, dry_run)
    if not dry_run:
        reports = correct(store, reports)
    kept = retention(store, reports, now, apply_retention, dry_run)
    date = sweep_date(now, pipeline.sweep.timezone)
    requests = runs_to_start(reports, deployment=pipeline.webhooks.deployment, date=date)
    if dry_run:
        requests = [r.model_copy(update={"outcome": "not started (dry run)"}) for r in requests]
    else:
        requests = start_runs(requests)
        _events(reports, pipeline, store)
        metric_alerts(pipeline, store, now)
    summary_error = delivery_summary(pipeline, store, now)
    rep = SweepReport(
        now=now,
        date=date,
        dry_run=dry_run,
        apply_retention=apply_retention,
        services=reports,
        retention=kept,
        runs=requests,
    )
    summary = _summary(rep)
    report.table(ARTIFACT_KEY, rep.rows(), summary)
    proposals = [(s.service, x) for s in reports for x in s.decisions if x.action != "skip"]
    # The table has every row; the run log names the first few (each line is an API write).
    for service, x in proposals[:LOG_PROPOSALS]:
        logger.info("%s → %s: %s %s (%s)", service, x.environment, x.action, x.digest, x.reason)
    if len(proposals) > LOG_PROPOSALS:
        logger.info(
            "... and %d more proposals: see the %s artifact", len(proposals) - LOG_PROPOSALS, ARTIFACT_KEY
        )
    errors = rep.errors + ([summary_error] if summary_error else [])
    if errors:
        for e in errors:
            logger.error("%s", e)
        return Failed(message=f"{summary}; {len(errors)} error(s): {errors[0]}", data=rep)
    logger.info("%s", summary)
    return Completed(message=summary, data=rep)


__all__ = ["ACTOR", "ARTIFACT_KEY", "RUN_TAG", "nightly_sweep", "schedule"]
