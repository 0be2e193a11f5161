"""Where Prefect users look: markdown/table artifacts and events. Never given secrets."""

from __future__ import annotations

import re
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event

from promotion.approval import Decision, Tally, Verdict
from promotion.digest import Digest
from promotion.models import ArtifactRecord, EnvState


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
) -> None:
    """Emit ``promotion.<name>`` about a service/environment, with the digest as a related resource."""
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
    emit_event(event=f"promotion.{name}", resource=resource, related=related, payload=payload or {})


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
    artifact: ArtifactRecord, environment: str, current: EnvState | None, flow_run_id: str | None, reason: str
) -> None:
    """``promotion.approval.timed_out``, whoever recorded the timeout (the waiting run, the
    re-entered run, the deadline check): nothing was deployed."""
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
