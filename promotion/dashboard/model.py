"""What the delivery dashboard shows, per service, from the ledger records of one window.

Per service: the DORA figures of the window (promotion/metrics/dora.py, the same arithmetic as
``promote metrics``), the same figures per week (deployments, lead time p50, change fail rate),
a timeline per environment of every promotion, rejection and rollback in the window with its
approvals (who, when) and gate results, and the current state of each environment with its age.
``now`` is passed in, as to the metrics, so that a report is a function of the ledger and a time.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from promotion.ledger import Ledger
from promotion.metrics.dora import DoraMetrics, compute
from promotion.metrics.reading import SKEW, records_since
from promotion.models import LedgerRecord

WEEK = dt.timedelta(days=7)
#: The records that put a build in an environment or refused to: the timeline's rows.
TimelineEvent = Literal["promoted", "rejected", "rolled_back"]
TIMELINE_EVENTS: frozenset[str] = frozenset({"promoted", "rejected", "rolled_back"})


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GateLine(_Frozen):
    gate: str
    passed: bool
    errored: bool
    reason: str


class ApprovalLine(_Frozen):
    approver: str
    decision: str
    counted: bool
    #: When the answer was recorded (its ``approval`` record); None when only the promoted
    #: record's summary of it was found (an answer recorded before the window's skew margin).
    at: dt.datetime | None


class TimelineEntry(_Frozen):
    seq: int
    at: dt.datetime
    event: TimelineEvent
    digest: str
    version: str | None
    actor: str
    reason: str
    gates: list[GateLine]
    approvals: list[ApprovalLine]


class WeekFigures(_Frozen):
    start: dt.datetime
    end: dt.datetime
    deployments: int
    lead_time_p50_seconds: float | None
    change_fail_rate: float | None


class CurrentState(_Frozen):
    environment: str
    digest: str
    version: str | None
    since: dt.datetime
    by: str
    age_seconds: float


class ServiceReport(_Frozen):
    service: str
    environment: str  # the one the DORA figures are about
    metrics: DoraMetrics
    weeks: list[WeekFigures]
    timeline: dict[str, list[TimelineEntry]]  # environment -> entries, oldest first
    current: list[CurrentState]  # in the pipeline's environment order; only those running a build
    records_read: int


class Report(_Frozen):
    generated_at: dt.datetime
    since: dt.datetime
    environment: str
    services: list[ServiceReport]

    @property
    def deployments(self) -> int:
        return sum(s.metrics.deployments for s in self.services)


def week_starts(since: dt.datetime, now: dt.datetime) -> list[dt.datetime]:
    """Seven-day buckets from ``since``; the last one ends at ``now`` (it may be shorter)."""
    count = max(1, math.ceil((now - since) / WEEK))
    return [since + i * WEEK for i in range(count)]


def weekly(
    records: list[LedgerRecord], service: str, environment: str, since: dt.datetime, now: dt.datetime
) -> list[WeekFigures]:
    weeks: list[WeekFigures] = []
    for i, start in enumerate(week_starts(since, now)):
        end = min(start + WEEK, now)
        # compute's window is closed at both ends: a deployment exactly on a boundary would count
        # in two weeks, so each week but the first leaves out its first instant.
        lo = start if i == 0 else start + dt.timedelta(microseconds=1)
        m = compute(records, service, environment, lo, end)
        weeks.append(
            WeekFigures(
                start=start,
                end=end,
                deployments=m.deployments,
                lead_time_p50_seconds=m.lead_time_p50_seconds,
                change_fail_rate=m.change_fail_rate,
            )
        )
    return weeks


def _gate_lines(gates: list[dict[str, object]]) -> list[GateLine]:
    lines = []
    for g in gates:
        reasons = g.get("reasons")
        reason = "; ".join(str(r) for r in reasons) if isinstance(reasons, list) else ""
        lines.append(
            GateLine(
                gate=str(g.get("gate", "?")),
                passed=g.get("passed") is True,
                errored=g.get("errored") is True,
                reason=reason,
            )
        )
    return lines


def _summarised_approvals(rec: LedgerRecord) -> list[ApprovalLine]:
    """The approvals a ``promoted`` record carries (details.approvals), without their times."""
    found = rec.details.get("approvals")
    if not isinstance(found, list):
        return []
    return [
        ApprovalLine(
            approver=str(a.get("approver", "?")),
            decision=str(a.get("decision", "?")),
            counted=a.get("counted") is True,
            at=None,
        )
        for a in found
        if isinstance(a, dict)
    ]


def timeline(
    records: list[LedgerRecord], since: dt.datetime, now: dt.datetime
) -> dict[str, list[TimelineEntry]]:
    """Promotions, rejections and rollbacks in ``[since, now]`` per environment, each with the
    answers recorded for its environment and digest since that pair's previous stage ended."""
    answers: dict[tuple[str, str], list[ApprovalLine]] = {}
    out: dict[str, list[TimelineEntry]] = {}
    for rec in sorted(records, key=lambda r: r.seq):
        if rec.environment is None:
            continue
        key = (rec.environment, str(rec.digest))
        if rec.event == "approval":
            answers.setdefault(key, []).append(
                ApprovalLine(
                    approver=rec.actor,
                    decision=str(rec.details.get("decision", "approve")),
                    counted=rec.details.get("counted") is True,
                    at=rec.at,
                )
            )
            continue
        if rec.event not in TIMELINE_EVENTS:
            continue
        approvals = answers.pop(key, [])
        if not approvals and rec.event == "promoted":
            approvals = _summarised_approvals(rec)
        if not since <= rec.at <= now:
            continue
        out.setdefault(rec.environment, []).append(
            TimelineEntry(
                seq=rec.seq,
                at=rec.at,
                event=rec.event,  # type: ignore[arg-type]  # checked against TIMELINE_EVENTS
                digest=str(rec.digest),
                version=rec.version,
                actor=rec.actor,
                reason=rec.reason,
                gates=_gate_lines(rec.gates),
                approvals=approvals,
            )
        )
    return out


def gather(
    ledger: Ledger,
    services: Sequence[str],
    environments: Sequence[str],
    environment: str,
    since: dt.datetime,
    now: dt.datetime,
    *,
    skew: dt.timedelta = SKEW,
) -> Report:
    """The report of ``services`` over ``[since, now]``; DORA figures for ``environment``."""
    found = []
    for service in services:
        window = records_since(ledger, service, since, skew=skew)
        tip = ledger.tip(service)
        current = [
            CurrentState(
                environment=env,
                digest=str(e.digest),
                version=e.version,
                since=e.since,
                by=e.by,
                age_seconds=max(0.0, (now - e.since).total_seconds()),
            )
            for env in environments
            if (e := tip.state.environments.get(env)) is not None
        ]
        by_env = timeline(window.records, since, now)
        found.append(
            ServiceReport(
                service=service,
                environment=environment,
                metrics=compute(window.records, service, environment, since, now),
                weeks=weekly(window.records, service, environment, since, now),
                timeline={env: by_env[env] for env in environments if env in by_env},
                current=current,
                records_read=window.read,
            )
        )
    return Report(generated_at=now, since=since, environment=environment, services=found)
