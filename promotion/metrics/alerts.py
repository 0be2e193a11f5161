"""Metric alerts (issue 11 item 4): the nightly sweep checks each service's ``alerts`` thresholds
against its DORA metrics and says what changed since the last night: a threshold **crossed**
(it was not before) or **recovered** (it was, and is no longer).

Which thresholds are crossed now is remembered in ``{prefix}metrics/alerts/{service}.json``, so
that a crossing is told once, not every night while it lasts, and that this survives restarts.
That object is derived state, not a verdict: the metrics themselves are recomputed from the
ledger every night. Losing it (deleted, unreadable) costs at most one repeat of a "crossed" for
a threshold still crossed; it is written only after the events were emitted, so a sweep that
dies in between tells again rather than never (at least once, not at most once).

A figure that cannot be computed (no deployments in the window: no fail rate, no lead time) is
neither crossed nor recovered: it keeps the state it had. Deployment frequency is always
computed (0 with no deployments), so "deployment_frequency_min" is crossed by an idle window.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from promotion.config import MetricAlerts, format_duration
from promotion.ledger import Ledger
from promotion.metrics.dora import DoraMetrics
from promotion.metrics.reading import measure
from promotion.s3 import S3

MetricName = Literal[
    "change_fail_rate", "lead_time_p50", "recovery_time_p50", "deployment_frequency_min", "rework_rate"
]


class Reading(BaseModel):
    """One threshold against its figure: ``value`` None when the figure cannot be computed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: MetricName
    value: float | None
    threshold: float
    crossed: bool | None  # None: unknown (no figure)
    #: "above" for rates and times (crossed when higher), "below" for the frequency.
    direction: Literal["above", "below"]

    def describe(self) -> str:
        def show(x: float) -> str:
            if self.metric in ("lead_time_p50", "recovery_time_p50"):
                return format_duration(dt.timedelta(seconds=x))
            if self.metric == "deployment_frequency_min":
                return f"{x:.3g}/day"
            return f"{x * 100:.1f}%"

        value = "-" if self.value is None else show(self.value)
        return f"{self.metric} {value} ({self.direction} {show(self.threshold)} crosses)"


class CrossedEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    since: dt.datetime
    value: float | None
    threshold: float


class Transition(BaseModel):
    """A change to tell: ``promotion.metric.crossed`` or ``promotion.metric.recovered``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["crossed", "recovered"]
    service: str
    environment: str
    window_days: float
    reading: Reading
    band: str | None
    at: dt.datetime  # the sweep that found it
    #: The same for every sweep that finds this transition (one that died before saving the state
    #: finds it again): a crossing is named by the last recovery before it, a recovery by the
    #: crossing it ends. The webhook-id and the "told" marker derive from it.
    transition_id: str


class AlertState(BaseModel):
    """What is crossed now, per metric, as of the last sweep."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    service: str
    environment: str
    crossed: dict[MetricName, CrossedEntry] = {}
    #: When each metric last recovered: what tells one crossing of it from the next.
    recovered: dict[MetricName, dt.datetime] = {}
    #: Transitions some webhook owner has not received (a POST failed): the next sweep sends
    #: them again (flows/sweep.py), as a failed incident is told again by the next retry.
    unsent: list[Transition] = []


def readings(m: DoraMetrics, alerts: MetricAlerts) -> list[Reading]:
    """Each configured threshold against the figure it watches."""

    def above(metric: MetricName, value: float | None, threshold: float) -> Reading:
        return Reading(
            metric=metric,
            value=value,
            threshold=threshold,
            crossed=None if value is None else value > threshold,
            direction="above",
        )

    out: list[Reading] = []
    if alerts.change_fail_rate is not None:
        out.append(above("change_fail_rate", m.change_fail_rate, alerts.change_fail_rate))
    if alerts.lead_time_p50 is not None:
        out.append(above("lead_time_p50", m.lead_time_p50_seconds, alerts.lead_time_p50.total_seconds()))
    if alerts.recovery_time_p50 is not None:
        limit = alerts.recovery_time_p50.total_seconds()
        out.append(above("recovery_time_p50", m.recovery_time_p50_seconds, limit))
    if alerts.rework_rate is not None:
        out.append(above("rework_rate", m.rework_rate, alerts.rework_rate))
    if alerts.deployment_frequency_min is not None:
        per_day = m.deployment_frequency_per_day
        out.append(
            Reading(
                metric="deployment_frequency_min",
                value=per_day,
                threshold=alerts.deployment_frequency_min,
                crossed=per_day < alerts.deployment_frequency_min,
                direction="below",
            )
        )
    return out


def _band(m: DoraMetrics, metric: MetricName) -> str | None:
    return {
        "change_fail_rate": m.change_fail_rate_band,
        "lead_time_p50": m.lead_time_band,
        "recovery_time_p50": m.recovery_time_band,
        "deployment_frequency_min": m.deployment_frequency_band,
        "rework_rate": None,
    }[metric]


def transitions(
    previous: AlertState, m: DoraMetrics, alerts: MetricAlerts, now: dt.datetime
) -> tuple[list[Transition], AlertState]:
    """What changed since ``previous``, and the state to remember. Pure.

    A threshold no longer configured is dropped from the state without a "recovered".
    """
    told: list[Transition] = []
    crossed: dict[MetricName, CrossedEntry] = {}
    recovered = dict(previous.recovered)
    window_days = (m.until - m.since).total_seconds() / 86400
    for r in readings(m, alerts):
        was = previous.crossed.get(r.metric)
        if r.crossed is None:
            if was is not None:
                crossed[r.metric] = was  # no figure tonight: keep what was known
            continue
        if r.crossed:
            crossed[r.metric] = was or CrossedEntry(since=now, value=r.value, threshold=r.threshold)
        if r.crossed != (was is not None):
            where = f"{m.service}:{m.environment}:{r.metric}"
            if was is None:
                last = previous.recovered.get(r.metric)
                transition_id = f"{where}:crossed:after:{last.isoformat() if last else 'none'}"
            else:
                transition_id = f"{where}:recovered:since:{was.since.isoformat()}"
                recovered[r.metric] = now
            told.append(
                Transition(
                    kind="crossed" if r.crossed else "recovered",
                    service=m.service,
                    environment=m.environment,
                    window_days=window_days,
                    reading=r,
                    band=_band(m, r.metric),
                    at=now,
                    transition_id=transition_id,
                )
            )
    state = AlertState(
        service=m.service,
        environment=m.environment,
        crossed=crossed,
        recovered=recovered,
        unsent=previous.unsent,
    )
    return told, state


def state_key(s3: S3, service: str) -> str:
    return s3.key("metrics", "alerts", f"{service}.json")


def load_state(s3: S3, service: str, environment: str) -> AlertState:
    """The remembered state; empty when absent, unreadable, or about another environment."""
    body = s3.get(state_key(s3, service))
    empty = AlertState(service=service, environment=environment)
    if body is None:
        return empty
    try:
        state = AlertState.model_validate_json(body)
    except ValidationError:
        return empty
    return state if (state.service, state.environment) == (service, environment) else empty


def save_state(s3: S3, state: AlertState) -> None:
    s3.put(
        state_key(s3, state.service),
        state.model_dump_json().encode(),
        content_type="application/json",
    )


def check_service(
    s3: S3, ledger: Ledger, service: str, alerts: MetricAlerts, now: dt.datetime
) -> tuple[list[Transition], AlertState]:
    """Tonight's transitions of one service and the state to save once they were told."""
    m = measure(ledger, service, alerts.environment, now - alerts.window, now)
    previous = load_state(s3, service, alerts.environment)
    return transitions(previous, m, alerts, now)
