"""Benchmark ``promote publish`` as a user runs it against boto3 ``upload_file``, whole processes.

Run it from the repository root::

    .venv/bin/python bench/bench_publish.py                     # 256 MiB and 2 GiB, 3 repeats
    .venv/bin/python bench/bench_publish.py --sizes 256 --repeats 5
    .venv/bin/python bench/bench_publish.py --quick             # smoke run: 32 MiB, 1 repeat

The script starts its own SeaweedFS (:class:`promotion.local_s3.LocalS3`, as the other benchmarks
do) and, for each size and repeat, runs two processes back to back, alternating which goes first:

- *ours*: ``.venv/bin/promote -c FILE publish ARTIFACT --service api``, the real CLI in its own
  process (start-up, imports, config, hash pass, multipart upload with a SHA-256 per part, ledger
  event, artifact record). Before each run the first MiB of the artifact is rewritten with fresh
  random bytes, so its digest is new and nothing is skipped as already published;
- *baseline*: ``python -c ...`` that creates a plain boto3 client and runs ``upload_file`` of the
  same file with the default ``TransferConfig`` to a fresh key, its own process too.

Wall time is ``time.perf_counter`` around the child (spawn to exit); peak RSS is the child's
``ru_maxrss`` from ``os.wait4``, both taken by a small launcher process whose child it is (a child
forked from the benchmark itself would count the benchmark's own RSS in its peak). Figures are
medians over the repeats, every sample kept; MB/s means 10^6 bytes per second; ratio = baseline
time / our time (goal >= 0.9), memory ratio = our peak RSS / baseline's (goal <= 2). JSON goes
to ``bench/results/publish.json``. Exit status 1 when a correctness check failed (a publish that
printed another digest, or skipped the upload).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from _common import (
    RESULTS_DIR,
    RecordsChecks,
    exit_on_sigterm,
    fill_defaults,
    fmt_samples,
    load_and_total_line,
    machine_facts,
    median,
    paired,
    render_checks,
    rounded_load,
    write_random_file,
    write_results,
)

from promotion.digest import Digest
from promotion.local_s3 import LocalS3

MiB = 1024 * 1024
MB = 1_000_000
GOAL_RATIO = 0.9
GOAL_RSS = 2.0
DEFAULT_OUT = RESULTS_DIR / "publish.json"
BIN = Path(sys.executable).parent
PROMOTE = str(BIN / "promote")
UPLOAD_FILE = """
import sys
import boto3
from botocore.config import Config
endpoint, bucket, key, path = sys.argv[1:5]
client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      config=Config(s3={"addressing_style": "path"}))
client.upload_file(path, bucket, key)
"""
PIPELINE = """
store:
  endpoint_url: {endpoint}
  bucket: {bucket}
  prefix: bench-publish/
services:
  - name: api
environments:
  - name: dev
"""


#: Runs argv[2:] and writes its wall time and rusage to argv[1]. The measured process must be the
#: child of a small process: Linux carries the RSS a child had before exec (a fork of its parent,
#: which for the benchmark itself is tens of MiB) into its ``ru_maxrss``.
LAUNCHER = """
import json, os, subprocess, sys, time
t = time.perf_counter()
p = subprocess.Popen(sys.argv[2:])
_, status, ru = os.wait4(p.pid, 0)
wall = time.perf_counter() - t
with open(sys.argv[1], "w") as f:
    json.dump({"wall_s": wall, "maxrss_kib": ru.ru_maxrss, "exit": os.waitstatus_to_exitcode(status)}, f)
"""


def run_child(cmd: Sequence[str], env: dict[str, str]) -> dict[str, Any]:
    """Run one process through :data:`LAUNCHER`; wall time, peak RSS (MiB), exit code, output."""
    with tempfile.NamedTemporaryFile(suffix=".json") as report:
        proc = subprocess.run(
            [sys.executable, "-S", "-c", LAUNCHER, report.name, *cmd],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        measured = json.loads(Path(report.name).read_text() or "{}")
    return {
        "wall_s": measured.get("wall_s", float("nan")),
        "peak_rss_mib": measured.get("maxrss_kib", 0) / 1024,  # KiB on Linux
        "exit": measured.get("exit", proc.returncode),
        "stdout": proc.stdout[-500:],
        "stderr": proc.stderr[-500:],
    }


def refresh(path: Path) -> Digest:
    """New bytes in the first MiB (a new digest), then the digest, computed outside any timing."""
    with path.open("r+b") as f:
        f.write(os.urandom(min(MiB, path.stat().st_size)))
    with path.open("rb") as f:
        return Digest.of_stream(f)


class Bench(RecordsChecks):
    def __init__(self, server: LocalS3, cfg: Path, env: dict[str, str]) -> None:
        self.server = server
        self.cfg = cfg
        self.env = env
        self.checks: list[dict[str, Any]] = []
        self.client = server.client()

    def ours(self, path: Path, label: str) -> dict[str, Any]:
        expected = refresh(path)
        r = run_child([PROMOTE, "-c", str(self.cfg), "publish", str(path), "--service", "api"], self.env)
        ok = (
            r["exit"] == 0 and r["stdout"].strip() == str(expected) and "already published" not in r["stderr"]
        )
        self.check(f"{label}: promote publish uploaded {expected.short}", ok, r["stderr"].strip()[-200:])
        return r

    def baseline(self, path: Path, label: str) -> dict[str, Any]:
        key = f"bench-baseline/{uuid.uuid4().hex}"
        cmd = [
            sys.executable,
            "-c",
            UPLOAD_FILE,
            self.server.endpoint_url,
            self.server.bucket,
            key,
            str(path),
        ]
        r = run_child(cmd, self.env)
        size = path.stat().st_size
        stored = (
            self.client.head_object(Bucket=self.server.bucket, Key=key)["ContentLength"]
            if r["exit"] == 0
            else -1
        )
        self.check(f"{label}: upload_file stored {size} bytes", stored == size, r["stderr"].strip()[-200:])
        self.client.delete_object(Bucket=self.server.bucket, Key=key)  # keep the disk from filling
        return r


def summarize(samples: list[dict[str, Any]], size: int) -> dict[str, Any]:
    walls = [s["wall_s"] for s in samples]
    rss = [s["peak_rss_mib"] for s in samples]
    m = median(walls)
    return {
        "median_s": m,
        "median_mb_per_s": size / MB / m,
        "samples_s": walls,
        "median_peak_rss_mib": median(rss),
        "peak_rss_samples_mib": rss,
    }


def bench_size(b: Bench, tmp: Path, size_mib: int, repeats: int) -> dict[str, Any]:
    size = size_mib * MiB
    path = tmp / f"artifact-{size_mib}.bin"
    print(f"  writing {size_mib} MiB of random bytes...", flush=True)
    write_random_file(path, size)
    ours: list[dict[str, Any]] = []
    base: list[dict[str, Any]] = []
    for i in range(repeats):
        label = f"{size_mib} MiB #{i + 1}"
        one_ours, one_base = paired(i, partial(b.ours, path, label), partial(b.baseline, path, label))
        ours.append(one_ours)
        base.append(one_base)
        print(
            f"  #{i + 1}: ours {ours[-1]['wall_s']:.2f} s {ours[-1]['peak_rss_mib']:.0f} MiB, "
            f"upload_file {base[-1]['wall_s']:.2f} s {base[-1]['peak_rss_mib']:.0f} MiB",
            flush=True,
        )
    path.unlink()
    o, bl = summarize(ours, size), summarize(base, size)
    ratio = bl["median_s"] / o["median_s"]
    rss_ratio = o["median_peak_rss_mib"] / bl["median_peak_rss_mib"]
    return {
        "size_mib": size_mib,
        "ours_promote_publish": o,
        "baseline_upload_file": bl,
        "ratio_baseline_over_ours": ratio,
        "paired_ratios": [y["wall_s"] / x["wall_s"] for x, y in zip(ours, base, strict=True)],
        "meets_goal": ratio >= GOAL_RATIO,
        "rss_ratio_ours_over_baseline": rss_ratio,
        "meets_rss_goal": rss_ratio <= GOAL_RSS,
        "runs": {"ours": ours, "baseline": base},
    }


def startup(b: Bench) -> dict[str, Any]:
    """``promote publish --help`` (imports and argument parsing) vs ``python -c 'import boto3'``."""
    ours = [run_child([PROMOTE, "publish", "--help"], b.env)["wall_s"] for _ in range(3)]
    base = [run_child([sys.executable, "-c", "import boto3"], b.env)["wall_s"] for _ in range(3)]
    return {"promote_publish_help_s": median(ours), "python_import_boto3_s": median(base)}


def render(res: dict[str, Any]) -> str:
    m, p = res["machine"], res["params"]
    lines: list[str] = []
    add = lines.append
    add(
        f"prefect-promotion publish benchmark  {m['date_utc']}  {m['cpu_count']} CPUs  Python {m['python']}  "
        f"boto3 {m['boto3']}  SeaweedFS {m['seaweedfs'].removeprefix('version ')}"
    )
    add(
        f"whole processes; {p['repeats']} repeat(s), order alternating; median [samples]; MB = 10^6 bytes; "
        f"load average at start {rounded_load(m['loadavg_at_start'])}"
    )
    s = res["startup"]
    add(
        f"start-up: promote publish --help {s['promote_publish_help_s']:.2f} s, "
        f"python -c 'import boto3' {s['python_import_boto3_s']:.2f} s"
    )
    for r in res["sizes"]:
        o, bl = r["ours_promote_publish"], r["baseline_upload_file"]
        add("")
        add(f"{r['size_mib']} MiB")
        for label, x in (("ours: promote publish", o), ("baseline: boto3 upload_file", bl)):
            add(
                f"  {label:<30} {x['median_s']:7.2f} s {x['median_mb_per_s']:7.1f} MB/s   "
                f"peak RSS {x['median_peak_rss_mib']:6.0f} MiB   [{fmt_samples(x['samples_s'])}]"
            )
        add(
            f"  ratio baseline/ours {r['ratio_baseline_over_ours']:.3f} (goal >= {GOAL_RATIO}: "
            f"{'meets goal' if r['meets_goal'] else 'BELOW GOAL'}); "
            f"paired [{fmt_samples(r['paired_ratios'])}]"
        )
        add(
            f"  peak RSS ours/baseline {r['rss_ratio_ours_over_baseline']:.2f} (goal <= {GOAL_RSS}: "
            f"{'meets goal' if r['meets_rss_goal'] else 'ABOVE GOAL'})"
        )
    add("")
    render_checks(res["checks"], add)
    add(load_and_total_line(m, res["total_s"]))
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--sizes", default=None, help="comma-separated sizes in MiB (default 256,2048)")
    ap.add_argument("--repeats", type=int, default=None, help="repeats per size (default 3)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    ap.add_argument("--quick", action="store_true", help="smoke run: 32 MiB, 1 repeat")
    args = ap.parse_args(argv)
    fill_defaults(args, {"sizes": "32", "repeats": 1}, {"sizes": "256,2048", "repeats": 3})
    try:
        args.size_list = [int(x) for x in str(args.sizes).split(",") if x.strip()]
    except ValueError:
        ap.error(f"--sizes: expected comma-separated whole MiB, e.g. 256,2048 (got {args.sizes!r})")
    if not args.size_list or min(args.size_list) < 1 or args.repeats < 1:
        ap.error("--sizes must be >= 1 MiB each and --repeats >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    started = time.perf_counter()
    machine = machine_facts(("boto3", "botocore", "s3transfer"))
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp_s:
        tmp = Path(tmp_s)
        # The artifact, plus each repeat's two uploads in SeaweedFS (ours stay: they are the store).
        need = max(args.size_list) * MiB + sum(args.size_list) * MiB * (args.repeats + 1)
        free = shutil.disk_usage(tmp).free
        if free < need * 1.2:
            print(f"not enough disk in {tmp}: {free / 2**30:.1f} GiB free, ~{need / 2**30:.1f} GiB needed")
            return 2
        with LocalS3(bucket="bench") as server:
            env = {**os.environ, **server.env()}
            cfg = tmp / "promotion.yaml"
            cfg.write_text(PIPELINE.format(endpoint=server.endpoint_url, bucket=server.bucket))
            b = Bench(server, cfg, env)
            print(f"SeaweedFS at {server.endpoint_url}; start-up...", flush=True)
            start = startup(b)
            # One untimed pair so that neither side pays the server's first-write costs.
            warm = tmp / "warm.bin"
            write_random_file(warm, 32 * MiB)
            b.ours(warm, "warm-up")
            b.baseline(warm, "warm-up")
            sizes = []
            for size_mib in args.size_list:
                print(f"{size_mib} MiB x {args.repeats}...", flush=True)
                sizes.append(bench_size(b, tmp, size_mib, args.repeats))
    machine["loadavg_at_end"] = os.getloadavg()
    res: dict[str, Any] = {
        "machine": machine,
        "params": {"sizes_mib": args.size_list, "repeats": args.repeats, "quick": args.quick},
        "startup": start,
        "sizes": sizes,
        "checks": b.checks,
        "total_s": time.perf_counter() - started,
    }
    print()
    print(render(res))
    write_results(args.out, res)
    return 0 if all(c["ok"] for c in b.checks) else 1


if __name__ == "__main__":
    sys.exit(main())
