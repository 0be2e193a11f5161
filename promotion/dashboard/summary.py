"""The dashboard's figures as the nightly sweep writes them to Prefect: a table (a row per
service) and a markdown with the same figures and the current state. Pure: flows/sweep.py writes
them as artifacts. Markdown cells from the ledger are escaped as the stage reports' are."""

from __future__ import annotations

import datetime as dt
from typing import Any

from promotion.config import format_duration
from promotion.dashboard.model import Report, ServiceReport
from promotion.report import markdown_cell

#: The window of the sweep's summary: ``promote report``'s default.
WINDOW = dt.timedelta(days=90)


def _span(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(dt.timedelta(seconds=round(seconds / 60) * 60))


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def _running(s: ServiceReport) -> str:
    here = next((c for c in s.current if c.environment == s.environment), None)
    if here is None:
        return "-"
    return f"{here.version or here.digest[:19]} for {_span(here.age_seconds)}"


def rows(report: Report) -> list[dict[str, Any]]:
    """A row per service: the figures of the window in the report's environment."""
    return [
        {
            "service": s.service,
            "environment": s.environment,
            "deployments": s.metrics.deployments,
            "per_day": round(s.metrics.deployment_frequency_per_day, 3),
            "lead_time_p50": _span(s.metrics.lead_time_p50_seconds),
            "change_fail_rate": _pct(s.metrics.change_fail_rate),
            "recovery_time_p50": _span(s.metrics.recovery_time_p50_seconds),
            "running": _running(s),
        }
        for s in report.services
    ]


def markdown(report: Report) -> str:
    days = (report.generated_at - report.since).total_seconds() / 86400
    lines = [
        f"# Delivery summary: {days:g} days to {report.generated_at:%Y-%m-%d %H:%M}Z,"
        f" DORA figures for {markdown_cell(report.environment)}",
        "",
        "| service | deployments | per day | lead time p50 | change fail rate | recovery p50 | running |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows(report):
        lines.append(
            f"| {markdown_cell(r['service'])} | {r['deployments']} | {r['per_day']:.2f} | "
            f"{r['lead_time_p50']} | {r['change_fail_rate']} | {r['recovery_time_p50']} | "
            f"{markdown_cell(r['running'])} |"
        )
    lines += ["", "`promote report -o report.html` draws the same figures per week, with the timelines."]
    return "\n".join(lines) + "\n"
