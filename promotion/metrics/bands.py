"""DORA performance bands, from the 2024 Accelerate State of DevOps report's clusters.

Definitions (dora.dev, "DORA's software delivery metrics", and the 2024 report): change lead
time (commit to running in production), deployment frequency, change fail rate (share of
deployments that need immediate intervention: a rollback, a hotfix), failed deployment recovery
time, and, new in 2024, deployment rework rate (share of deployments that were unplanned, made
to fix a user-facing problem).

Why the 2024 clusters and not the older fixed elite/high/medium/low bands: they are the current
research; the older bands (2019-2021) are thresholds the report stopped publishing. The clusters
are groups found in survey answers, each described by a range or a typical value:

==========  ===========================  =================  =========  ===================
cluster     deployment frequency         change lead time   fail rate  recovery time
==========  ===========================  =================  =========  ===================
elite       on demand (several a day)    < 1 day            5 %        < 1 hour
high        daily to weekly              1 day to 1 week    20 %       < 1 day
medium      weekly to monthly            1 week to 1 month  10 %       < 1 day
low         monthly to every 6 months    1 to 6 months      40 %       1 week to 1 month
==========  ===========================  =================  =========  ===================

How a figure is put in a band (our rules, since clusters are not thresholds):

- frequency, lead time: the best cluster whose range the figure meets (more than one deployment
  a day is elite; at least one a week high; at least one in 30 days medium; fewer: low). Lead
  time: under 1 day elite, up to 7 days high, up to 30 days medium, longer low.
- recovery time: under 1 hour elite, under 1 day high (medium shares high's range, so a figure
  there is called high), longer low.
- change fail rate: the typical values are not ordered (high 20 %, medium 10 %), so no range
  can be read off them; the rate gets the cluster whose typical value is nearest (a tie goes to
  the better cluster). That is how a point is assigned to clusters described by their centres.
- rework rate: the 2024 report introduced it but gives no per-cluster values, so no band is
  given (``None``), rather than one invented here.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

Band = Literal["elite", "high", "medium", "low"]

DAY = dt.timedelta(days=1)

#: The 2024 clusters' typical change fail rates, best cluster first.
FAIL_RATE_CENTRES: tuple[tuple[Band, float], ...] = (
    ("elite", 0.05),
    ("high", 0.20),
    ("medium", 0.10),
    ("low", 0.40),
)


def frequency_band(per_day: float) -> Band:
    """Deployments per day over the window."""
    if per_day > 1:
        return "elite"
    if per_day >= 1 / 7:
        return "high"
    if per_day >= 1 / 30:
        return "medium"
    return "low"


def lead_time_band(median: dt.timedelta) -> Band:
    if median < DAY:
        return "elite"
    if median <= 7 * DAY:
        return "high"
    if median <= 30 * DAY:
        return "medium"
    return "low"


def recovery_band(median: dt.timedelta) -> Band:
    if median < dt.timedelta(hours=1):
        return "elite"
    if median < DAY:
        return "high"
    return "low"


def fail_rate_band(rate: float) -> Band:
    """The cluster whose typical rate is nearest; ties go to the better (earlier) cluster."""
    best: tuple[float, Band] | None = None
    for band, centre in FAIL_RATE_CENTRES:
        gap = abs(rate - centre)
        if best is None or gap < best[0] - 1e-12:
            best = (gap, band)
    assert best is not None
    return best[1]
