"""Reading the ledger records of a time window only: from the tip backwards, in batches.

A ledger is numbered 1..N in append order and each record carries its time (``at``), so the
records since T are a suffix of the ledger: the reader finds the tip (O(1) requests, see
Ledger.tip), then reads batches of ``batch`` records backwards in parallel until it meets a
record written before ``since - skew``. Cost: O(records in the window + skew margin + one
batch), whatever the length of the ledger; no listing of the ledger folder.

``skew``: records are appended by different machines (CI, runners, the sweep) whose clocks may
disagree, so ``at`` is not strictly increasing along the chain. Stopping at the first record
older than ``since`` could miss a later record whose writer's clock was behind; the reader goes
on until a record older than ``since - skew`` (default 1 hour, far more than NTP-kept clocks
drift) and the caller filters by ``at``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from promotion.ledger import Ledger
from promotion.metrics.dora import DoraMetrics, compute
from promotion.models import LedgerRecord

SKEW = dt.timedelta(hours=1)
#: First batch size; each next batch doubles, up to MAX_BATCH (few round trips for a long
#: window, few extra reads for a short one).
BATCH = 32
MAX_BATCH = 1024


@dataclass(frozen=True)
class WindowRead:
    """The records read (oldest first) and how many GETs that took (for the benchmark)."""

    records: list[LedgerRecord]
    read: int


def records_since(
    ledger: Ledger,
    service: str,
    since: dt.datetime,
    *,
    skew: dt.timedelta = SKEW,
    batch: int = BATCH,
) -> WindowRead:
    """Records of ``service`` from the first one written at or after ``since - skew`` to the tip."""
    tip = ledger.tip(service)
    if tip.record is None:
        return WindowRead(records=[], read=0)
    stop_before = since - skew
    collected: list[LedgerRecord] = [tip.record]
    read = 1
    if tip.record.at < stop_before:
        return WindowRead(records=[], read=read)
    hi = tip.seq - 1
    done = False
    while hi >= 1 and not done:
        lo = max(1, hi - batch + 1)
        chunk = ledger.read_range(service, lo, hi)
        read += hi - lo + 1
        for rec in reversed(chunk):
            if rec.at < stop_before:
                done = True
                break
            collected.append(rec)
        hi = lo - 1
        batch = min(batch * 2, MAX_BATCH)
    collected.reverse()
    return WindowRead(records=collected, read=read)


def measure(
    ledger: Ledger,
    service: str,
    environment: str,
    since: dt.datetime,
    now: dt.datetime,
    *,
    skew: dt.timedelta = SKEW,
) -> DoraMetrics:
    """The DORA metrics of ``service`` in ``environment`` over ``[since, now]``, from the ledger."""
    window = records_since(ledger, service, since, skew=skew)
    return compute(window.records, service, environment, since, now)
