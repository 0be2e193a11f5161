"""``promote metrics`` text output: one table per service and environment, figure and band."""

from __future__ import annotations

import datetime as dt

from promotion.config import format_duration
from promotion.metrics.dora import DoraMetrics


def _span(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(dt.timedelta(seconds=seconds))


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def render(m: DoraMetrics) -> str:
    """A table of the five figures with their bands, and what was left out and why."""
    days = (m.until - m.since).total_seconds() / 86400
    head = (
        f"{m.service} / {m.environment}: {m.deployments} deployment(s) in {days:g} days"
        f" since {m.since:%Y-%m-%d %H:%M}Z"
    )
    lead_note = f"{m.lead_time_counted} counted"
    if m.lead_time_missing:
        lead_note += f", {m.lead_time_missing} without a commit time left out"
    fail_note = f"{m.failed_deployments} of {m.deployments}"
    if m.failures:
        kinds = sorted({f.kind for f in m.failures})
        fail_note += f" ({', '.join(kinds)})"
    rec_note = f"{len(m.failures) - m.unrecovered} recovered"
    if m.unrecovered:
        rec_note += f", {m.unrecovered} not yet"
    per_day = f"{m.deployment_frequency_per_day:.2f}/day"
    rows = [
        ("deployment frequency", per_day, m.deployment_frequency_band, ""),
        ("change lead time p50", _span(m.lead_time_p50_seconds), m.lead_time_band, lead_note),
        ("change fail rate", _pct(m.change_fail_rate), m.change_fail_rate_band, fail_note),
        ("recovery time p50", _span(m.recovery_time_p50_seconds), m.recovery_time_band, rec_note),
        ("rework rate", _pct(m.rework_rate), None, f"{m.unplanned_deployments} unplanned; no DORA band"),
    ]
    lines = [head]
    for name, figure, band, note in rows:
        lines.append(f"  {name:<24}{figure:>12}  {band or '-':<7} {note}".rstrip())
    if m.clock_skewed:
        lines.append(f"  {m.clock_skewed} span(s) negative by the records' clocks, counted as 0")
    return "\n".join(lines)
