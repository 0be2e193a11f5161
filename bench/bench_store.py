"""Benchmark the artifact store and the ledger against a real local S3 server (SeaweedFS).

Run it from the repository root::

    .venv/bin/python bench/bench_store.py            # 256 MiB file, 3 repeats, 200 appends
    .venv/bin/python bench/bench_store.py --quick    # smoke run: 16 MiB, 1 repeat, 20 appends
    .venv/bin/python bench/bench_store.py --size-mib 512 --repeats 5 --out /tmp/store.json

The script starts its own SeaweedFS server (:class:`promotion.local_s3.LocalS3`, every port on
127.0.0.1, data in a temporary directory) and runs every measurement against that one server, so
our code and the baseline see the same server in the same run. It prints a table and writes JSON
(default ``bench/results/store.json``) with every sample and the facts of the machine. The server
and the temporary files are removed on exit, Ctrl-C and SIGTERM included. The exit status is 1
when a correctness check failed (the figures are still printed and written).

Within each repeat our code and the baseline run back to back, and the order alternates from one
repeat to the next (ours first, then baseline first, ...) so that slow drift of a shared machine
does not favour one side. Times come from ``time.perf_counter``; the figure reported is the
median, and all samples are kept. MB/s means 10^6 bytes per second.

What each figure means
----------------------
1. publish vs upload_file
   *ours*: ``ArtifactStore.publish`` of a random file into a fresh store prefix (so the blob is
   really uploaded): read the file, SHA-256 it, multipart upload with a CRC32 checksum per part,
   write the ledger event and the artifact record. *baseline*: ``boto3`` ``upload_file`` of the
   same file with the default ``TransferConfig`` (8 MiB parts, 10 threads) to a fresh key.
   ratio = baseline time / our time; the goal is >= 0.9, i.e. publishing, which also computes the
   digest and writes the record, costs at most ~11% more than a plain upload.
   *re-publish*: ``publish`` of the same bytes again: the file is read and hashed, the blob and
   the record are found, nothing is uploaded or written.
2. digest verification
   (a) local: ``Digest.of_stream`` over the file on disk (read from the page cache + hash) vs
       ``hashlib.sha256`` over the same bytes already in memory: how close our streaming hash
       gets to the bare hash rate. ratio = hashlib time / our time (goal >= 0.9).
   (b) full: ``ArtifactStore.verify_full`` (download the blob from S3 and re-hash every byte) vs
       ``get_object(...)["Body"].read()`` + ``hashlib.sha256`` of the same object with a plain
       boto3 client. ratio = baseline time / our time.
   (c) cheap: ``ArtifactStore.verify_cheap`` (one HEAD; compares S3's stored checksum) vs a bare
       ``head_object``: latency p50/p99 in ms.
3. ledger append
   ``Ledger.append(service, "approval", ...)`` to ONE service by 1 writer and by 8 writers
   (threads, each with its own client, released together by a barrier): per-append latency
   p50/p99 in ms and appends/s (1 writer: appends / summed append time; 8 writers: appends /
   wall time from the barrier to the last append). Afterwards ``Ledger.verify(service)`` must be
   ok and hold exactly as many records as appends were made. S3 requests and 412 conflicts per
   append are counted from botocore's events. *baseline* (context, not a goal): a plain boto3
   ``put_object(..., IfNoneMatch="*")`` of a record-sized body to fresh keys, 1 writer,
   interleaved with our appends.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _common import (
    RESULTS_DIR,
    BenchError,
    RecordsChecks,
    S3RequestCounter,
    exit_on_sigterm,
    fill_defaults,
    fmt_samples,
    latency_summary,
    load_and_total_line,
    machine_facts,
    median,
    paired,
    render_checks,
    rounded_load,
    write_random_file,
    write_results,
)
from boto3.s3.transfer import TransferConfig

from promotion import store as store_module
from promotion.config import Pipeline, parse_pipeline
from promotion.digest import Digest
from promotion.ledger import Ledger
from promotion.local_s3 import LocalS3
from promotion.models import Provenance
from promotion.s3 import S3, make_client
from promotion.store import ArtifactStore
from tests.local_servers import aws_credentials  # on the path through _common

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MiB = 1024 * 1024
MB = 1_000_000
DEFAULT_OUT = RESULTS_DIR / "store.json"
SERVICE = "api"
WRITER_COUNTS = (1, 8)
GOAL = 0.9

PIPELINE_TEMPLATE = """
store:
  endpoint_url: {endpoint}
  bucket: {bucket}
  prefix: {prefix}
services:
  - name: api
environments:
  - name: dev
  - name: prod
"""


# -- statistics ------------------------------------------------------------------------------------


def time_summary(samples: Sequence[float], nbytes: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "median_s": median(samples),
        "min_s": min(samples),
        "max_s": max(samples),
        "samples_s": list(samples),
    }
    if nbytes is not None:
        out["median_mb_per_s"] = nbytes / MB / out["median_s"]
    return out


def ratio_summary(base: Sequence[float], ours: Sequence[float]) -> dict[str, Any]:
    """baseline / ours from the medians, plus the ratio of each back-to-back pair."""
    r = median(base) / median(ours)
    pairs = [b / o for b, o in zip(base, ours, strict=True)]
    return {
        "baseline_over_ours": r,
        "paired_median": median(pairs),
        "paired": pairs,
        "goal": GOAL,
        "meets_goal": r >= GOAL,
    }


# -- request counting ------------------------------------------------------------------------------


def per_append(counter: S3RequestCounter, appends: int) -> dict[str, Any]:
    """The S3 calls (and 412 answers) by operation, and per append."""
    total = sum(counter.calls.values())
    conflicts = sum(counter.precondition_failed.values())
    return {
        "requests": dict(counter.calls),
        "requests_per_append": total / appends if appends else math.nan,
        "precondition_failed": dict(counter.precondition_failed),
        "conflicts_per_append": conflicts / appends if appends else math.nan,
    }


# -- set-up ----------------------------------------------------------------------------------------


@dataclass
class Bench(RecordsChecks):
    server: LocalS3
    size: int
    repeats: int
    appends: int
    cheap_samples: int
    path: Path
    base: S3Client
    checks: list[dict[str, Any]] = field(default_factory=list)

    def pipeline(self, tag: str) -> Pipeline:
        """A pipeline on the shared server with a fresh, empty key prefix."""
        prefix = f"bench-{tag}-{uuid.uuid4().hex[:10]}/"
        text = PIPELINE_TEMPLATE.format(
            endpoint=self.server.endpoint_url, bucket=self.server.bucket, prefix=prefix
        )
        return parse_pipeline(text, "<bench>")


def warm(client: S3Client, bucket: str) -> None:
    """Open a pooled connection before anything is timed."""
    client.head_bucket(Bucket=bucket)


# -- 1. publish ------------------------------------------------------------------------------------


@dataclass
class Published:
    store: ArtifactStore
    digest: Digest
    s3_checksum: str | None
    baseline_key: str


def bench_publish(b: Bench) -> tuple[dict[str, Any], Published]:
    shared = make_client(b.pipeline("warm").store)
    warm(shared, b.server.bucket)
    provenance = Provenance(published_by="bench")
    ours_s: list[float] = []
    base_s: list[float] = []
    republish_s: list[float] = []
    last: Published | None = None

    # Untimed warm-up of both sides: the first large write to a fresh SeaweedFS also allocates its
    # volumes (seen: ~2x slower), a one-time cost that alternating the order cannot cancel.
    warmup_pipeline = b.pipeline("publish-warmup")
    t0 = time.perf_counter()
    ArtifactStore(warmup_pipeline, S3(warmup_pipeline.store, shared)).publish(
        b.path, service=SERVICE, version="warmup", provenance=provenance
    )
    warmup = {"ours_publish_s": time.perf_counter() - t0}
    t0 = time.perf_counter()
    b.base.upload_file(str(b.path), b.server.bucket, f"warmup-{uuid.uuid4().hex[:10]}/upload_file.bin")
    warmup["baseline_upload_file_s"] = time.perf_counter() - t0

    for i in range(b.repeats):
        pipeline = b.pipeline(f"publish{i}")
        store = ArtifactStore(pipeline, S3(pipeline.store, shared))
        base_key = f"baseline-{uuid.uuid4().hex[:10]}/upload_file.bin"
        ver = f"bench-{i}"
        digest_box: list[Published] = []

        def ours(
            i: int = i,
            store: ArtifactStore = store,
            ver: str = ver,
            base_key: str = base_key,
            box: list[Published] = digest_box,
        ) -> float:
            t0 = time.perf_counter()
            result = store.publish(b.path, service=SERVICE, version=ver, provenance=provenance)
            elapsed = time.perf_counter() - t0
            if result.already_published or result.uploaded_bytes != b.size:
                raise BenchError(
                    f"publish #{i} uploaded {result.uploaded_bytes} bytes of {b.size} "
                    f"(already_published={result.already_published}): it measured no upload"
                )
            box.append(Published(store, result.digest, result.record.s3_checksum, base_key))
            return elapsed

        def baseline(key: str = base_key) -> float:
            t0 = time.perf_counter()
            b.base.upload_file(str(b.path), b.server.bucket, key)
            return time.perf_counter() - t0

        o, t = paired(i, ours, baseline)
        ours_s.append(o)
        base_s.append(t)
        last = digest_box[0]

        # Re-publish of identical bytes (same prefix, same metadata): nothing is uploaded.
        t0 = time.perf_counter()
        again = store.publish(b.path, service=SERVICE, version=ver, provenance=provenance)
        republish_s.append(time.perf_counter() - t0)
        if not again.already_published or again.uploaded_bytes != 0 or again.digest != last.digest:
            raise BenchError(
                f"re-publish #{i} uploaded {again.uploaded_bytes} bytes "
                f"(already_published={again.already_published}); expected a no-op"
            )

    assert last is not None
    head = b.base.head_object(Bucket=b.server.bucket, Key=last.baseline_key)
    b.check(
        "baseline object size",
        head["ContentLength"] == b.size,
        f"upload_file stored {head['ContentLength']} bytes of {b.size}",
    )
    out = {
        "ours_publish": time_summary(ours_s, b.size),
        "baseline_upload_file": time_summary(base_s, b.size),
        "ratio": ratio_summary(base_s, ours_s),
        "republish": time_summary(republish_s),
        "warmup_untimed": warmup,
    }
    return out, last


# -- 2. digest verification ----------------------------------------------------------------------


def bench_local_hash(b: Bench, pub: Published) -> tuple[list[float], list[float]]:
    """(a) our streaming hash over the file vs hashlib over bytes already in memory."""
    data = b.path.read_bytes()
    local_ours: list[float] = []
    local_base: list[float] = []
    for i in range(b.repeats):

        def ours_local() -> float:
            t0 = time.perf_counter()
            with b.path.open("rb") as f:
                d = Digest.of_stream(f)
            elapsed = time.perf_counter() - t0
            if d != pub.digest:
                raise BenchError(f"Digest.of_stream gave {d}, publish gave {pub.digest}")
            return elapsed

        def base_local() -> float:
            t0 = time.perf_counter()
            hx = hashlib.sha256(data).hexdigest()
            elapsed = time.perf_counter() - t0
            if hx != pub.digest.hex:
                raise BenchError(f"hashlib gave {hx}, publish gave {pub.digest}")
            return elapsed

        o, t = paired(i, ours_local, base_local)
        local_ours.append(o)
        local_base.append(t)
    return local_ours, local_base


def bench_digest(b: Bench, pub: Published) -> dict[str, Any]:
    bucket = b.server.bucket
    key = pub.store.blob_key(pub.digest)
    local_ours, local_base = bench_local_hash(b, pub)

    # (b) verify_full (GET + re-hash, streamed) vs a plain GET read whole + hashlib.
    full_ours: list[float] = []
    full_base: list[float] = []
    for i in range(b.repeats):

        def ours_full() -> float:
            t0 = time.perf_counter()
            pub.store.verify_full(pub.digest)  # raises DigestMismatch when the bytes differ
            return time.perf_counter() - t0

        def base_full() -> float:
            t0 = time.perf_counter()
            body = b.base.get_object(Bucket=bucket, Key=key)["Body"].read()
            hx = hashlib.sha256(body).hexdigest()
            elapsed = time.perf_counter() - t0
            if hx != pub.digest.hex or len(body) != b.size:
                raise BenchError(f"GET of {key} gave {len(body)} bytes hashing to {hx}")
            return elapsed

        o, t = paired(i, ours_full, base_full)
        full_ours.append(o)
        full_base.append(t)

    # (c) verify_cheap (HEAD + checksum comparison) vs a bare head_object.
    cheap_ours: list[float] = []
    cheap_base: list[float] = []
    for i in range(b.cheap_samples):

        def ours_cheap() -> float:
            t0 = time.perf_counter()
            pub.store.verify_cheap(pub.digest, pub.s3_checksum)  # raises DigestMismatch on a mismatch
            return time.perf_counter() - t0

        def base_cheap() -> float:
            t0 = time.perf_counter()
            b.base.head_object(Bucket=bucket, Key=key)
            return time.perf_counter() - t0

        o, t = paired(i, ours_cheap, base_cheap)
        cheap_ours.append(o)
        cheap_base.append(t)

    return {
        "local": {
            "what": "Digest.of_stream(open(file)) vs hashlib.sha256(bytes in memory)",
            "ours_of_stream": time_summary(local_ours, b.size),
            "baseline_hashlib_in_memory": time_summary(local_base, b.size),
            "ratio": ratio_summary(local_base, local_ours),
        },
        "full": {
            "what": "ArtifactStore.verify_full vs get_object().read() + hashlib.sha256",
            "ours_verify_full": time_summary(full_ours, b.size),
            "baseline_get_read_hashlib": time_summary(full_base, b.size),
            "ratio": ratio_summary(full_base, full_ours),
        },
        "cheap": {
            "what": "ArtifactStore.verify_cheap (HEAD) vs head_object",
            "ours_verify_cheap": latency_summary(cheap_ours),
            "baseline_head_object": latency_summary(cheap_base),
        },
    }


# -- 3. ledger ------------------------------------------------------------------------------------


def ledger_for(pipeline: Pipeline, counter: S3RequestCounter) -> Ledger:
    client = make_client(pipeline.store)
    counter.attach(client)
    warm(client, pipeline.store.bucket)
    return Ledger(S3(pipeline.store, client))


def check_ledger(b: Bench, pipeline: Pipeline, writers: int, appends: int) -> dict[str, Any]:
    report = Ledger(S3(pipeline.store)).verify(SERVICE)
    ok = report.ok and report.records == appends
    detail = f"verify ok={report.ok}, records={report.records}, appends={appends}" + (
        f", findings: {report.findings[:3]}" if report.findings else ""
    )
    b.check(f"ledger, {writers} writer(s)", ok, detail)
    return {"ok": ok, "verify_ok": report.ok, "records": report.records, "findings": report.findings}


def bench_ledger_single(b: Bench, digest: Digest) -> dict[str, Any]:
    """One writer; each append is paired with a plain conditional PUT (the baseline)."""
    pipeline = b.pipeline("ledger1")
    counter = S3RequestCounter()
    ledger = ledger_for(pipeline, counter)
    base_prefix = f"{pipeline.store.prefix}baseline-put/"
    ours_s: list[float] = []
    base_s: list[float] = []
    body: list[bytes] = []  # a real record's bytes, from the first append (which always goes first)

    for i in range(b.appends):

        def ours() -> float:
            t0 = time.perf_counter()
            rec = ledger.append(SERVICE, "approval", digest, actor="bench-w0")
            elapsed = time.perf_counter() - t0
            if not body:
                body.append(rec.canonical_bytes())
            return elapsed

        def baseline(i: int = i) -> float:
            t0 = time.perf_counter()
            b.base.put_object(
                Bucket=b.server.bucket,
                Key=f"{base_prefix}{i:012d}.json",
                Body=body[0],
                IfNoneMatch="*",
                ContentType="application/json",
            )
            return time.perf_counter() - t0

        o, t = paired(i, ours, baseline)
        ours_s.append(o)
        base_s.append(t)

    return {
        "writers": 1,
        "appends": b.appends,
        "latency": latency_summary(ours_s),
        "appends_per_s": b.appends / sum(ours_s),
        "s3": per_append(counter, b.appends),
        "check": check_ledger(b, pipeline, 1, b.appends),
        "baseline_put_if_none_match": {
            "record_bytes": len(body[0]) if body else 0,
            "latency": latency_summary(base_s),
            "puts_per_s": b.appends / sum(base_s),
        },
    }


def bench_ledger_concurrent(b: Bench, digest: Digest, writers: int) -> dict[str, Any]:
    pipeline = b.pipeline(f"ledger{writers}")
    counter = S3RequestCounter()
    shares = [b.appends // writers + (1 if w < b.appends % writers else 0) for w in range(writers)]
    barrier = threading.Barrier(writers)
    latencies: list[list[float]] = [[] for _ in range(writers)]
    spans: list[tuple[float, float]] = [(math.nan, math.nan)] * writers
    errors: list[str] = []

    def writer(w: int) -> None:
        try:
            ledger = ledger_for(pipeline, counter)
            barrier.wait(timeout=120)
            start = time.perf_counter()
            for _ in range(shares[w]):
                t0 = time.perf_counter()
                ledger.append(SERVICE, "approval", digest, actor=f"bench-w{w}")
                latencies[w].append(time.perf_counter() - t0)
            spans[w] = (start, time.perf_counter())
        except Exception as exc:  # reported and checked below; a thread must not die silently
            errors.append(f"writer {w}: {type(exc).__name__}: {exc}")
            barrier.abort()

    threads = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done = sum(len(x) for x in latencies)
    wall = max(e for _, e in spans if not math.isnan(e)) - min(s for s, _ in spans if not math.isnan(s))
    b.check(f"ledger, {writers} writers: no errors", not errors, "; ".join(errors) or "all appends returned")
    return {
        "writers": writers,
        "appends": done,
        "appends_per_writer": shares,
        "errors": errors,
        "latency": latency_summary([x for xs in latencies for x in xs]),
        "wall_s": wall,
        "appends_per_s": done / wall,
        "s3": per_append(counter, done),
        "check": check_ledger(b, pipeline, writers, done),
    }


# -- report ---------------------------------------------------------------------------------------


def settings(base: S3Client) -> dict[str, Any]:
    tc = TransferConfig()
    return {
        "ours": {
            "MULTIPART_THRESHOLD": store_module.MULTIPART_THRESHOLD,
            "PART_SIZE": store_module.PART_SIZE,
            "UPLOAD_THREADS": store_module.UPLOAD_THREADS,
        },
        "baseline_transfer_config": {
            "multipart_threshold": tc.multipart_threshold,
            "multipart_chunksize": tc.multipart_chunksize,
            "max_concurrency": getattr(tc, "max_concurrency", None),
        },
        "baseline_client": {
            name: getattr(base.meta.config, name, None)
            for name in (
                "request_checksum_calculation",
                "response_checksum_validation",
                "max_pool_connections",
            )
        },
    }


def verdict(r: dict[str, Any]) -> str:
    return "meets goal" if r["meets_goal"] else "BELOW GOAL"


def render(res: dict[str, Any]) -> str:
    m, p = res["machine"], res["params"]
    pub, dig, led = res["publish"], res["digest"], res["ledger"]
    lines: list[str] = []
    add = lines.append
    add(
        f"prefect-promotion store benchmark  {m['date_utc']}  {m['cpu_count']} CPUs  "
        f"Python {m['python']}  boto3 {m['boto3']}  SeaweedFS {m['seaweedfs'].removeprefix('version ')}"
    )
    add(
        f"file {p['size_mib']} MiB random, {p['repeats']} repeat(s), {p['appends']} appends per writer "
        f"count; ours/baseline alternate order each repeat; median [all samples]; MB = 10^6 bytes"
    )
    add(f"load average at start {rounded_load(m['loadavg_at_start'])}")
    add("")

    def trow(label: str, s: dict[str, Any]) -> None:
        mbps = f"{s['median_mb_per_s']:8.1f} MB/s" if "median_mb_per_s" in s else " " * 13
        add(f"  {label:<44} {s['median_s']:8.3f} s {mbps}   [{fmt_samples(s['samples_s'])}]")

    def rrow(label: str, r: dict[str, Any]) -> None:
        add(
            f"  {label:<44} {r['baseline_over_ours']:8.3f}   goal >= {r['goal']}: {verdict(r)}   "
            f"paired: median {r['paired_median']:.3f} [{fmt_samples(r['paired'])}]"
        )

    def lrow(label: str, s: dict[str, Any]) -> None:
        add(
            f"  {label:<44} p50 {s['p50_ms']:8.2f} ms   p99 {s['p99_ms']:8.2f} ms   "
            f"mean {s['mean_ms']:7.2f} ms   max {s['max_ms']:8.2f} ms   (n={s['n']})"
        )

    add("1. publish vs boto3 upload_file (ours also hashes the file, checksums each part,")
    add("   writes the ledger event and the artifact record)")
    trow("ours: ArtifactStore.publish", pub["ours_publish"])
    trow("baseline: boto3 upload_file (default config)", pub["baseline_upload_file"])
    rrow("ratio baseline/ours", pub["ratio"])
    trow("re-publish identical bytes (no upload)", pub["republish"])
    w = pub["warmup_untimed"]
    add(
        f"  (untimed warm-up before the repeats: publish {w['ours_publish_s']:.3f} s, "
        f"upload_file {w['baseline_upload_file_s']:.3f} s)"
    )
    add("")
    add("2. digest verification")
    add("   (a) local hashing: our streaming hash reads the file; hashlib gets bytes in memory")
    trow("ours: Digest.of_stream(open(file))", dig["local"]["ours_of_stream"])
    trow("baseline: hashlib.sha256(bytes in memory)", dig["local"]["baseline_hashlib_in_memory"])
    rrow("ratio hashlib/ours", dig["local"]["ratio"])
    add("   (b) full verification from S3: download every byte and re-hash")
    trow("ours: ArtifactStore.verify_full", dig["full"]["ours_verify_full"])
    trow("baseline: get_object().read() + hashlib", dig["full"]["baseline_get_read_hashlib"])
    rrow("ratio baseline/ours", dig["full"]["ratio"])
    add("   (c) cheap verification: one HEAD, S3's stored checksum compared, nothing downloaded")
    lrow("ours: ArtifactStore.verify_cheap", dig["cheap"]["ours_verify_cheap"])
    lrow("baseline: head_object", dig["cheap"]["baseline_head_object"])
    add("")
    add("3. ledger append (event 'approval', one service)")
    for run in led["runs"]:
        w = run["writers"]
        lrow(f"ours: Ledger.append, {w} writer(s)", run["latency"])
        s3 = run["s3"]
        add(
            f"  {'':<44} {run['appends_per_s']:8.1f} appends/s   {s3['requests_per_append']:.2f} S3 "
            f"requests/append   {s3['conflicts_per_append']:.2f} 412s/append"
        )
        c = run["check"]
        add(
            f"  {'':<44} check: verify ok={c['verify_ok']}, records={c['records']}, "
            f"appends={run['appends']} -> {'OK' if c['ok'] else 'FAILED'}"
        )
        if "baseline_put_if_none_match" in run:
            bl = run["baseline_put_if_none_match"]
            lrow(f"baseline: put_object IfNoneMatch ({bl['record_bytes']} B)", bl["latency"])
            add(f"  {'':<44} {bl['puts_per_s']:8.1f} puts/s   (1 writer, interleaved with the appends)")
    add("")
    render_checks(res["checks"], add)
    add(load_and_total_line(m, res["total_s"]))
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--size-mib", type=int, default=None, help="size of the random file (default 256)")
    ap.add_argument("--repeats", type=int, default=None, help="repeats of each timed pair (default 3)")
    ap.add_argument("--appends", type=int, default=None, help="ledger appends per writer count (default 200)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    ap.add_argument("--quick", action="store_true", help="smoke run: 16 MiB, 1 repeat, 20 appends")
    args = ap.parse_args(argv)
    quick = {"size_mib": 16, "repeats": 1, "appends": 20}
    full = {"size_mib": 256, "repeats": 3, "appends": 200}
    fill_defaults(args, quick, full)
    if args.size_mib < 1 or args.repeats < 1 or args.appends < max(WRITER_COUNTS):
        ap.error(f"--size-mib and --repeats must be >= 1, --appends >= {max(WRITER_COUNTS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    size = args.size_mib * MiB
    started = time.perf_counter()
    machine = machine_facts(("boto3", "botocore", "s3transfer", "awscrt"))
    with (
        tempfile.TemporaryDirectory(prefix="bench-store-") as tmp,
        LocalS3(bucket="bench") as server,
        aws_credentials(server),
    ):
        path = Path(tmp) / "artifact.bin"
        print(
            f"SeaweedFS at {server.endpoint_url}; writing {args.size_mib} MiB of random bytes...", flush=True
        )
        write_random_file(path, size)
        base = server.client()
        warm(base, server.bucket)
        b = Bench(
            server=server,
            size=size,
            repeats=args.repeats,
            appends=args.appends,
            cheap_samples=10 if args.quick else 50,
            path=path,
            base=base,
        )
        print("1/3 publish vs upload_file...", flush=True)
        publish, pub = bench_publish(b)
        print("2/3 digest verification...", flush=True)
        digest = bench_digest(b, pub)
        print("3/3 ledger appends...", flush=True)
        runs = [
            bench_ledger_single(b, pub.digest) if w == 1 else bench_ledger_concurrent(b, pub.digest, w)
            for w in WRITER_COUNTS
        ]
        cfg = settings(base)
    machine["loadavg_at_end"] = os.getloadavg()
    res: dict[str, Any] = {
        "machine": machine,
        "params": {
            "size_mib": args.size_mib,
            "size_bytes": size,
            "repeats": args.repeats,
            "appends": args.appends,
            "writer_counts": list(WRITER_COUNTS),
            "cheap_samples": b.cheap_samples,
            "quick": args.quick,
        },
        "settings": cfg,
        "publish": publish,
        "digest": digest,
        "ledger": {"runs": runs},
        "checks": b.checks,
        "total_s": time.perf_counter() - started,
    }
    print()
    print(render(res))
    out: Path = args.out
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / ".gitkeep").touch()
    write_results(out, res)
    return 0 if all(c["ok"] for c in b.checks) else 1


if __name__ == "__main__":
    sys.exit(main())
