"""What a new installation needs on the Prefect server. Idempotent: safe to run again.

Promotions of one service and environment are serialized by a lock in the store
(``promotion/lock.py``), so no Prefect concurrency limits are needed for them any more; the
nightly sweep's deployment keeps its own ``concurrency_limit`` (``flows/sweep.py``).
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState, SendNotification
from prefect.events.schemas.automations import Automation, AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from prefect.exceptions import ObjectNotFound

from promotion.config import Pipeline
from promotion.errors import ConfigError
from promotion.heartbeats import CRASH_AFTER_S, HEARTBEAT_S

#: The automation that marks this product's dead flow runs Crashed.
CRASH_AUTOMATION = "promotion: mark runs without heartbeats Crashed"

#: The flows whose runs it watches: their processes send heartbeats every HEARTBEAT_S seconds.
#: Other flows on a shared server may use Prefect's default of 180 s and must not be matched.
WATCHED_FLOWS = [
    "promote-pipeline",
    "promote-to-environment",
    "rollback",
    "nightly-sweep",
    "close-expired-approvals",
]


def register_blocks() -> list[str]:
    """Register the project's block types, as ``prefect block register -m blocks`` would."""
    from blocks.credentials import S3StoreCredentials

    S3StoreCredentials.register_type_and_schema()
    return [S3StoreCredentials.get_block_type_slug()]


def crash_automation() -> AutomationCore:
    """Prefect's zombie-run automation (docs: "detect zombie flows"), narrowed to our flows.

    A proactive trigger: after a heartbeat of a flow run, expect another heartbeat or a final
    state of the same run (``for_each`` resource id) within CRASH_AFTER_S; if none comes, set the
    run Crashed. ``force``: a run that died while Paused (waiting for an approval) must end
    Crashed too, and Prefect's orchestration rules refuse some transitions from Paused.
    """
    return AutomationCore(
        name=CRASH_AUTOMATION,
        description=(
            f"Flow runs of {', '.join(WATCHED_FLOWS)} send a heartbeat every {HEARTBEAT_S}s; a run "
            f"silent for {CRASH_AFTER_S}s lost its process and is marked Crashed. Created by promote setup."
        ),
        enabled=True,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                # A pipeline run that suspends to wait for approval ends its process on purpose.
                "prefect.flow-run.Suspended",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            match_related=ResourceSpecification(
                {"prefect.resource.role": "flow", "prefect.resource.name": WATCHED_FLOWS}
            ),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=CRASH_AFTER_S),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {CRASH_AFTER_S}s: the process running this flow run died",
                force=True,
            )
        ],
    )


def upsert_automation(client: SyncPrefectClient, wanted: AutomationCore, existing: list[Automation]) -> None:
    """Create ``wanted``, or bring the existing automation of its name back to it; one only."""
    if not existing:
        client.create_automation(wanted)
        return
    keep, *extra = sorted(existing, key=lambda a: str(a.id))
    for dup in extra:  # two setups racing each other: keep one
        client.delete_automation(dup.id)
    client.update_automation(keep.id, wanted)


def block_document_id(
    client: SyncPrefectClient, block_type: str, block_name: str, source: str, field: str, hint: str = ""
) -> UUID:
    """The id of a notification block, or a one-line :class:`ConfigError` naming the file's field."""
    try:
        doc = client.read_block_document_by_name(block_name, block_type, include_secrets=False)
    except ObjectNotFound:
        raise ConfigError(
            source,
            [
                f"{field}: no {block_type} block named {block_name!r} on the Prefect server at "
                f"{client.api_url}; create it{hint} and run setup again"
            ],
        ) from None
    assert doc.id is not None
    return doc.id


def ensure_crash_automation() -> list[Automation]:
    """Create the automation, or bring an existing one back to this definition; one only."""
    with get_client(sync_client=True) as client:
        upsert_automation(client, crash_automation(), client.read_automations_by_name(CRASH_AUTOMATION))
        return client.read_automations_by_name(CRASH_AUTOMATION)


# --- approval notifications (pipeline file: notifications.approvals) --------------------------------

#: The event each notification kind reacts to (emitted by flows/pipeline.py, payloads from
#: flows/_report.py: approval_payload, decision_payload).
APPROVAL_EVENTS: dict[str, str] = {
    "requested": "promotion.approval.requested",
    "decided": "promotion.approval.decided",
    "timed_out": "promotion.approval.timed_out",
}

# Jinja, rendered by the Prefect server when the event arrives; everything comes from the event's
# payload, so the server needs no access to the store. Short lines: chat clients wrap badly.
_WHAT = (
    "{{ event.payload.service }} {{ event.payload.version }} ({{ event.payload.digest }}) "
    "-> {{ event.payload.environment }}"
)
MESSAGES: dict[str, tuple[str, str]] = {
    "requested": (
        "Approval requested: {{ event.payload.service }} {{ event.payload.version }} "
        "-> {{ event.payload.environment }}",
        _WHAT + "\n"
        "What changes: {{ event.payload.changes }}\n"
        "Commit {{ event.payload.commit }} by {{ event.payload.commit_author }}\n"
        "Who may approve: {{ event.payload.min_approvals }} of "
        "{{ event.payload.approvers | join(', ') }} (no self-approval), "
        "before {{ event.payload.deadline }}\n"
        "Answer in the Prefect UI: {{ event.payload.ui_url }}\n"
        "or: promote approve {{ event.payload.flow_run_id }} --as NAME",
    ),
    "decided": (
        "{{ event.payload.headline }}: {{ event.payload.service }} "
        "{{ event.payload.version }} -> {{ event.payload.environment }}",
        _WHAT + "\n"
        "{{ event.payload.approver }} answered {{ event.payload.decision }} "
        "({{ event.payload.reason }}): {{ event.payload.summary }}\n"
        "What changes: {{ event.payload.changes }}\n"
        "Run: {{ event.payload.ui_url }}",
    ),
    "timed_out": (
        "Approval timed out: {{ event.payload.service }} {{ event.payload.version }} "
        "-> {{ event.payload.environment }}",
        _WHAT + "\n"
        "{{ event.payload.reason }}\n"
        "What changes: {{ event.payload.changes }}\n"
        "Run: {{ event.payload.ui_url }}",
    ),
}


def notification_scope(pipeline: Pipeline) -> str:
    """Which pipeline an automation belongs to: its store, so two pipelines on one server coexist."""
    return f"s3://{pipeline.store.bucket}/{pipeline.store.prefix}"


def notification_automation_name(kind: str, pipeline: Pipeline) -> str:
    return f"promotion: notify approval {kind} [{notification_scope(pipeline)}]"


def notification_automation(kind: str, pipeline: Pipeline, block_document_id: UUID) -> AutomationCore:
    """A reactive automation: every ``promotion.approval.<kind>`` event of the pipeline's services
    sends one message through the block."""
    subject, body = MESSAGES[kind]
    services = [s.name for s in pipeline.services]
    return AutomationCore(
        name=notification_automation_name(kind, pipeline),
        description=(
            f"Tells approvers when an approval is {kind.replace('_', ' ')} ({', '.join(services)}). "
            "Created by promote setup from notifications.approvals of the pipeline file."
        ),
        enabled=True,
        trigger=EventTrigger(
            expect={APPROVAL_EVENTS[kind]},
            match=ResourceSpecification(
                {"prefect.resource.id": "promotion.*", "promotion.service": services}
            ),
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[SendNotification(block_document_id=block_document_id, subject=subject, body=body)],
    )


def _notification_block_id(client: SyncPrefectClient, pipeline: Pipeline, source: str) -> UUID | None:
    notify = pipeline.notifications.approvals
    if notify is None:
        return None
    return block_document_id(
        client,
        notify.block_type,
        notify.block_name,
        source,
        "notifications.approvals.block",
        " (Prefect UI: Blocks, or Python: SlackWebhook(url=...).save(NAME))",
    )


def ensure_notification_automations(pipeline: Pipeline, source: str) -> list[Automation]:
    """One automation per configured kind, created or brought back to this definition; the
    automations of kinds no longer configured (or of a removed section) are deleted.

    Raises :class:`ConfigError` when the named block does not exist on the server.
    """
    notify = pipeline.notifications.approvals
    wanted_kinds = set(notify.events) if notify else set()
    result: list[Automation] = []
    with get_client(sync_client=True) as client:
        block_id = _notification_block_id(client, pipeline, source)
        for kind in APPROVAL_EVENTS:
            name = notification_automation_name(kind, pipeline)
            existing = sorted(client.read_automations_by_name(name), key=lambda a: str(a.id))
            if kind not in wanted_kinds or block_id is None:
                for old in existing:
                    client.delete_automation(old.id)
                continue
            upsert_automation(client, notification_automation(kind, pipeline, block_id), existing)
            result += client.read_automations_by_name(name)
    return result
