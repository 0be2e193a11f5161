"""Where Prefect users look: markdown/table artifacts and events. Never given secrets."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from uuid import UUID

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event

from promotion.approval import Decision, Tally, Verdict
from promotion.digest import Digest
from promotion.models import ArtifactRecord, EnvState, utcnow

if TYPE_CHECKING:
    from promotion.config import Pipeline
    from promotion.owners import Claim, IncidentKind
    from promotion.s3 import S3
    from promotion.store import ArtifactStore


def artifact_key(*parts: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")[:100]


def markdown(key: str, text: str, description: str) -> None:
    create_markdown_artifact(markdown=text, key=key, description=description)


def table(key: str, rows: list[dict[str, Any]], description: str) -> None:
    create_table_artifact(table=rows, key=key, description=description)


def event(
    name: str,
    *,
    service: str,
    environment: str | None,
    digest: Digest,
    payload: dict[str, Any] | None = None,
    event_id: UUID | None = None,
) -> None:
    """Emit ``promotion.<name>`` about a service/environment, with the digest as a related resource.

    ``event_id``: a deterministic id makes Prefect drop a repeat of the same event (owner incidents).
    """
    resource = {
        "prefect.resource.id": f"promotion.{service}.{environment or 'all'}",
        "prefect.resource.name": f"{service} {environment or ''}".strip(),
        "promotion.service": service,
        "promotion.environment": environment or "",
        "promotion.digest": str(digest),
    }
    related = [
        {"prefect.resource.id": f"promotion.service.{service}", "prefect.resource.role": "service"},
        {"prefect.resource.id": f"promotion.digest.{digest}", "prefect.resource.role": "artifact"},
    ]
    if environment:
        related.append(
            {
                "prefect.resource.id": f"promotion.environment.{environment}",
                "prefect.resource.role": "environment",
            }
        )
    emit_event(
        event=f"promotion.{name}", resource=resource, related=related, payload=payload or {}, id=event_id
    )


# --- what an approval notification needs (promotion.approval.* events) ------------------------------


def flow_run_ui_url(flow_run_id: str | None) -> str | None:
    """The Prefect UI page of a flow run: PREFECT_UI_URL, which Prefect derives from the API URL.

    The event carries the link itself because the server renders the automation's message and
    knows no UI address of its own.
    """
    if not flow_run_id or flow_run_id == "local":
        return None
    from prefect.utilities.urls import url_for

    from promotion.prefect_api import without_credentials

    url = url_for("flow-run", obj_id=flow_run_id)
    # PREFECT_API_URL may carry the server's basic-auth credential (user:password@), and Prefect
    # derives the UI URL from it: an event (and so a chat message) must never carry it.
    return without_credentials(url) if url else None


def _label(digest: Digest | None, version: str | None) -> str:
    if digest is None:
        return "nothing"
    return f"{version or 'n/a'} ({digest.short})"


def approval_payload(
    artifact: ArtifactRecord,
    environment: str,
    current: EnvState | None,
    flow_run_id: str | None,
    *,
    deploys: bool = True,
) -> dict[str, Any]:
    """The facts every approval notification shows: what waits, what changes, where to answer.

    ``deploys``: False when the request ended without a deployment (timed out), so "changes"
    says the environment keeps what it runs.
    """
    now = _label(current.digest if current else None, current.version if current else None)
    if deploys:
        changes = f"{environment} runs {now} now -> will run {_label(artifact.digest, artifact.version)}"
    else:
        changes = f"{environment} keeps what it runs ({now}); nothing is deployed"
    return {
        "service": artifact.service,
        "environment": environment,
        "digest": str(artifact.digest),
        "digest_short": artifact.digest.short,
        "version": artifact.version or "n/a",
        "commit": artifact.provenance.commit or "n/a",
        "commit_author": artifact.provenance.commit_author or "n/a",
        "current_digest": str(current.digest) if current else None,
        "current_version": current.version if current else None,
        "changes": changes,
        "flow_run_id": flow_run_id,
        "ui_url": flow_run_ui_url(flow_run_id) or "n/a",
    }


def approval_timed_out(
    store: ArtifactStore,
    artifact: ArtifactRecord,
    environment: str,
    current: EnvState | None,
    flow_run_id: str | None,
    reason: str,
) -> None:
    """``promotion.approval.timed_out``, whoever recorded the timeout (the waiting run, the
    re-entered run, the deadline check, the sweep through it): nothing was deployed.

    The service's owners are told too (kind ``timed_out``: a rejection nobody gave), from here
    because every writer of a timeout comes here; the claim (tell_owners) tells them once
    whichever writer wins, and also when two of them announce the same timeout.
    """
    event(
        "approval.timed_out",
        service=artifact.service,
        environment=environment,
        digest=artifact.digest,
        payload={
            **approval_payload(artifact, environment, current, flow_run_id, deploys=False),
            "reason": reason,
        },
    )
    tell_owners(
        store.pipeline,
        store.s3,
        "timed_out",
        service=artifact.service,
        environment=environment,
        digest=artifact.digest,
        reasons=[reason],
        version=artifact.version,
        report_key=artifact_key("promotion", artifact.service, environment),
    )


def decision_payload(decision: Decision, verdict: Verdict, tally: Tally) -> dict[str, Any]:
    """How one answer was judged, as a notification says it: counted, refused (why) or final."""
    have, need = len(tally.approved_by), tally.policy.min_approvals
    if not verdict.accepted:
        result, headline, summary = "refused", "Answer refused", f"refused: {verdict.why}"
    elif tally.outcome == "approved":
        approvers = ", ".join(tally.approved_by)
        result, headline, summary = "approved", "Approved", f"approved by {approvers}: the stage deploys"
    elif tally.outcome == "rejected":
        summary = f"rejected by {decision.approver}: nothing is deployed"
        result, headline = "rejected", "Rejected"
    else:
        result, headline = "counted", f"Approval counted ({have} of {need})"
        summary = f"counted ({have} of {need}); {tally.needed} more needed"
    return {
        "headline": headline,
        "decision": decision.decision,
        "approver": decision.approver,
        "reason": decision.reason or "no reason given",
        "counted": verdict.accepted,
        "why": verdict.why,
        "result": result,
        "summary": summary,
    }


# --- owners are told (promotion/owners.py) -----------------------------------------------------------


def tell_owners(
    pipeline: Pipeline,
    s3: S3,
    kind: IncidentKind,
    *,
    service: str,
    environment: str | None,
    digest: Digest,
    reasons: list[str],
    version: str | None = None,
    report_key: str | None = None,
) -> None:
    """Tell the service's owners of an incident, once per DEDUPE_WINDOW; never raises.

    One ``promotion.incident`` event (promote setup's automations send it through each owner's
    block), one signed POST per webhook owner. Only the process that wins the claim (a
    conditional write, promotion.owners.claim) tells: two retries, or a stage and the sweep,
    meeting the incident at once tell it once. Telling is best effort: a failure is logged and
    the claim released, so the next retry of the same incident tries again; the run's own
    outcome does not depend on it.
    """
    from prefect import get_run_logger
    from prefect.runtime import flow_run

    from promotion import owners as told

    logger = get_run_logger()
    try:
        owners = pipeline.service(service).owners
        if not owners:
            return
        run_id = str(flow_run.id) if flow_run.id else None
        incident = told.Incident(
            kind=kind,
            service=service,
            environment=environment,
            digest=digest,
            version=version,
            reasons=reasons,
            flow_run_id=run_id,
            run_url=flow_run_ui_url(run_id),
            stage_report=report_key,
            owners=[o.name for o in owners],
        )
        now = utcnow()
        held = told.claim(s3, told.marker_key(s3, incident), now)
        if held is None:
            logger.info("owners of %s already told of %s (%s) within the hour", service, kind, digest.short)
            return
        reached: list[str] = []
        failed = False
        try:
            event(
                "incident",
                service=service,
                environment=environment,
                digest=digest,
                payload=incident.payload(),
                event_id=told.event_id(s3, incident, now),
            )
            reached = [o.name for o in owners if o.block is not None]
            for owner in owners:
                if owner.webhook is None:
                    continue
                try:
                    told.send_webhook(owner.name, owner.webhook, incident, told.message_id(s3, incident, now))
                    reached.append(owner.name)
                except Exception as exc:  # noqa: BLE001 - one owner's broken webhook must not stop the rest
                    failed = True
                    logger.warning("could not tell %s", exc)
        except BaseException:
            _release(s3, held, logger)
            raise
        if failed:
            _release(s3, held, logger)
        else:
            told.settle(s3, held, now, reached)
        logger.info("told %s of %s: %s", ", ".join(reached) or "nobody", kind, incident.headline)
    except Exception as exc:  # noqa: BLE001 - telling must never change the run's outcome
        logger.warning("could not tell the owners of %s: %s: %s", service, type(exc).__name__, exc)


def _release(s3: S3, held: Claim, logger: Any) -> None:
    """Give up a claim whose telling failed, so the next retry tells (promotion.owners.release)."""
    from promotion import owners as told

    try:
        told.release(s3, held)
    except Exception as exc:  # noqa: BLE001 - the claim then expires after CLAIM_LEASE
        logger.warning(
            "could not release the claim to tell (%s: %s): the same incident is told again when met after %s",
            type(exc).__name__,
            exc,
            told.CLAIM_LEASE,
        )
