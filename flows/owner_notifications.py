"""Owners are told (``services[].owners``): the Prefect automations ``promote setup`` creates.

One reactive automation per (service, owner with a ``block``): every ``promotion.incident`` event
of that service (emitted once per incident by :func:`flows._report.tell_owners`) sends one
message through the owner's notification block, rendered by the Prefect server from the event's
payload. Owners with a ``webhook`` need no automation: the flow that met the incident signs and
POSTs it itself (a notification block cannot compute an HMAC, and only that process holds the
secret). Same mechanism as the approval notifications in flows/setup.py, same idempotence: run
again, and automations are brought back to this definition; those of removed owners are deleted.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import Automation, AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification

from flows.setup import block_document_id, notification_scope, upsert_automation
from promotion.config import Owner, Pipeline

INCIDENT_EVENT = "promotion.incident"
#: The nightly sweep's metric alerts (services[].alerts, flows/sweep.py): owners hear of them too.
METRIC_EVENTS = ("promotion.metric.crossed", "promotion.metric.recovered")
_PREFIX = "promotion: tell owner "

# Jinja, rendered by the Prefect server: an incident's payload says everything; a metric event's
# service and environment are labels of its resource.
_IS_INCIDENT = "{% if event.event == 'promotion.incident' %}"
_METRIC_WHO = "{{ event.resource['promotion.service'] }} {{ event.resource['promotion.environment'] }}"
_METRIC_WHAT = "{{ 'crossed' if event.event.endswith('crossed') else 'recovered' }}"
SUBJECT = (
    _IS_INCIDENT + "{{ event.payload.headline }}"
    "{% else %}Metric " + _METRIC_WHAT + ": " + _METRIC_WHO + " {{ event.payload.metric }}{% endif %}"
)
BODY = (
    _IS_INCIDENT + "{{ event.payload.headline }} ({{ event.payload.digest }})\n"
    "Why: {{ event.payload.reasons_text }}\n"
    "Run: {{ event.payload.run_url }}\n"
    "Report: Prefect artifact {{ event.payload.stage_report }}\n"
    "Owners: {{ event.payload.owners | join(', ') }}"
    "{% else %}Metric " + _METRIC_WHAT + ": " + _METRIC_WHO + "\n"
    "{{ event.payload.summary }} (DORA band: {{ event.payload.band }}, "
    "over {{ event.payload.window_days | round | int }} days)\n"
    "Report: Prefect artifact nightly-sweep{% endif %}"
)


def owner_automation_name(service: str, owner: str, pipeline: Pipeline) -> str:
    return f"{_PREFIX}{owner} of {service} [{notification_scope(pipeline)}]"


def _is_ours(name: str, pipeline: Pipeline) -> bool:
    return name.startswith(_PREFIX) and name.endswith(f" [{notification_scope(pipeline)}]")


def owner_automation(
    service: str, owner: Owner, pipeline: Pipeline, block_document_id: UUID
) -> AutomationCore:
    return AutomationCore(
        name=owner_automation_name(service, owner.name, pipeline),
        description=(
            f"Tells {owner.name} ({owner.block}) of a failed gate, a rejection, a timed-out approval, "
            f"a rollback, a failed verification, drift, a flagged digest or a metric alert of {service}. "
            "Created by "
            "promote setup from services[].owners of the pipeline file."
        ),
        enabled=True,
        trigger=EventTrigger(
            expect={INCIDENT_EVENT, *METRIC_EVENTS},
            match=ResourceSpecification({"prefect.resource.id": "promotion.*", "promotion.service": service}),
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[SendNotification(block_document_id=block_document_id, subject=SUBJECT, body=BODY)],
    )


def _block_id(client: SyncPrefectClient, service: str, owner: Owner, source: str) -> UUID:
    assert owner.block is not None
    kind, _, name = owner.block.partition("/")
    return block_document_id(client, kind, name, source, f"services[{service}].owners[{owner.name}].block")


def ensure_owner_automations(pipeline: Pipeline, source: str) -> list[Automation]:
    """The wanted automations, created or updated; this pipeline's others deleted.

    Every block is looked up before anything changes: a missing one raises :class:`ConfigError`
    and leaves the server as it was.
    """
    with get_client(sync_client=True) as client:
        wanted = {
            owner_automation_name(s.name, o.name, pipeline): owner_automation(
                s.name, o, pipeline, _block_id(client, s.name, o, source)
            )
            for s in pipeline.services
            for o in s.owners
            if o.block is not None
        }
        existing: dict[str, list[Automation]] = {}
        for a in client.read_automations():
            if _is_ours(a.name, pipeline):
                existing.setdefault(a.name, []).append(a)
        for name, found in existing.items():
            if name not in wanted:
                for old in found:
                    client.delete_automation(old.id)
        result: list[Automation] = []
        for name, automation in wanted.items():
            upsert_automation(client, automation, existing.get(name, []))
            result += client.read_automations_by_name(name)
        return result
