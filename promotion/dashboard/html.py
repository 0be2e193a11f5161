"""The dashboard as one self-contained HTML file: inline CSS and SVG, no script, no link out.

Every value that comes from the ledger (service names, versions, actors, reasons, gate names) is
HTML-escaped here and nowhere else, so a reason holding ``<script>`` shows as text. The page
also carries a Content-Security-Policy that forbids scripts and every network fetch: a second
wall should a value ever slip through unescaped.
"""

from __future__ import annotations

import datetime as dt
from html import escape

from promotion.config import format_duration
from promotion.dashboard.model import Report, ServiceReport, TimelineEntry
from promotion.dashboard.svg import bar_chart, line_chart

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d232a;background:#fff}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:19px;margin:28px 0 6px;border-top:2px solid #d5dae0;padding-top:14px}
h3{font-size:15px;margin:16px 0 6px}.muted{color:#5b6570}
table{border-collapse:collapse;margin:4px 0 10px}
td,th{border:1px solid #d5dae0;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f1f3f5}.pass{color:#17663a}.fail{color:#b3261e;font-weight:600}.error{color:#8a5a00;font-weight:600}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{border:1px solid #e3e6ea;background:#fcfcfd}
.axis{stroke:#8a939c}.tick{font-size:10px;fill:#5b6570}.bar{fill:#3f6fb5}.line{fill:none;stroke:#b5573f;stroke-width:2}
.point{fill:#b5573f}figure{margin:0}figcaption{font-size:12px;color:#5b6570}.none{font-style:italic;color:#5b6570}code{font-size:12px}
"""


def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def _when(at: dt.datetime | None) -> str:
    return "" if at is None else at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%MZ")


def _span(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    # Minutes are enough on a dashboard; the CLI and --json give the seconds.
    return format_duration(dt.timedelta(seconds=round(seconds / 60) * 60))


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def _figures(s: ServiceReport) -> str:
    m = s.metrics
    rows = [
        ("deployment frequency", f"{m.deployment_frequency_per_day:.2f}/day", m.deployment_frequency_band),
        ("change lead time p50", _span(m.lead_time_p50_seconds), m.lead_time_band),
        ("change fail rate", _pct(m.change_fail_rate), m.change_fail_rate_band),
        ("recovery time p50", _span(m.recovery_time_p50_seconds), m.recovery_time_band),
        ("rework rate", _pct(m.rework_rate), None),
    ]
    body = "".join(
        f"<tr><td>{_e(name)}</td><td class=figure>{_e(fig)}</td><td>{_e(band or '-')}</td></tr>"
        for name, fig, band in rows
    )
    return f"<table class=figures><tr><th>metric</th><th>figure</th><th>DORA band</th></tr>{body}</table>"


def _charts(s: ServiceReport) -> str:
    labels = [w.start.strftime("%m-%d") for w in s.weeks]
    deployments = bar_chart(
        f"Deployments per week to {s.environment}",
        labels,
        [float(w.deployments) for w in s.weeks],
        lambda v: f"{v:g}",
    )
    lead = line_chart(
        "Change lead time p50 per week (hours)",
        labels,
        [None if w.lead_time_p50_seconds is None else w.lead_time_p50_seconds / 3600 for w in s.weeks],
        lambda v: f"{v:.1f}h",
    )
    fail = line_chart(
        "Change fail rate per week",
        labels,
        [w.change_fail_rate for w in s.weeks],
        lambda v: f"{v * 100:.0f}%",
    )
    # The svg's <title> is only a tooltip: each chart also gets a caption a person reads.
    charts = [
        ("deployments", f"Deployments per week to {s.environment}", deployments),
        ("lead-time", "Change lead time p50 per week", lead),
        ("fail-rate", "Change fail rate per week", fail),
    ]
    figures = "".join(
        f'<figure data-chart="{key}"><figcaption>{_e(caption)}</figcaption>{svg}</figure>'
        for key, caption, svg in charts
    )
    return f"<div class=charts>{figures}</div>"


def _current(s: ServiceReport) -> str:
    if not s.current:
        return "<p class=none>no build deployed anywhere yet</p>"
    rows = "".join(
        f"<tr><td>{_e(c.environment)}</td><td>{_e(c.version or '-')}</td>"
        f"<td><code>{_e(c.digest[:19])}</code></td>"
        f"<td>{_e(_when(c.since))}</td><td class=age>{_e(_span(c.age_seconds))}</td><td>{_e(c.by)}</td></tr>"
        for c in s.current
    )
    return (
        "<table class=current><tr><th>environment</th><th>version</th><th>digest</th><th>since</th>"
        f"<th>age</th><th>by</th></tr>{rows}</table>"
    )


def _gates(entry: TimelineEntry) -> str:
    if not entry.gates:
        return "-"
    out = []
    for g in entry.gates:
        verdict, cls = (
            ("pass", "pass") if g.passed else (("ERROR", "error") if g.errored else ("FAIL", "fail"))
        )
        reason = "" if g.passed or not g.reason else f": {_e(g.reason)}"
        out.append(f"<div class={cls}>{_e(g.gate)} {verdict}{reason}</div>")
    return "".join(out)


def _approvals(entry: TimelineEntry) -> str:
    if not entry.approvals:
        return "-"
    out = []
    for a in entry.approvals:
        verb = "approved" if a.decision == "approve" else "rejected"
        when = f" {_e(_when(a.at))}" if a.at is not None else ""
        refused = "" if a.counted else " (not counted)"
        out.append(f"<div class=approval>{_e(a.approver)} {verb}{when}{refused}</div>")
    return "".join(out)


def _timeline(s: ServiceReport) -> str:
    if not s.timeline:
        return "<p class=none>no promotions in this window</p>"
    parts = []
    for env, entries in s.timeline.items():
        rows = "".join(
            f"<tr class=event-{_e(e.event)}><td>{_e(_when(e.at))}</td>"
            f"<td>{_e(e.event.replace('_', ' '))}</td>"
            f"<td>{_e(e.version or '-')} <code>{_e(e.digest[:19])}</code></td><td>{_e(e.actor)}</td>"
            f"<td>{_approvals(e)}</td><td>{_gates(e)}</td><td>{_e(e.reason)}</td></tr>"
            for e in entries
        )
        parts.append(
            f'<h3>Timeline: {_e(env)}</h3><table class=timeline data-environment="{_e(env)}">'
            "<tr><th>when</th><th>event</th><th>build</th><th>by</th><th>approvals</th><th>gates</th><th>reason</th></tr>"
            f"{rows}</table>"
        )
    return "".join(parts)


def _service(s: ServiceReport) -> str:
    m = s.metrics
    days = (m.until - m.since).total_seconds() / 86400
    if m.deployments:
        head = f"{m.deployments} deployment(s) to {_e(s.environment)} in {days:g} days"
        figures = _figures(s) + _charts(s)
    else:
        head = f"no deployments to {_e(s.environment)} in {days:g} days"
        figures = ""
    return (
        f'<section class=service data-service="{_e(s.service)}"><h2>{_e(s.service)}</h2>'
        f"<p class=summary>{head}</p>{figures}<h3>Current state</h3>{_current(s)}{_timeline(s)}</section>"
    )


def render(report: Report) -> str:
    """The whole page: one string, UTF-8 when written."""
    title = f"Delivery report since {_when(report.since)}"
    services = "".join(_service(s) for s in report.services) or "<p class=none>no services</p>"
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1><p class=muted>generated {_e(_when(report.generated_at))} from the ledger;"
        f" DORA figures for {_e(report.environment)}</p>{services}</body></html>\n"
    )
