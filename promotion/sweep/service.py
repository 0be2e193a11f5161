"""One service swept (state, index, re-check, drift, decisions, references), and every service in parallel."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from promotion.errors import PromotionError
from promotion.models import utcnow
from promotion.store import ArtifactStore
from promotion.sweep.decisions import decide_promotions
from promotion.sweep.drift import find_drift
from promotion.sweep.index import load_index, save_index, update_index
from promotion.sweep.records import ArtifactRecords
from promotion.sweep.reevaluate import reevaluate_attested
from promotion.sweep.report import ServiceRefs, ServiceReport
from promotion.sweep.retention import fill_evidence, service_refs
from promotion.sweep.verify import flag_findings, verify_digests


def sweep_service(
    store: ArtifactStore, service: str, *, now: dt.datetime | None = None, dry_run: bool = False
) -> ServiceReport:
    """Re-verify, detect drift and decide promotions for one service (see :mod:`promotion.sweep`).

    Writes only ``flagged`` ledger events and the history index, and neither in dry run. Drift
    is found here and corrected by :func:`correct_drift`. Never raises for what it finds: errors
    are in the report (and make its references incomplete, so retention deletes nothing).
    """
    now = now or utcnow()
    report = ServiceReport(service=service, now=now, dry_run=dry_run)
    pipeline = store.pipeline
    records = ArtifactRecords(store, service)
    try:
        tip = store.ledger.tip(service)
        state = tip.state
        report.ledger_seq = tip.seq
        old = load_index(store, service)
        index, report.index = update_index(store, service, tip, old)
        filled = fill_evidence(index, records)
        if not dry_run and tip.seq and (filled or old is None or old != index):
            try:
                save_index(store, index)
            except PromotionError as exc:
                report.index += f" (not saved: {exc})"
    except PromotionError as exc:
        report.errors.append(f"ledger: {type(exc).__name__}: {exc}")
        report.refs = ServiceRefs(complete=False, note=f"ledger unreadable: {exc}")
        return report
    try:
        checks = verify_digests(store, pipeline, state, records, now)
        checks += reevaluate_attested(store, pipeline, state, records, now, checks)
        report.checks = flag_findings(store, service, state, checks, dry_run=dry_run)
    except PromotionError as exc:
        report.errors.append(f"re-verify: {type(exc).__name__}: {exc}")
    bad = {str(c.digest): c.detail for c in report.checks if c.outcome in ("corrupted", "missing")}
    report.drift = find_drift(store, pipeline, service, state, bad, report.errors)
    report.decisions = decide_promotions(
        store, pipeline, state, index, records, report.checks, now, report.errors
    )
    report.refs = service_refs(service, state, index, records)
    return report


def _guarded(store: ArtifactStore, service: str, now: dt.datetime, dry_run: bool) -> ServiceReport:
    try:
        return sweep_service(store, service, now=now, dry_run=dry_run)
    except Exception as exc:  # noqa: BLE001 - one broken service must not stop the others
        return ServiceReport(
            service=service,
            now=now,
            dry_run=dry_run,
            errors=[f"unexpected {type(exc).__name__}: {exc}"],
            refs=ServiceRefs(complete=False, note="the sweep of this service failed"),
        )


def sweep_services(
    store: ArtifactStore,
    *,
    now: dt.datetime | None = None,
    dry_run: bool = False,
    services: Sequence[str] | None = None,
    max_parallel: int | None = None,
) -> list[ServiceReport]:
    """:func:`sweep_service` for every service, at most ``sweep.max_parallel`` at once."""
    now = now or utcnow()
    names = list(services) if services is not None else [s.name for s in store.pipeline.services]
    workers = max(1, min(max_parallel or store.pipeline.sweep.max_parallel, len(names) or 1))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sweep") as pool:
        return list(pool.map(lambda s: _guarded(store, s, now, dry_run), names))
