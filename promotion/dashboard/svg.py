"""Small hand-written SVG charts for the dashboard: a bar chart and a line chart.

Hand-written rather than a charting library: two chart kinds of a few dozen elements each, no
dependency, no script and no external resource in the output (the page must open offline).
Every text is escaped; every number is formatted by us. Each bar is a ``<rect class="bar">``
and each point a ``<circle class="point">`` (what the Chromium test counts); a week without a
value (no deployment, so no lead time) has no point and breaks the line.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape

WIDTH, HEIGHT = 560, 180
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 14, 34


def _frame(title: str, labels: Sequence[str], top_label: str, body: list[str]) -> str:
    plot_w = WIDTH - LEFT - RIGHT
    n = max(1, len(labels))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{WIDTH}" '
        f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" y2="{HEIGHT - BOTTOM}"'
        ' class="axis"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}" class="axis"/>',
        f'<text x="{LEFT - 4}" y="{TOP + 4}" text-anchor="end" class="tick">{escape(top_label)}</text>',
        f'<text x="{LEFT - 4}" y="{HEIGHT - BOTTOM}" text-anchor="end" class="tick">0</text>',
    ]
    # At most ~8 date labels, so that they do not overlap on a long window.
    step = max(1, math.ceil(n / 8))
    for i, label in enumerate(labels):
        if i % step == 0:
            x = LEFT + plot_w * (i + 0.5) / n
            parts.append(
                f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" class="tick">'
                f"{escape(label)}</text>"
            )
    parts.extend(body)
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(title: str, labels: Sequence[str], values: Sequence[float], fmt: Callable[[float], str]) -> str:
    """One bar per value, scaled to the largest; each bar's ``<title>`` says its label and value."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = max(values, default=0.0) or 1.0
    n = max(1, len(values))
    slot = plot_w / n
    body = []
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        h = plot_h * v / top
        x = LEFT + slot * i + slot * 0.15
        body.append(
            f'<rect class="bar" x="{x:.1f}" y="{HEIGHT - BOTTOM - h:.1f}" width="{slot * 0.7:.1f}" '
            f'height="{h:.1f}"><title>{escape(label)}: {escape(fmt(v))}</title></rect>'
        )
    return _frame(title, labels, fmt(top), body)


def line_chart(
    title: str, labels: Sequence[str], values: Sequence[float | None], fmt: Callable[[float], str]
) -> str:
    """A point per known value, joined where consecutive; None leaves a gap."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    known = [v for v in values if v is not None]
    top = max(known, default=0.0) or 1.0
    n = max(1, len(values))
    body = []
    segment: list[str] = []
    segments: list[list[str]] = []
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        if v is None:
            if segment:
                segments.append(segment)
            segment = []
            continue
        x = LEFT + plot_w * (i + 0.5) / n
        y = HEIGHT - BOTTOM - plot_h * v / top
        segment.append(f"{x:.1f},{y:.1f}")
        body.append(
            f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="3.5"><title>{escape(label)}: '
            f"{escape(fmt(v))}</title></circle>"
        )
    if segment:
        segments.append(segment)
    lines = [f'<polyline class="line" points="{" ".join(s)}"/>' for s in segments if len(s) > 1]
    return _frame(title, labels, fmt(top), lines + body)
