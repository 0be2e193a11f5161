"""Benchmark the nightly sweep for 100 and 1,000 services against a real local S3 server.

Run it from the repository root::

    .venv/bin/python bench/bench_sweep.py             # 100 and 1,000 services, 3 repeats, flow too
    .venv/bin/python bench/bench_sweep.py --quick     # smoke run: 10 and 100 services, 1 repeat
    .venv/bin/python bench/bench_sweep.py --sizes 100 1000 --no-flow --out /tmp/sweep.json

The script starts its own SeaweedFS server (:class:`promotion.local_s3.LocalS3`, every port on
127.0.0.1, data in a temporary directory) and, unless ``--no-flow``, its own Prefect server
(``prefect_test_harness(server_startup_timeout=180)``, SQLite, analytics off). It prints a table
and writes JSON (default ``bench/results/sweep.json``) with every sample and the facts of the
machine (CPU count, load average before and after: another engineer may be running tests on this
2-core machine). Servers and temporary files are removed on exit, Ctrl-C and SIGTERM included.
The exit status is 1 when a correctness check failed (the figures are still printed and written).

What is seeded (per size, in a fresh key prefix, by 16 threads, not timed)
--------------------------------------------------------------------------
N services, each with two published artifacts (a few KiB, one shared JUnit evidence file) and a
ledger of 5 records: v1 promoted to dev 3 days ago and to staging 2 days ago, v2 promoted to dev
1 hour ago (copied into the environment's bucket, so there is no drift). The pipeline: dev
(auto_promote, copy target), staging (auto_promote, soak 1d + tests gate), prod (auto_promote,
soak 1d, approval), ``sweep.retention: 30d``, ``max_parallel: 8``. So each night every service
has: dev "already there", staging "not yet: soak", prod "open_approval" (v1 soaked in staging);
2 digests to re-hash in full (v1, v2); 1 copy to check for drift; 2N+1 blobs to list.

What each figure means
----------------------
* cold: the core's steps the flow takes (``sweep_services``, ``correct_all``, ``run_retention``
  from ``promotion.sweep``) the first night (no history index yet: every ledger is listed
  and read in full once, and the index written).
* steady: the same, the next nights (index up to date: the ledger costs its tip, 3 GETs, and the
  index, 1 GET). Median of ``--repeats`` runs. This is the figure the growth goal applies to.
* flow: ``flows.sweep.nightly_sweep(dry_run=True)`` on the Prefect server: the steady sweep plus
  Prefect (flow and task runs, the ``nightly-sweep`` table artifact with a row per decision).
  Dry run so that it starts no pipeline runs (N approval runs would measure run creation, not
  the sweep). Its S3 requests are made by its own client and are not counted.
* requests/service: every HTTP request the store's S3 client sends (botocore ``before-send``
  events on that client: observation only), divided by N; by operation in the JSON.
* growth = time(largest size) / time(smallest size); goal <= 11 for 10x the services.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any, NamedTuple

from _common import (
    RESULTS_DIR,
    BenchError,
    S3RequestCounter,
    exit_on_sigterm,
    fill_defaults,
    load_and_total_line,
    machine_facts,
    quiet_prefect_console,
    render_checks,
    rounded_load,
    write_results,
)

from promotion.config import Pipeline, load_pipeline
from promotion.deploy import copy_to_target
from promotion.digest import Digest
from promotion.local_s3 import LocalS3
from promotion.models import Provenance, utcnow
from promotion.store import ArtifactStore, parse_evidence
from promotion.sweep import RetentionReport, ServiceReport, correct_all, run_retention, sweep_services
from tests.local_servers import aws_credentials, prefect_test_server  # on the path through _common

DEFAULT_OUT = RESULTS_DIR / "sweep.json"
GOAL = 11.0
SEED_THREADS = 16
DAY = dt.timedelta(days=1)

PIPELINE = """
store: {{endpoint_url: "{endpoint}", bucket: {bucket}, prefix: "{prefix}"}}
sweep: {{retention: 30d, max_parallel: 8}}
services:
{services}
environments:
  - name: dev
    auto_promote: true
    target: {{copy_to: {{bucket: "{target}", prefix: "{prefix}dev/"}}}}
  - name: staging
    auto_promote: true
    gates:
      - {{kind: soak, min_duration: 1d}}
      - {{kind: tests, min_pass_rate: 1.0}}
  - name: prod
    auto_promote: true
    approval: {{approvers: [alice, bob]}}
    gates:
      - {{kind: soak, min_duration: 1d}}
"""

JUNIT = (
    '<testsuite name="bench" tests="2" failures="0" errors="0" skipped="0">'
    '<testcase classname="t" name="a"/><testcase classname="t" name="b"/></testsuite>'
)


# -- seeding -----------------------------------------------------------------------------------------


def write_config(tmp: Path, server: LocalS3, target: str, n: int) -> tuple[Path, Pipeline]:
    prefix = f"bench-sweep-{n}-{uuid.uuid4().hex[:8]}/"
    services = "\n".join(f"  - name: s{i:05d}" for i in range(n))
    path = tmp / f"sweep-{n}.yaml"
    path.write_text(
        PIPELINE.format(
            endpoint=server.endpoint_url,
            bucket=server.bucket,
            prefix=prefix,
            target=target,
            services=services,
        )
    )
    return path, load_pipeline(path, apply_env=False)


def seed(pipeline: Pipeline, tmp: Path, now: dt.datetime) -> dict[str, tuple[Digest, Digest]]:
    """Publish v1 and v2 of every service and record their promotions; returns the digests."""
    store = ArtifactStore(pipeline)
    junit = tmp / "junit.xml"
    junit.write_text(JUNIT)
    evidence = parse_evidence([f"junit={junit}"])
    prov = Provenance(commit="c0ffee", build_url="https://ci/1", published_by="bench")
    dev = pipeline.environment("dev").target.copy_to
    assert dev is not None

    def one(service: str) -> tuple[str, tuple[Digest, Digest]]:
        digests: list[Digest] = []
        for v in ("1.0", "2.0"):
            f = tmp / f"{service}-{v}.bin"
            f.write_bytes(f"{service} {v} {uuid.uuid4()}\n".encode() * 64)
            digests.append(
                store.publish(f, service=service, version=v, provenance=prov, evidence=evidence).digest
            )
            f.unlink()
        v1, v2 = digests
        for env, d, ver, ago in (("dev", v1, "1.0", 3 * DAY), ("staging", v1, "1.0", 2 * DAY)):
            store.ledger.append(
                service, "promoted", d, actor="bench", environment=env, version=ver, at=now - ago
            )
        store.ledger.append(
            service,
            "promoted",
            v2,
            actor="bench",
            environment="dev",
            version="2.0",
            at=now - dt.timedelta(hours=1),
        )
        copy_to_target(store, dev, service, v2, "2.0", environment="dev")
        return service, (v1, v2)

    with ThreadPoolExecutor(max_workers=SEED_THREADS) as pool:
        return dict(pool.map(one, [s.name for s in pipeline.services]))


# -- measuring ----------------------------------------------------------------------------------------


class Night(NamedTuple):
    """What the core's steps found in one night (starting runs is the flow's part: see ``flow``)."""

    services: list[ServiceReport]
    retention: RetentionReport


def check_report(rep: Night, seeded: dict[str, tuple[Digest, Digest]]) -> list[str]:
    """What is wrong with the night's report, given what was seeded (empty: all as expected)."""
    problems: list[str] = []
    for s in rep.services:
        v1, v2 = seeded[s.service]
        got = {(d.environment, d.action, d.digest) for d in s.decisions}
        want = {("dev", "skip", v2), ("staging", "skip", v2), ("prod", "open_approval", v1)}
        if got != want or s.errors or s.drift or any(c.outcome != "ok" for c in s.checks):
            problems.append(
                f"{s.service}: decisions {sorted(map(str, got))}, errors {s.errors}, drift {s.drift}"
            )
    expected_blobs = 2 * len(seeded) + 1
    if rep.retention.scanned != expected_blobs or rep.retention.candidates:
        problems.append(
            f"retention scanned {rep.retention.scanned} blobs (expected {expected_blobs}), "
            f"{len(rep.retention.candidates)} candidates (expected 0)"
        )
    return problems[:5]


def timed_sweep(
    store: ArtifactStore, counter: S3RequestCounter, now: dt.datetime
) -> tuple[float, Night, Counter[str]]:
    counter.take_attempts()
    t0 = time.perf_counter()
    services = correct_all(store, sweep_services(store, now=now))
    rep = Night(services, run_retention(store, services, now=now))
    elapsed = time.perf_counter() - t0
    return elapsed, rep, counter.take_attempts()


def run_flow(config: Path) -> float:
    from flows.sweep import nightly_sweep

    quiet_prefect_console()  # importing the flows configures Prefect's logging again
    t0 = time.perf_counter()
    state = nightly_sweep(dry_run=True, config=str(config), return_state=True)
    elapsed = time.perf_counter() - t0
    if not state.is_completed():
        raise BenchError(f"the sweep flow ended {state.type.value}: {state.message}")
    return elapsed


def bench_size(
    n: int, server: LocalS3, target: str, tmp: Path, repeats: int, flow: bool, checks: list[dict[str, Any]]
) -> dict[str, Any]:
    config, pipeline = write_config(tmp, server, target, n)
    now = utcnow()
    t0 = time.perf_counter()
    seeded = seed(pipeline, tmp, now)
    seed_s = time.perf_counter() - t0
    print(f"  {n} services seeded in {seed_s:.1f} s", flush=True)

    store = ArtifactStore(pipeline)
    counter = S3RequestCounter()
    counter.attach(store.s3.client)
    store.s3.check_bucket()  # a pooled connection before anything is timed
    cold_s, cold, cold_ops = timed_sweep(store, counter, now)
    steady: list[float] = []
    steady_ops: Counter[str] = Counter()
    last = cold
    for _ in range(repeats):
        s, last, ops = timed_sweep(store, counter, now)
        steady.append(s)
        steady_ops = ops
    indexes = Counter(r.index.split(" (")[0].split(":")[0] for r in last.services)
    for label, rep in (("cold", cold), ("steady", last)):
        problems = check_report(rep, seeded)
        checks.append(
            {
                "name": f"{n} services, {label}: decisions",
                "ok": not problems,
                "detail": "; ".join(problems) or "as seeded",
            }
        )
    checks.append(
        {
            "name": f"{n} services, steady: index up to date",
            "ok": indexes == Counter({"up to date": n}),
            "detail": str(dict(indexes)),
        }
    )
    out: dict[str, Any] = {
        "services": n,
        "seed_s": seed_s,
        "cold": {
            "wall_s": cold_s,
            "requests": dict(cold_ops),
            "requests_per_service": sum(cold_ops.values()) / n,
        },
        "steady": {
            "wall_s": sorted(steady)[len(steady) // 2],
            "samples_s": steady,
            "requests": dict(steady_ops),
            "requests_per_service": sum(steady_ops.values()) / n,
        },
    }
    if flow:
        out["flow"] = {"wall_s": run_flow(config)}
    return out


# -- output ---------------------------------------------------------------------------------------


def growth(sizes: list[dict[str, Any]], part: str) -> dict[str, Any] | None:
    have = [s for s in sizes if part in s]
    if len(have) < 2:
        return None
    small, large = have[0], have[-1]
    ratio = large[part]["wall_s"] / small[part]["wall_s"]
    return {
        "from": small["services"],
        "to": large["services"],
        "services_ratio": large["services"] / small["services"],
        "time_ratio": ratio,
        "goal": GOAL,
        "meets_goal": ratio <= GOAL,
    }


def render(res: dict[str, Any]) -> str:
    m, p = res["machine"], res["params"]
    lines: list[str] = []
    add = lines.append
    add(
        f"prefect-promotion sweep benchmark  {m['date_utc']}  {m['cpu_count']} CPUs  Python {m['python']}  "
        f"boto3 {m['boto3']}  Prefect {m['prefect']}  SeaweedFS {m['seaweedfs'].removeprefix('version ')}"
    )
    add(
        f"sizes {p['sizes']} services, {p['repeats']} steady repeat(s), 5 ledger records and 2 artifacts "
        f"per service, max_parallel 8; flow: {'dry run on a Prefect server' if p['flow'] else 'not run'}"
    )
    add(f"load average at start {rounded_load(m['loadavg_at_start'])}")
    add("")
    add(
        f"  {'services':>8} {'seed s':>8} {'cold s':>8} {'req/svc':>8} "
        f"{'steady s':>9} {'req/svc':>8} {'flow s':>8}"
    )
    for s in res["sizes"]:
        flow = f"{s['flow']['wall_s']:8.2f}" if "flow" in s else f"{'-':>8}"
        add(
            f"  {s['services']:>8} {s['seed_s']:8.1f} {s['cold']['wall_s']:8.2f} "
            f"{s['cold']['requests_per_service']:8.1f} {s['steady']['wall_s']:9.2f} "
            f"{s['steady']['requests_per_service']:8.1f} {flow}"
        )
    add("")
    for part in ("cold", "steady", "flow"):
        g = res["growth"].get(part)
        if g:
            verdict = "meets goal" if g["meets_goal"] else "ABOVE GOAL"
            add(
                f"  growth {part:<7} {g['from']} -> {g['to']} services ({g['services_ratio']:.0f}x): "
                f"time x{g['time_ratio']:.2f}   goal <= {g['goal']:.0f}: {verdict}"
            )
    last = res["sizes"][-1]
    ops = ", ".join(f"{k} {v / last['services']:.2f}" for k, v in sorted(last["steady"]["requests"].items()))
    add(f"  steady requests per service at {last['services']}: {ops}")
    add("")
    render_checks(res["checks"], add)
    add(load_and_total_line(m, res["total_s"]))
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="service counts (default 100 1000)")
    ap.add_argument("--repeats", type=int, default=None, help="steady sweeps per size (default 3)")
    ap.add_argument("--no-flow", action="store_true", help="do not start Prefect nor run the flow")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    ap.add_argument("--quick", action="store_true", help="smoke run: 10 and 100 services, 1 repeat")
    args = ap.parse_args(argv)
    fill_defaults(args, quick={"sizes": [10, 100], "repeats": 1}, full={"sizes": [100, 1000], "repeats": 3})
    if args.repeats < 1 or any(n < 1 for n in args.sizes):
        ap.error("--sizes and --repeats must be >= 1")
    args.sizes = sorted(set(args.sizes))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    started = time.perf_counter()
    machine = machine_facts(("boto3", "prefect"))
    checks: list[dict[str, Any]] = []
    sizes: list[dict[str, Any]] = []
    flow = not args.no_flow
    with (
        tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp,
        LocalS3(bucket="bench-sweep") as server,
        aws_credentials(server),
    ):
        target = f"bench-env-{uuid.uuid4().hex[:8]}"
        server.client().create_bucket(Bucket=target)
        print(f"SeaweedFS at {server.endpoint_url}" + ("; starting Prefect..." if flow else ""), flush=True)
        with prefect_test_server() if flow else nullcontext(None) as api:
            if api:
                quiet_prefect_console()
                print(f"Prefect at {api}", flush=True)
            for n in args.sizes:
                print(f"{n} services...", flush=True)
                sizes.append(bench_size(n, server, target, Path(tmp), args.repeats, flow, checks))
    machine["loadavg_at_end"] = os.getloadavg()
    res: dict[str, Any] = {
        "machine": machine,
        "params": {"sizes": args.sizes, "repeats": args.repeats, "flow": flow, "quick": args.quick},
        "sizes": sizes,
        "growth": {p: g for p in ("cold", "steady", "flow") if (g := growth(sizes, p))},
        "checks": checks,
        "total_s": time.perf_counter() - started,
    }
    print()
    print(render(res))
    out: Path = args.out
    write_results(out, res)
    return 0 if all(c["ok"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
