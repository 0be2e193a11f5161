"""What a new installation needs on the Prefect server. Idempotent: safe to run again.

Promotions of one service and environment are serialized by a lock in the store
(``promotion/lock.py``), so no Prefect concurrency limits are needed for them any more; the
nightly sweep's deployment keeps its own ``concurrency_limit`` (``flows/sweep.py``).
"""

from __future__ import annotations

from datetime import timedelta

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import Automation, AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification

from promotion.heartbeats import CRASH_AFTER_S, HEARTBEAT_S

#: The automation that marks this product's dead flow runs Crashed.
CRASH_AUTOMATION = "promotion: mark runs without heartbeats Crashed"

#: The flows whose runs it watches: their processes send heartbeats every HEARTBEAT_S seconds.
#: Other flows on a shared server may use Prefect's default of 180 s and must not be matched.
WATCHED_FLOWS = ["promote-pipeline", "promote-to-environment", "rollback", "nightly-sweep"]


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


def ensure_crash_automation() -> list[Automation]:
    """Create the automation, or bring an existing one back to this definition; one only."""
    wanted = crash_automation()
    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(CRASH_AUTOMATION)
        if not existing:
            client.create_automation(wanted)
        else:
            keep, *extra = sorted(existing, key=lambda a: str(a.id))
            for dup in extra:  # two setups racing each other: keep one
                client.delete_automation(dup.id)
            client.update_automation(keep.id, wanted)
        return client.read_automations_by_name(CRASH_AUTOMATION)
