"""The pipeline runs the sweep starts: one per ``promote``/``open_approval`` decision.

Each with its idempotency key; starting them is the flow's part (``flows.sweep``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from zoneinfo import ZoneInfo

from promotion.sweep.report import ACTOR, ServiceReport, SweepPipelineRun


def sweep_date(now: dt.datetime, timezone: str) -> str:
    """The sweep's calendar day in the schedule's time zone (part of the runs' idempotency keys)."""
    return now.astimezone(ZoneInfo(timezone)).date().isoformat()


def runs_to_start(reports: Iterable[ServiceReport], *, deployment: str, date: str) -> list[SweepPipelineRun]:
    """One pipeline run per ``promote``/``open_approval`` decision, with its idempotency key.

    The key names the deployment: Prefect keeps idempotency keys unique per flow, not per
    deployment. The same night run twice asks for the same runs (and gets the same ones).
    """
    out: list[SweepPipelineRun] = []
    for r in reports:
        for d in r.decisions:
            if d.action == "skip" or d.digest is None:
                continue
            out.append(
                SweepPipelineRun(
                    service=r.service,
                    environment=d.environment,
                    digest=d.digest,
                    action=d.action,
                    deployment=deployment,
                    parameters={
                        "service": r.service,
                        "digest": str(d.digest),
                        "to": d.environment,
                        "requested_by": ACTOR,
                    },
                    idempotency_key=f"sweep:{deployment}:{date}:{r.service}:{d.environment}:{d.digest}",
                )
            )
    return out
