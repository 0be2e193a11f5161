"""The scan gate on a SARIF log with 500,000 results: wall time and peak RSS, in a subprocess.

Side by side, run the same way on the same file in the same run, the baseline: ``json.loads`` of
the log and counting its results by level (the least any whole-document parser does). Each run
is a fresh interpreter that reads the file, times the work and reports its own peak RSS
(``VmHWM``: ``ru_maxrss`` would count the image of this process it was forked from).

    .venv/bin/python bench/bench_scan.py [--results 500000] [--repeat 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import RESULTS_DIR, fill_defaults, machine_facts, median, write_results

from tests.sarif_gen import write_big_sarif  # on the path through _common

CHILD_PROLOGUE = """
import json, sys, time
with open(sys.argv[1], "rb") as f:
    data = f.read()
"""
CHILD_EPILOGUE = """
with open("/proc/self/status") as f:
    hwm_kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "peak_mib": hwm_kib / 1024, "counts": counts}))
"""
# The product: the scan gate exactly as a gate task evaluates it (imports outside the timing).
GATE = """
from promotion.config import ScanGate
from promotion.gates import evaluate_scan
start = time.perf_counter()
result = evaluate_scan(ScanGate(kind="scan", max_findings={"error": 0}), [data])
seconds = time.perf_counter() - start
counts = {k: result.measured[k] for k in ("error", "warning", "note", "none")}
"""
# The baseline: load the whole log, count results by their rule's default level.
BASELINE = """
start = time.perf_counter()
doc = json.loads(data)
counts = {"error": 0, "warning": 0, "note": 0, "none": 0}
for run in doc["runs"]:
    levels = {r["id"]: r["defaultConfiguration"]["level"] for r in run["tool"]["driver"]["rules"]}
    for res in run["results"]:
        counts[res.get("level") or levels[res["ruleId"]]] += 1
seconds = time.perf_counter() - start
"""


def run_child(body: str, sarif: Path) -> dict[str, Any]:
    r = subprocess.run(
        [sys.executable, "-c", CHILD_PROLOGUE + body + CHILD_EPILOGUE, str(sarif)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if r.returncode != 0:
        raise SystemExit(f"child failed: {r.stderr.strip()}")
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, help="results in the log (default 500,000; quick 50,000)")
    parser.add_argument("--repeat", type=int, help="runs of each side (default 3; quick 1)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "scan.json")
    parser.add_argument("--quick", action="store_true", help="smoke run: 50,000 results, 1 run each")
    args = parser.parse_args()
    fill_defaults(args, quick={"results": 50_000, "repeat": 1}, full={"results": 500_000, "repeat": 3})
    machine = machine_facts(["ijson", "pydantic"])
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        sarif = Path(tmp) / "big.sarif"
        write_big_sarif(sarif, args.results)
        size = sarif.stat().st_size
        runs: dict[str, list[dict[str, Any]]] = {"scan_gate": [], "baseline_json_loads": []}
        for _ in range(args.repeat):  # interleaved, so that load changes hit both alike
            runs["scan_gate"].append(run_child(GATE, sarif))
            runs["baseline_json_loads"].append(run_child(BASELINE, sarif))
    counts = {name: r[0]["counts"] for name, r in runs.items()}
    summary = {
        name: {
            "seconds_median": round(median([x["seconds"] for x in r]), 3),
            "peak_rss_mib_median": round(median([x["peak_mib"] for x in r]), 1),
            "seconds": [round(x["seconds"], 3) for x in r],
            "peak_rss_mib": [round(x["peak_mib"], 1) for x in r],
        }
        for name, r in runs.items()
    }
    checks = {"same counts": counts["scan_gate"] == counts["baseline_json_loads"]}
    print(f"SARIF log: {args.results:,} results, {size / 2**20:.1f} MiB; {args.repeat} runs each, median")
    print(f"{'':24} {'time':>8} {'peak RSS':>10}")
    for name, s in summary.items():
        print(
            f"{name:24} {s['seconds_median']:>7.2f}s {s['peak_rss_mib_median']:>7.0f} MiB"
            f"   (runs: {s['seconds']})"
        )
    print(f"counts by level: {counts['scan_gate']}; checks: {checks}")
    print(f"load average {os.getloadavg()}, total {time.perf_counter() - started:.0f} s")
    write_results(
        args.out,
        {
            "machine": machine,
            "sarif": {"results": args.results, "bytes": size},
            "summary": summary,
            "counts": counts,
            "checks": checks,
        },
    )
    if not all(checks.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
