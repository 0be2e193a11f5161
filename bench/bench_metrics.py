"""Benchmark ``promote metrics`` (DORA metrics from the ledger) on a 10,000-record ledger in SeaweedFS.

Run it from the repository root::

    .venv/bin/python bench/bench_metrics.py                # 10,000 records, windows 7d 30d 90d, 3 repeats
    .venv/bin/python bench/bench_metrics.py --quick        # 2,000 records, 1 repeat
    .venv/bin/python bench/bench_metrics.py --records 10000 --windows 30d --out /tmp/metrics.json
    .venv/bin/python bench/bench_metrics.py --report       # and the time of ``promote report``

It starts its own SeaweedFS (:class:`promotion.local_s3.LocalS3`), seeds one service's ledger (not
timed) and times, side by side in the same run (:func:`_common.paired`: alternating which goes
first):

* ours: ``promotion.metrics.reading.measure`` - the tip, then batches read backwards until a
  record older than the window (less the 1 h skew margin): O(records in the window).
* baseline: the same arithmetic (``promotion.metrics.dora.compute``) over ``Ledger.records``,
  which lists and reads the whole ledger: what a reader without the window logic does.

With ``--report``, also ``promote report``'s work (promotion.dashboard: gather the window and its
weekly figures, timelines and state, render the HTML) against ``measure`` as its baseline, paired
the same way: what the dashboard costs beyond the figures ``promote metrics`` prints.

Both start from a fresh ``Ledger`` (no cached tip). Figures: wall time per call (median of the
repeats), S3 requests per call (botocore ``after-call`` on the store's client, by operation in
the JSON), records read. A check fails (exit 1) when the two sides disagree on the metrics.

What is seeded: ``--records`` records over 400 days (one every ~58 minutes at 10,000), in a
cycle of five: ``published``, ``promoted`` to dev, to staging, to prod (with a commit time 3 h
earlier; every 11th unplanned), then a ``rolled_back`` of prod (every 7th cycle) or an
``attested``. The records are the bytes ``Ledger.append`` writes (chained, with their state),
put by 16 threads, and the head hint written last; ``Ledger.verify`` is not run on them (it would
read them all once more).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _common import (
    RESULTS_DIR,
    S3RequestCounter,
    exit_on_sigterm,
    fill_defaults,
    load_and_total_line,
    machine_facts,
    median,
    paired,
    write_results,
)

from promotion.config import parse_duration, parse_pipeline
from promotion.dashboard.html import render
from promotion.dashboard.model import gather
from promotion.digest import Digest
from promotion.ledger import HEAD, Ledger
from promotion.local_s3 import LocalS3
from promotion.metrics.dora import DoraMetrics, compute
from promotion.metrics.reading import measure
from promotion.models import LedgerRecord, LedgerState, apply_event
from promotion.store import ArtifactStore
from tests.local_servers import aws_credentials  # on the path through _common

SERVICE = "api"
SPAN = dt.timedelta(days=400)
PIPELINE = """
store: {{endpoint_url: {endpoint}, bucket: {bucket}, prefix: {prefix}}}
services: [{{name: api}}]
environments: [{{name: dev}}, {{name: staging}}, {{name: prod}}]
"""


def build_records(n: int, now: dt.datetime) -> list[tuple[int, bytes]]:
    """``n`` chained records as Ledger.append would write them, oldest ``now - SPAN``."""
    out: list[tuple[int, bytes]] = []
    state = LedgerState()
    prev: Digest | None = None
    step = SPAN / n
    deployed: list[Digest] = []
    build = Digest.of_bytes(b"0")
    for i in range(n):
        seq = i + 1
        at = now - SPAN + step * i
        k, cycle = i % 5, i // 5
        fields: dict[str, Any] = {}
        if k == 0:
            build = Digest.of_bytes(f"build-{cycle}".encode())
            fields = {"event": "published", "digest": build}
        elif k in (1, 2, 3):
            env = ("dev", "staging", "prod")[k - 1]
            details: dict[str, Any] = {"unplanned": k == 3 and cycle % 11 == 0}
            if k == 3:
                details["commit_time"] = (at - dt.timedelta(hours=3)).isoformat()
                deployed.append(build)
            fields = {"event": "promoted", "digest": build, "environment": env, "details": details}
        elif cycle % 7 == 0 and len(deployed) >= 2:
            fields = {
                "event": "rolled_back",
                "digest": deployed[-2],
                "environment": "prod",
                "reason": "manual",
                "details": {"from": str(deployed[-1])},
            }
            deployed.append(deployed[-2])
        else:
            fields = {"event": "attested", "digest": build, "details": {"evidence": [], "via": "attest"}}
        draft = LedgerRecord(
            seq=seq, prev=prev, service=SERVICE, actor="bench", at=at, idempotency_id=f"bench-{seq}",
            state=LedgerState(), **fields,
        )  # fmt: skip
        rec = draft.model_copy(update={"state": apply_event(state, draft)})
        state = rec.state
        body = rec.canonical_bytes()
        prev = Digest.of_bytes(body)
        out.append((seq, body))
    return out


def seed(store: ArtifactStore, n: int, now: dt.datetime) -> None:
    records = build_records(n, now)
    ledger = store.ledger
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda r: store.s3.put(ledger._key(SERVICE, r[0]), r[1]), records))
    last_seq, last_body = records[-1]
    head = f'{{"seq": {last_seq}, "hash": "{Digest.of_bytes(last_body)}"}}'.encode()
    store.s3.put(ledger._dir(SERVICE) + HEAD, head)


def timed(fn: Any, counter: S3RequestCounter) -> tuple[float, DoraMetrics, int]:
    counter.calls.clear()
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result, sum(counter.calls.values())


def bench_window(
    store: ArtifactStore, counter: S3RequestCounter, window: dt.timedelta, now: dt.datetime, repeats: int
) -> dict[str, Any]:
    since = now - window

    def ours() -> tuple[float, DoraMetrics, int]:
        return timed(lambda: measure(Ledger(store.s3), SERVICE, "prod", since, now), counter)

    def baseline() -> tuple[float, DoraMetrics, int]:
        return timed(lambda: compute(Ledger(store.s3).records(SERVICE), SERVICE, "prod", since, now), counter)

    o_s, b_s, o_req, b_req = [], [], 0, 0
    agree = True
    figures: dict[str, Any] = {}
    for i in range(repeats):
        (ot, om, oreq), (bt, bm, breq) = paired(i, ours, baseline)
        o_s.append(ot)
        b_s.append(bt)
        o_req, b_req = oreq, breq
        agree = agree and om == bm
        figures = om.model_dump(mode="json", exclude={"failures"})
    return {
        "window_days": window.total_seconds() / 86400,
        "ours_s": o_s,
        "baseline_s": b_s,
        "ours_median_s": median(o_s),
        "baseline_median_s": median(b_s),
        "ours_requests": o_req,
        "baseline_requests": b_req,
        "speedup": median(b_s) / median(o_s),
        "same_figures": agree,
        "figures": figures,
    }


def bench_report(
    store: ArtifactStore, counter: S3RequestCounter, window: dt.timedelta, now: dt.datetime, repeats: int
) -> dict[str, Any]:
    since = now - window

    def ours() -> tuple[float, int, int]:
        counter.calls.clear()
        t0 = time.perf_counter()
        page = render(gather(Ledger(store.s3), [SERVICE], ["dev", "staging", "prod"], "prod", since, now))
        return time.perf_counter() - t0, len(page.encode()), sum(counter.calls.values())

    def baseline() -> tuple[float, DoraMetrics, int]:
        return timed(lambda: measure(Ledger(store.s3), SERVICE, "prod", since, now), counter)

    r_s, m_s, r_req, size = [], [], 0, 0
    for i in range(repeats):
        (rt, size, r_req), (mt, _, _) = paired(i, ours, baseline)
        r_s.append(rt)
        m_s.append(mt)
    return {
        "window_days": window.total_seconds() / 86400,
        "report_s": r_s,
        "metrics_s": m_s,
        "report_median_s": median(r_s),
        "metrics_median_s": median(m_s),
        "report_requests": r_req,
        "html_bytes": size,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int)
    ap.add_argument("--windows", nargs="+")
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--report", action="store_true", help="also time promote report (the HTML dashboard)")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "metrics.json")
    args = ap.parse_args(argv)
    fill_defaults(
        args,
        quick={"records": 2000, "windows": ["30d"], "repeats": 1},
        full={"records": 10_000, "windows": ["7d", "30d", "90d"], "repeats": 3},
    )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    started = time.perf_counter()
    machine = machine_facts(("boto3",))
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    rows: list[dict[str, Any]] = []
    reports: list[dict[str, Any]] = []
    with LocalS3(bucket="bench-metrics") as server, aws_credentials(server):
        pipeline = parse_pipeline(
            PIPELINE.format(endpoint=server.endpoint_url, bucket=server.bucket, prefix=f"m{os.getpid()}")
        )
        store = ArtifactStore(pipeline)
        print(f"SeaweedFS at {server.endpoint_url}; seeding {args.records} records...", flush=True)
        t0 = time.perf_counter()
        seed(store, args.records, now)
        print(f"seeded in {time.perf_counter() - t0:.1f} s", flush=True)
        counter = S3RequestCounter()
        counter.attach(store.s3.client)
        for w in args.windows:
            rows.append(bench_window(store, counter, parse_duration(w), now, args.repeats))
            if args.report:
                reports.append(bench_report(store, counter, parse_duration(w), now, args.repeats))
    machine["loadavg_at_end"] = os.getloadavg()
    total = time.perf_counter() - started
    print(f"\nDORA metrics of one service, {args.records} ledger records, median of {args.repeats}")
    print(f"{'window':>8} {'deploys':>8} {'ours s':>8} {'req':>6} {'whole s':>8} {'req':>6} {'x':>6}  same")
    for r in rows:
        print(
            f"{r['window_days']:>7g}d {r['figures']['deployments']:>8} {r['ours_median_s']:>8.3f} "
            f"{r['ours_requests']:>6} {r['baseline_median_s']:>8.3f} {r['baseline_requests']:>6} "
            f"{r['speedup']:>6.1f}  {r['same_figures']}"
        )
    if reports:
        print(f"\npromote report (gather + HTML) vs promote metrics (measure), median of {args.repeats}")
        print(f"{'window':>8} {'report s':>9} {'req':>6} {'KiB':>7} {'metrics s':>10}")
        for r in reports:
            print(
                f"{r['window_days']:>7g}d {r['report_median_s']:>9.3f} {r['report_requests']:>6} "
                f"{r['html_bytes'] / 1024:>7.1f} {r['metrics_median_s']:>10.3f}"
            )
    print(load_and_total_line(machine, total))
    res = {
        "machine": machine,
        "params": {"records": args.records, "windows": args.windows, "repeats": args.repeats},
        "windows": rows,
        "reports": reports,
        "total_s": total,
    }
    write_results(args.out, res)
    return 0 if all(r["same_figures"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
