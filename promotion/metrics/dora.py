"""The five DORA metrics of one service in one environment over a window: pure arithmetic over
ledger records (oldest first), ``now`` passed in. Definitions and bands: promotion/metrics/bands.py.

What counts, precisely (the README's "Metrics" section says the same):

- a **deployment** is a ``promoted`` record of the environment with ``since <= at <= now``.
  Rollbacks (``rolled_back``) restore an earlier build: they are recoveries, not deployments.
- **deployment frequency**: deployments / window length in days.
- **change lead time**: ``at`` of the deployment minus the commit time it carries
  (``details.commit_time``, from the artifact's provenance); deployments without one are left
  out and counted (``lead_time_missing``). A commit time after the deployment (clocks that
  disagree) counts as 0 and is counted in ``clock_skewed``.
- a deployment **failed** when, before the next deployment of the environment, (a) a
  ``rolled_back`` record moves the environment away from it (``details.from`` is its digest):
  ``verification`` when the reason is a failed post-deploy verification, else ``rollback``; or
  (b) the sweep records ``flagged`` for its digest with the check ``gate_failed`` (a report
  attested later fails a gate: the build running there should not have been deployed) while it
  runs there; or (c) the next deployment is unplanned (a hotfix). Not failures: ``expired``
  evidence, and ``corrupted`` (the stored blob's bytes rotted in S3 after the deployment: a
  storage fault, not a change that failed; DORA counts deployments that need intervention). A
  deployment counts once however many of these follow it (a rollback of a rollback brings back
  a build already counted as failed; it does not add a failure).
- **change fail rate**: failed deployments / deployments.
- **failed deployment recovery time**: from the failed deployment to the first later record that
  puts another build in the environment (a rollback, the next deployment); a failed deployment
  not yet replaced is ``unrecovered`` and not in the figure. Negative spans (clock skew) count 0.
- **deployment rework rate**: deployments marked unplanned (``details.unplanned``: ``promote run
  --hotfix``, the webhook's ``unplanned: true``) / deployments.

Medians (p50) are the figures banded, as DORA reports them; p90 is given beside them.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from promotion.metrics import bands
from promotion.models import LedgerRecord

FailureKind = Literal["rollback", "verification", "flagged", "hotfix"]
#: Sweep checks that say the change running is bad (promotion/sweep/reevaluate.py). Not
#: ``corrupted``: that is the store's copy rotting after the deployment (promotion/sweep/verify.py).
FAILING_CHECKS = frozenset({"gate_failed"})
VERIFICATION_PREFIX = "verification failed"


class Failure(BaseModel):
    model_config = ConfigDict(frozen=True)

    seq: int  # of the failed deployment
    digest: str
    kind: FailureKind
    deployed_at: dt.datetime
    recovered_at: dt.datetime | None
    recovery_seconds: float | None
    #: The recovery record's time is before the deployment's (clocks that disagree): counted 0.
    clock_skewed: bool = False


class DoraMetrics(BaseModel):
    model_config = ConfigDict(frozen=True)

    service: str
    environment: str
    since: dt.datetime
    until: dt.datetime
    deployments: int
    deployment_frequency_per_day: float
    deployment_frequency_band: bands.Band
    lead_time_p50_seconds: float | None
    lead_time_p90_seconds: float | None
    lead_time_band: bands.Band | None
    lead_time_counted: int
    lead_time_missing: int
    clock_skewed: int
    failed_deployments: int
    change_fail_rate: float | None
    change_fail_rate_band: bands.Band | None
    recovery_time_p50_seconds: float | None
    recovery_time_p90_seconds: float | None
    recovery_time_band: bands.Band | None
    unrecovered: int
    unplanned_deployments: int
    rework_rate: float | None
    #: The 2024 report gives no bands for rework rate: always None (see bands.py).
    rework_rate_band: None = None
    failures: list[Failure]


def percentile(values: list[float], p: float) -> float | None:
    """Exact percentile with linear interpolation between closest ranks (p50 is the median)."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * p
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def parse_time(value: Any) -> dt.datetime | None:
    """A commit time as recorded (ISO 8601 with an offset); None when absent or unreadable."""
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    return parsed if parsed.tzinfo is not None else None


def is_unplanned(rec: LedgerRecord) -> bool:
    return rec.details.get("unplanned") is True


def _moves_away(rec: LedgerRecord, environment: str, digest: str) -> bool:
    """Whether ``rec`` puts another build in ``environment`` than ``digest``."""
    if rec.environment != environment or rec.event not in ("promoted", "rolled_back"):
        return False
    return str(rec.digest) != digest


def compute(
    records: list[LedgerRecord],
    service: str,
    environment: str,
    since: dt.datetime,
    now: dt.datetime,
) -> DoraMetrics:
    """The metrics of ``service`` in ``environment`` for deployments in ``[since, now]``.

    ``records`` are the ledger records from before ``since`` (any margin) to the tip, in seq order.
    """
    ordered = sorted((r for r in records if r.service == service), key=lambda r: r.seq)
    env_positions = [i for i, r in enumerate(ordered) if r.environment == environment]
    deployments = [
        i for i in env_positions if ordered[i].event == "promoted" and since <= ordered[i].at <= now
    ]
    lead: list[float] = []
    missing = skewed = 0
    failures: list[Failure] = []
    for i in deployments:
        dep = ordered[i]
        commit_time = parse_time(dep.details.get("commit_time"))
        if commit_time is None:
            missing += 1
        else:
            span = (dep.at - commit_time).total_seconds()
            if span < 0:
                skewed += 1
            lead.append(max(0.0, span))
        failure = _failure_of(ordered, i, environment)
        if failure is not None:
            failures.append(failure)
    n = len(deployments)
    days = max((now - since).total_seconds() / 86400, 1e-9)
    per_day = n / days
    recovered = [f.recovery_seconds for f in failures if f.recovery_seconds is not None]
    unplanned = sum(1 for i in deployments if is_unplanned(ordered[i]))
    lead_p50 = percentile(lead, 0.5)
    rec_p50 = percentile(recovered, 0.5)
    cfr = len(failures) / n if n else None
    return DoraMetrics(
        service=service,
        environment=environment,
        since=since,
        until=now,
        deployments=n,
        deployment_frequency_per_day=per_day,
        deployment_frequency_band=bands.frequency_band(per_day),
        lead_time_p50_seconds=lead_p50,
        lead_time_p90_seconds=percentile(lead, 0.9),
        lead_time_band=None if lead_p50 is None else bands.lead_time_band(dt.timedelta(seconds=lead_p50)),
        lead_time_counted=len(lead),
        lead_time_missing=missing,
        clock_skewed=skewed + sum(1 for f in failures if f.clock_skewed),
        failed_deployments=len(failures),
        change_fail_rate=cfr,
        change_fail_rate_band=None if cfr is None else bands.fail_rate_band(cfr),
        recovery_time_p50_seconds=rec_p50,
        recovery_time_p90_seconds=percentile(recovered, 0.9),
        recovery_time_band=None if rec_p50 is None else bands.recovery_band(dt.timedelta(seconds=rec_p50)),
        unrecovered=sum(1 for f in failures if f.recovered_at is None),
        unplanned_deployments=unplanned,
        rework_rate=unplanned / n if n else None,
        failures=failures,
    )


def _failure_of(ordered: list[LedgerRecord], i: int, environment: str) -> Failure | None:
    """How the deployment at ``ordered[i]`` failed, and when it was recovered, or None."""
    dep = ordered[i]
    digest = str(dep.digest)
    kind: FailureKind | None = None
    running = True  # whether the deployed build still runs in the environment
    recovered_at: dt.datetime | None = None
    for rec in ordered[i + 1 :]:
        if rec.event == "promoted" and rec.environment == environment:
            if kind is None and is_unplanned(rec):
                kind = "hotfix"
            if kind is not None and recovered_at is None and running:
                recovered_at = rec.at
            break  # the next deployment: what follows belongs to it
        if rec.event == "rolled_back" and rec.environment == environment:
            if str(rec.details.get("from", "")) == digest and running:
                if kind is None:
                    kind = "verification" if rec.reason.startswith(VERIFICATION_PREFIX) else "rollback"
            if _moves_away(rec, environment, digest):
                if kind is not None and recovered_at is None and running:
                    recovered_at = rec.at
                running = False
            else:
                running = True  # rolled back to it again (a rollback of a rollback)
        elif (
            rec.event == "flagged"
            and str(rec.digest) == digest
            and running
            and kind is None
            and rec.details.get("check") in FAILING_CHECKS
        ):
            kind = "flagged"
    if kind is None:
        return None
    span = None if recovered_at is None else (recovered_at - dep.at).total_seconds()
    return Failure(
        seq=dep.seq,
        digest=digest,
        kind=kind,
        deployed_at=dep.at,
        recovered_at=recovered_at,
        recovery_seconds=None if span is None else max(0.0, span),
        clock_skewed=span is not None and span < 0,
    )
