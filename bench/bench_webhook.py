"""Benchmark the CI webhook receiver against real servers (SeaweedFS and a Prefect test server).

Run it from the repository root::

    .venv/bin/python bench/bench_webhook.py            # 200 samples, 20 req/s for 60 s, 3 x 10 s throughput
    .venv/bin/python bench/bench_webhook.py --quick    # smoke run: 20 samples, 5 s sustained, 1 x 2 s
    .venv/bin/python bench/bench_webhook.py --seconds 120 --rate 10 --out /tmp/webhook.json
    .venv/bin/python bench/bench_webhook.py --database postgres   # the Prefect server on PostgreSQL

The script starts its own SeaweedFS server (:class:`promotion.local_s3.LocalS3`) and its own
Prefect server, registers a real deployment of ``promote-pipeline`` that no worker serves (runs
stay Scheduled, which is enough to count them), publishes one real artifact, and runs the receiver
with uvicorn in a separate process, as ``promote webhook serve`` would. With ``--database sqlite``
(the default) the Prefect server is ``prefect_test_harness(server_startup_timeout=180)`` (SQLite,
as the tests use). With ``--database postgres`` the script starts its own PostgreSQL and a Prefect
server on it with ``bench/pg.py``, as ``bench/bench_flows.py --database postgres`` does: Debian's
server (installed with apt-get when missing), ``initdb --auth=trust`` into a temporary directory,
a free 127.0.0.1 port, and the harness's own uvicorn command and settings for the Prefect server,
so that the two runs differ in the database only; both are stopped and their data deleted on exit,
Ctrl-C and SIGTERM included. It prints a table and writes JSON (default
``bench/results/webhook.json``, with ``--database postgres`` ``bench/results/webhook-postgres.json``)
with the database, every sample and the facts of the machine, load average included: a shared
machine makes every figure here slower. Exit status 1 when a correctness check failed (the figures
are still printed and written).

What each figure means
----------------------
1. CI webhook -> flow run created
   Latency of one signed delivery until its ``202`` (the flow run exists in Prefect when the answer
   comes), one at a time over a keep-alive connection, rotating GitHub ``workflow_run``, GitLab
   Pipeline Hook and Standard Webhooks build-published deliveries. *Baseline* (context): the same
   ``create_flow_run_from_deployment`` called directly with a Prefect client, interleaved with ours
   (order alternating), and ``ArtifactStore.find_record``, the one S3 read the receiver makes.
   Afterwards each delivery must have exactly one run.
2. Sustained load
   Open loop: request ``i`` is sent at ``t0 + i / rate`` whatever happened to the earlier ones, for
   ``--seconds``; every tenth request replays an earlier delivery (same id, body and signature).
   Afterwards every flow run of the deployment is listed. *lost*: deliveries that got no 202 or
   have no run. *duplicated*: deliveries with more than one run, plus replays answered with another
   run than the original.
3. Request throughput
   Closed loop, ``--connections`` keep-alive connections on raw sockets (a client much cheaper than
   the servers), ``--throughput-seconds`` per measurement: our ``GET /healthz``, our signed
   ``POST /hooks/github`` (``X-GitHub-Event: ping``: secret lookup, body read with the size limit,
   HMAC check, JSON parse; no S3, no Prefect) and a bare FastAPI ``POST`` endpoint that returns a
   constant, each server in its own uvicorn process with the same settings. ratio = ours / bare.
   Context: a bare endpoint with a path parameter that reads the body, as any receiver must.
   Order rotates from one repeat to the next; the figure is the median over repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import math
import multiprocessing
import os
import re
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pg  # bench/pg.py, beside this script (the script's directory is first on sys.path)
from _common import (
    RESULTS_DIR,
    BenchError,
    RecordsChecks,
    exit_on_sigterm,
    fill_defaults,
    free_port,
    latency_summary,
    load_and_total_line,
    machine_facts,
    paired,
    percentile,
    prefect_on,
    render_checks,
    rounded_load,
    write_results,
)
from fastapi import FastAPI, Request  # module level: FastAPI resolves the string annotations here

from promotion.config import Pipeline, load_pipeline
from promotion.digest import Digest
from promotion.local_s3 import LocalS3
from promotion.models import Provenance
from promotion.store import ArtifactStore
from tests.local_servers import aws_credentials  # on the path through _common

DEFAULT_OUT = RESULTS_DIR / "webhook.json"
DEFAULT_OUTS = {"sqlite": DEFAULT_OUT, "postgres": RESULTS_DIR / "webhook-postgres.json"}
DATABASES = tuple(DEFAULT_OUTS)
SOURCES = ("github", "gitlab", "standard")
REPLAY_EVERY = 10
HOST = "127.0.0.1"

PIPELINE = """
store: {{endpoint_url: "{endpoint}", bucket: {bucket}, prefix: "{prefix}"}}
services: [{{name: api}}]
environments: [{{name: dev}}, {{name: staging}}, {{name: prod}}]
webhooks:
  deployment: {deployment}
  sources:
    github: {{secret_env: BENCH_WEBHOOK_GITHUB}}
    gitlab: {{secret_env: BENCH_WEBHOOK_GITLAB}}
    standard: {{secret_env: BENCH_WEBHOOK_STANDARD}}
"""


# -- statistics ------------------------------------------------------------------------------------


def ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


# -- signing (as a CI system would) ------------------------------------------------------------------


@dataclass
class Keys:
    github: str = field(default_factory=lambda: "gh-" + os.urandom(16).hex())
    gitlab: str = field(default_factory=lambda: "gl-" + os.urandom(16).hex())
    standard: str = field(default_factory=lambda: "whsec_" + base64.b64encode(os.urandom(24)).decode())

    def env(self) -> dict[str, str]:
        return {
            "BENCH_WEBHOOK_GITHUB": self.github,
            "BENCH_WEBHOOK_GITLAB": self.gitlab,
            "BENCH_WEBHOOK_STANDARD": self.standard,
        }

    def headers(self, source: str, body: bytes, delivery: str, event: str | None = None) -> dict[str, str]:
        if source == "github":
            sig = "sha256=" + hmac.new(self.github.encode(), body, hashlib.sha256).hexdigest()
            h = {"X-Hub-Signature-256": sig, "X-GitHub-Delivery": delivery}
            if event:
                h["X-GitHub-Event"] = event
            return h
        if source == "gitlab":
            return {"X-Gitlab-Token": self.gitlab, "X-Gitlab-Event-UUID": delivery}
        ts = int(time.time())
        key = base64.b64decode(self.standard.removeprefix("whsec_"))
        mac = hmac.new(key, f"{delivery}.{ts}.".encode() + body, hashlib.sha256).digest()
        return {
            "webhook-id": delivery,
            "webhook-timestamp": str(ts),
            "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        }


@dataclass(frozen=True)
class Delivery:
    source: str
    delivery: str
    body: bytes
    headers: dict[str, str]
    replay_of: int | None = None


def make_delivery(keys: Keys, source: str, digest: Digest, n: int) -> Delivery:
    """A delivery as each CI system sends it, carrying the digest in the documented place."""
    if source == "github":
        payload: dict[str, Any] = {
            "action": "completed",
            "workflow_run": {
                "id": n,
                "status": "completed",
                "conclusion": "success",
                "display_title": f"promote api {digest}",
                "head_repository": {"full_name": "bench/app"},
                "repository": {"full_name": "bench/app"},
                "triggering_actor": {"login": "bench"},
            },
        }
        event: str | None = "workflow_run"
    elif source == "gitlab":
        payload = {
            "object_kind": "pipeline",
            "object_attributes": {
                "id": n,
                "status": "success",
                "variables": [
                    {"key": "PROMOTION_SERVICE", "value": "api"},
                    {"key": "PROMOTION_DIGEST", "value": str(digest)},
                ],
            },
            "user": {"username": "bench"},
        }
        event = None
    else:
        payload = {"service": "api", "digest": str(digest), "requested_by": "bench"}
        event = None
    body = json.dumps(payload).encode()
    delivery = f"bench-{uuid.uuid4()}"
    return Delivery(source, delivery, body, keys.headers(source, body, delivery, event))


# -- servers in their own processes --------------------------------------------------------------------


def bare_app() -> FastAPI:
    """The baseline: FastAPI with an endpoint that returns a constant (and one that reads the body)."""
    app = FastAPI()

    @app.post("/bare")
    async def bare() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/bare-body/{source}")
    async def bare_body(source: str, request: Request) -> dict[str, str]:
        await request.body()
        return {"status": "ok"}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _serve(kind: str, config: str, port: int) -> None:  # runs in a spawned child process
    import uvicorn

    from promotion.webhook import UVICORN_SETTINGS, create_app

    app = create_app(load_pipeline(config)) if kind == "webhook" else bare_app()
    uvicorn.run(app, host=HOST, port=port, log_level="warning", access_log=False, **UVICORN_SETTINGS)


@contextmanager
def server_process(kind: str, config: Path) -> Iterator[str]:
    """A uvicorn server in a spawned process (its own interpreter and GIL); yields the base URL."""
    port = free_port()
    proc = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(kind, str(config), port), daemon=True, name=f"bench-{kind}"
    )
    proc.start()
    url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if not proc.is_alive() or time.monotonic() > deadline:
                raise BenchError(f"the {kind} server did not start")
            time.sleep(0.1)  # polling for readiness, with a deadline
        yield url
    finally:
        proc.terminate()
        proc.join(10)
        if proc.is_alive():
            proc.kill()


# -- Prefect ------------------------------------------------------------------------------------------


def register_deployment() -> tuple[str, Any]:
    from flows.pipeline import promote_pipeline

    name = f"bench-{uuid.uuid4().hex[:8]}"
    runner_deployment: Any = promote_pipeline.to_deployment(name=name)  # sync here, not a coroutine
    deployment_id = runner_deployment.apply()
    return f"{promote_pipeline.name}/{name}", deployment_id


def runs_by_key(deployment_id: Any) -> dict[str, list[str]]:
    """Every flow run of the deployment, grouped by idempotency key."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    out: dict[str, list[str]] = {}
    flt = FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]))
    with get_client(sync_client=True) as client:
        offset = 0
        while True:
            page = client.read_flow_runs(flow_run_filter=flt, limit=200, offset=offset)
            for run in page:
                out.setdefault(run.idempotency_key or "", []).append(str(run.id))
            if len(page) < 200:
                return out
            offset += len(page)


@dataclass
class Bench(RecordsChecks):
    keys: Keys
    digest: Digest
    pipeline: Pipeline
    deployment: str
    deployment_id: Any
    url: str
    checks: list[dict[str, Any]] = field(default_factory=list)

    def key(self, d: Delivery) -> str:
        return f"{d.source}:{self.deployment}:{d.delivery}"


# -- 1. latency ---------------------------------------------------------------------------------------


def bench_latency(b: Bench, samples: int) -> dict[str, Any]:
    from prefect.client.orchestration import get_client

    ours: dict[str, list[float]] = {s: [] for s in SOURCES}
    base: list[float] = []
    lookups: list[float] = []
    sent: list[Delivery] = []
    statuses: Counter[int] = Counter()
    store = ArtifactStore(b.pipeline)
    with httpx.Client(base_url=b.url, timeout=60) as http, get_client(sync_client=True) as prefect:
        # Untimed warm-up: the receiver imports Prefect and looks the deployment up on first use.
        for source in SOURCES:
            d = make_delivery(b.keys, source, b.digest, 0)
            http.post(f"/hooks/{source}", content=d.body, headers=d.headers)
            sent.append(d)
        prefect.create_flow_run_from_deployment(
            b.deployment_id, parameters={"service": "api", "digest": str(b.digest)}, idempotency_key="warm"
        )
        store.find_record("api", b.digest)

        def one_ours(i: int) -> None:
            source = SOURCES[i % len(SOURCES)]
            d = make_delivery(b.keys, source, b.digest, i)
            t0 = time.perf_counter()
            r = http.post(f"/hooks/{source}", content=d.body, headers=d.headers)
            ours[source].append(time.perf_counter() - t0)
            statuses[r.status_code] += 1
            sent.append(d)

        def one_base(i: int) -> None:
            t0 = time.perf_counter()
            prefect.create_flow_run_from_deployment(
                b.deployment_id,
                parameters={"service": "api", "digest": str(b.digest), "to": None, "requested_by": "bench"},
                idempotency_key=f"baseline:{uuid.uuid4()}",
            )
            base.append(time.perf_counter() - t0)

        for i in range(samples):
            paired(i, partial(one_ours, i), partial(one_base, i))
            t0 = time.perf_counter()
            store.find_record("api", b.digest)
            lookups.append(time.perf_counter() - t0)

    runs = runs_by_key(b.deployment_id)
    counts = Counter(len(runs.get(b.key(d), [])) for d in sent)
    b.check(
        "latency: every delivery answered 202",
        statuses == Counter({202: samples}),
        f"statuses {dict(statuses)}",
    )
    b.check(
        "latency: one flow run per delivery",
        set(counts) == {1},
        f"runs per delivery -> deliveries: {dict(counts)}",
    )
    all_ours = [x for xs in ours.values() for x in xs]
    return {
        "ours_webhook_to_run": latency_summary(all_ours),
        "ours_by_source": {s: latency_summary(xs, keep=False) for s, xs in ours.items()},
        "baseline_create_flow_run": latency_summary(base),
        "baseline_find_record": latency_summary(lookups),
        "overhead_p50_ms": percentile(all_ours, 50) * 1000 - percentile(base, 50) * 1000,
        "statuses": dict(statuses),
    }


# -- 2. sustained load --------------------------------------------------------------------------------


@dataclass
class Outcome:
    index: int
    delivery: Delivery
    status: int | None
    flow_run_id: str | None
    latency_s: float
    lag_s: float
    error: str | None = None


async def _sustained(b: Bench, rate: float, seconds: float) -> tuple[list[Outcome], float]:
    n = int(rate * seconds)
    # No connection limit: requests waiting in httpx's pool starved this loop (12 s send lag seen
    # with 200 connections and ~1000 requests waiting), which broke the open-loop schedule.
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=100)
    loop = asyncio.get_running_loop()
    deliveries: list[Delivery] = []
    async with httpx.AsyncClient(base_url=b.url, timeout=120, limits=limits) as http:

        async def send(i: int, d: Delivery, due: float) -> Outcome:
            lag = loop.time() - due
            t0 = time.perf_counter()
            try:
                r = await http.post(f"/hooks/{d.source}", content=d.body, headers=d.headers)
            except httpx.HTTPError as exc:
                return Outcome(i, d, None, None, time.perf_counter() - t0, lag, type(exc).__name__)
            run_id = r.json().get("flow_run_id") if r.status_code == 202 else None
            return Outcome(i, d, r.status_code, run_id, time.perf_counter() - t0, lag)

        tasks = []
        t0 = loop.time() + 0.2
        started = time.perf_counter()
        for i in range(n):
            due = t0 + i / rate
            await asyncio.sleep(max(0.0, due - loop.time()))
            if i >= REPLAY_EVERY and i % REPLAY_EVERY == 0:
                j = i - REPLAY_EVERY // 2 - 2
                orig = deliveries[j]
                d = Delivery(orig.source, orig.delivery, orig.body, orig.headers, replay_of=j)
            else:
                d = make_delivery(b.keys, SOURCES[i % len(SOURCES)], b.digest, i)
            deliveries.append(d)
            tasks.append(asyncio.create_task(send(i, d, due)))
        send_span = time.perf_counter() - started
        outcomes = await asyncio.gather(*tasks)
    return list(outcomes), send_span


def bench_sustained(b: Bench, rate: float, seconds: float) -> dict[str, Any]:
    outcomes, send_span = asyncio.run(_sustained(b, rate, seconds))
    runs = runs_by_key(b.deployment_id)
    originals = [o for o in outcomes if o.delivery.replay_of is None]
    replays = [o for o in outcomes if o.delivery.replay_of is not None]
    lost = [o for o in originals if o.status != 202 or not runs.get(b.key(o.delivery))]
    duplicated = [o for o in originals if len(runs.get(b.key(o.delivery), [])) > 1]
    by_index = {o.index: o for o in outcomes}
    replay_other_run = [
        o
        for o in replays
        if o.status == 202
        and o.delivery.replay_of is not None
        and o.flow_run_id != by_index[o.delivery.replay_of].flow_run_id
    ]
    replay_failed = [o for o in replays if o.status != 202]
    statuses = Counter(str(o.status) if o.status is not None else (o.error or "error") for o in outcomes)
    b.check(
        f"sustained {rate:g} req/s: nothing lost",
        not lost,
        f"{len(lost)} of {len(originals)} deliveries without a 202 or a run",
    )
    b.check(
        f"sustained {rate:g} req/s: nothing duplicated",
        not duplicated and not replay_other_run,
        f"{len(duplicated)} deliveries with >1 run; {len(replay_other_run)} replays got another run",
    )
    b.check(
        f"sustained {rate:g} req/s: replays answered 202",
        not replay_failed,
        f"{len(replay_failed)} of {len(replays)} replays not answered 202",
    )
    return {
        "rate_per_s": rate,
        "seconds": seconds,
        "requests": len(outcomes),
        "deliveries": len(originals),
        "replays": len(replays),
        "send_span_s": send_span,
        "achieved_rate_per_s": len(outcomes) / send_span if send_span else math.nan,
        "max_send_lag_ms": max(o.lag_s for o in outcomes) * 1000,
        "statuses": dict(statuses),
        "latency": latency_summary([o.latency_s for o in outcomes]),
        "latency_202": latency_summary([o.latency_s for o in outcomes if o.status == 202], keep=False),
        "lost": len(lost),
        "duplicated": len(duplicated),
        "replays_answered_with_other_run": len(replay_other_run),
        "replays_not_202": len(replay_failed),
        "runs_listed_for_these_deliveries": sum(len(runs.get(b.key(o.delivery), [])) for o in originals),
    }


# -- 3. throughput -----------------------------------------------------------------------------------

_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length:\s*(\d+)")


def raw_request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if method == "POST":
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _closed_loop(
    url: str, request: bytes, connections: int, seconds: float
) -> tuple[Counter[int], float]:
    host, port = url.removeprefix("http://").split(":")
    statuses: Counter[int] = Counter()
    start = time.perf_counter()
    deadline = start + seconds

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while time.perf_counter() < deadline:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                m = _CONTENT_LENGTH.search(head)
                if m:
                    await reader.readexactly(int(m.group(1)))
                statuses[int(head[9:12])] += 1
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return statuses, time.perf_counter() - start


def bench_throughput(
    b: Bench, bare_url: str, connections: int, seconds: float, repeats: int
) -> dict[str, Any]:
    ping = b'{"zen": "Anything added dilutes everything else.", "hook_id": 1}'
    targets: dict[str, tuple[str, bytes, int]] = {
        "bare_post": (bare_url, raw_request("POST", "/bare", ping), 200),
        "bare_post_path_param_read_body": (bare_url, raw_request("POST", "/bare-body/github", ping), 200),
        "ours_healthz": (b.url, raw_request("GET", "/healthz"), 200),
        "ours_signed_ping": (
            b.url,
            raw_request("POST", "/hooks/github", ping, b.keys.headers("github", ping, "bench-ping", "ping")),
            200,
        ),
    }
    names = list(targets)
    rps: dict[str, list[float]] = {n: [] for n in names}
    errors: Counter[str] = Counter()
    for url, req, _ in targets.values():  # untimed warm-up of each path
        asyncio.run(_closed_loop(url, req, 2, 0.3))
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            url, req, want = targets[name]
            statuses, elapsed = asyncio.run(_closed_loop(url, req, connections, seconds))
            ok = statuses.get(want, 0)
            rps[name].append(ok / elapsed)
            errors[name] += sum(statuses.values()) - ok
    b.check(
        "throughput: every request answered as expected",
        not any(errors.values()),
        f"unexpected answers per target: {dict(errors)}",
    )
    med = {n: percentile(v, 50) for n, v in rps.items()}
    return {
        "connections": connections,
        "seconds_each": seconds,
        "repeats": repeats,
        "req_per_s": {n: {"median": med[n], "samples": v} for n, v in rps.items()},
        "ratio_signed_over_bare": ratio(med["ours_signed_ping"], med["bare_post"]),
        "ratio_healthz_over_bare": ratio(med["ours_healthz"], med["bare_post"]),
        "ratio_signed_over_bare_reading_body": ratio(
            med["ours_signed_ping"], med["bare_post_path_param_read_body"]
        ),
        "unexpected_answers": dict(errors),
    }


# -- report ---------------------------------------------------------------------------------------


def render(res: dict[str, Any]) -> str:
    m, p = res["machine"], res["params"]
    lat, sus, thr = res["latency"], res["sustained"], res["throughput"]
    lines: list[str] = []
    add = lines.append
    add(
        f"prefect-promotion webhook benchmark  {m['date_utc']}  {m['cpu_count']} CPUs  Python {m['python']}  "
        f"Prefect {m['prefect']} ({DATABASE_LABELS[res['database']]})  FastAPI {m['fastapi']}  "
        f"uvicorn {m['uvicorn']}"
    )
    add(f"database: {res['database']}; Prefect server: {m['prefect_database']}")
    if "postgres" in res:
        pgr = res["postgres"]
        add(
            f"PostgreSQL {pgr['version']} on 127.0.0.1:{pgr['port']}; flow runs in its database at the "
            f"end: {pgr['flow_runs_in_db']}"
        )
    add(
        f"{p['latency_samples']} latency samples; {p['rate']:g} req/s for {p['seconds']:g} s; throughput "
        f"{p['throughput_repeats']} x {p['throughput_seconds']:g} s at {p['connections']} connections; "
        f"max_in_flight {res['settings']['max_in_flight']}"
    )
    add(f"load average at start {rounded_load(m['loadavg_at_start'])}")
    add("")

    def lrow(label: str, s: dict[str, Any]) -> None:
        add(
            f"  {label:<48} p50 {s['p50_ms']:8.1f} ms   p99 {s['p99_ms']:8.1f} ms   "
            f"mean {s['mean_ms']:8.1f} ms   max {s['max_ms']:8.1f} ms   (n={s['n']})"
        )

    add("1. CI webhook -> flow run created (one at a time)")
    lrow("ours: signed delivery -> 202 with the run", lat["ours_webhook_to_run"])
    for source, s in lat["ours_by_source"].items():
        lrow(f"  of which {source}", s)
    lrow("baseline: create_flow_run_from_deployment", lat["baseline_create_flow_run"])
    lrow("context: ArtifactStore.find_record (S3)", lat["baseline_find_record"])
    add(f"  {'receiver overhead at p50 (ours - baseline)':<48} {lat['overhead_p50_ms']:8.1f} ms")
    add("")
    add(f"2. sustained load: {sus['rate_per_s']:g} req/s, open loop, {sus['seconds']:g} s, 1 in 10 a replay")
    add(
        f"  sent {sus['requests']} ({sus['deliveries']} deliveries + {sus['replays']} replays) in "
        f"{sus['send_span_s']:.1f} s = {sus['achieved_rate_per_s']:.1f} req/s; max send lag "
        f"{sus['max_send_lag_ms']:.1f} ms; answers {sus['statuses']}"
    )
    lrow("latency (all answers)", sus["latency"])
    add(
        f"  lost {sus['lost']}   duplicated {sus['duplicated']}   replays answered with another run "
        f"{sus['replays_answered_with_other_run']}   replays not 202 {sus['replays_not_202']}   runs listed "
        f"{sus['runs_listed_for_these_deliveries']} for {sus['deliveries']} deliveries"
    )
    add("")
    add(f"3. request throughput: closed loop, {thr['connections']} keep-alive connections, same uvicorn")
    for name, s in thr["req_per_s"].items():
        samples = " ".join(f"{x:.0f}" for x in s["samples"])
        add(f"  {name:<48} {s['median']:8.0f} req/s   [{samples}]")
    add(f"  {'ratio ours signed ping / bare POST':<48} {thr['ratio_signed_over_bare']:8.3f}")
    add(f"  {'ratio ours /healthz / bare POST':<48} {thr['ratio_healthz_over_bare']:8.3f}")
    add(
        f"  {'ratio ours signed ping / bare POST reading body':<48} "
        f"{thr['ratio_signed_over_bare_reading_body']:8.3f}   (context)"
    )
    add("")
    render_checks(res["checks"], add, every=True)
    add(load_and_total_line(m, res["total_s"]))
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--latency-samples", type=int, default=None, help="deliveries timed (default 200)")
    ap.add_argument("--rate", type=float, default=20.0, help="sustained requests per second (default 20)")
    ap.add_argument("--seconds", type=float, default=None, help="sustained load duration (default 60)")
    ap.add_argument("--throughput-seconds", type=float, default=None, help="per measurement (default 10)")
    ap.add_argument("--repeats", type=int, default=None, help="throughput repeats (default 3)")
    ap.add_argument("--connections", type=int, default=16, help="throughput connections (default 16)")
    ap.add_argument(
        "--database",
        choices=DATABASES,
        default="sqlite",
        help="the Prefect server's database: sqlite = prefect_test_harness; postgres = a PostgreSQL and a "
        "Prefect server on it that the script starts (bench/pg.py), with the harness's command and settings",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"JSON output (default {DEFAULT_OUTS['sqlite']}; with --database postgres "
        f"{DEFAULT_OUTS['postgres']})",
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: 20 samples, 5 s sustained, 1 x 2 s")
    args = ap.parse_args(argv)
    quick = {"latency_samples": 20, "seconds": 5.0, "throughput_seconds": 2.0, "repeats": 1}
    full = {"latency_samples": 200, "seconds": 60.0, "throughput_seconds": 10.0, "repeats": 3}
    fill_defaults(args, quick, full)
    if min(args.latency_samples, args.repeats, args.connections) < 1 or args.rate <= 0 or args.seconds <= 0:
        ap.error("counts must be >= 1 and --rate/--seconds > 0")
    if args.out is None:
        args.out = DEFAULT_OUTS[args.database]
    return args


DATABASE_LABELS = {"sqlite": "SQLite", "postgres": "PostgreSQL"}


def postgres_facts(b: Bench, db: pg.LocalPostgres, least: int) -> dict[str, Any]:
    """The PostgreSQL server, and a check that the flow runs really are in its database."""
    facts: dict[str, Any] = {"version": db.version, "port": db.port, "flow_runs_in_db": None}
    try:
        runs = int(db.sql("SELECT count(*) FROM flow_run"))
    except (pg.PostgresError, ValueError) as exc:
        b.check("postgres: the flow runs are in PostgreSQL", False, f"counting them failed: {exc}")
        return facts
    facts["flow_runs_in_db"] = runs
    b.check(
        "postgres: the flow runs are in PostgreSQL",
        runs >= least,
        f"{runs} rows in flow_run (expected >= {least})",
    )
    return facts


def publish(store: ArtifactStore, tmp: Path) -> Digest:
    f = tmp / "app.bin"
    f.write_bytes(os.urandom(64 * 1024))
    prov = Provenance(commit="c0ffee", build_url="https://ci.example/1", published_by="bench")
    return store.publish(f, service="api", version="1.0.0", provenance=prov).digest


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    started = time.perf_counter()
    machine = machine_facts(("prefect", "fastapi", "starlette", "uvicorn", "httpx", "h11", "pydantic"))
    # Telemetry writes to the database while the server starts: a source of "database is locked".
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    from promotion import webhook

    keys = Keys()
    os.environ.update(keys.env())  # the receiver process inherits the secrets through its environment
    step: Callable[[str], None] = lambda s: print(s, flush=True)  # noqa: E731
    with (
        tempfile.TemporaryDirectory(prefix="bench-webhook-") as tmp,
        LocalS3(bucket="bench-webhook") as s3,
        aws_credentials(s3),
    ):
        step(f"SeaweedFS at {s3.endpoint_url}; Prefect on {args.database}")
        if args.database == "sqlite":
            step("starting the Prefect test server (SQLite)...")
        with prefect_on(args.database) as prefect_server:
            machine["prefect_database"] = prefect_server.description
            api = prefect_server.api_url
            os.environ["PREFECT_API_URL"] = api  # the receiver's process reads it from its environment
            deployment, deployment_id = register_deployment()
            config = Path(tmp) / "promotion.yaml"
            prefix = f"bench-{uuid.uuid4().hex[:8]}/"
            config.write_text(
                PIPELINE.format(
                    endpoint=s3.endpoint_url, bucket=s3.bucket, prefix=prefix, deployment=deployment
                )
            )
            pipeline = load_pipeline(config)
            digest = publish(ArtifactStore(pipeline), Path(tmp))
            step(f"Prefect at {api}; deployment {deployment}; artifact {digest.short}")
            with (
                server_process("webhook", config) as url,
                server_process("bare", config) as bare_url,
            ):
                b = Bench(keys, digest, pipeline, deployment, deployment_id, url)
                step(f"1/3 latency: {args.latency_samples} deliveries, one at a time...")
                latency = bench_latency(b, args.latency_samples)
                step(f"2/3 sustained: {args.rate:g} req/s for {args.seconds:g} s...")
                sustained = bench_sustained(b, args.rate, args.seconds)
                step(f"3/3 throughput: {args.repeats} x {args.throughput_seconds:g} s per target...")
                throughput = bench_throughput(
                    b, bare_url, args.connections, args.throughput_seconds, args.repeats
                )
            postgres: dict[str, Any] | None = None
            if prefect_server.postgres is not None:
                # at least: the warm-ups, both sides of every latency sample, every sustained run listed
                least = 4 + 2 * args.latency_samples + sustained["runs_listed_for_these_deliveries"]
                postgres = postgres_facts(b, prefect_server.postgres, least)
    machine["loadavg_at_end"] = os.getloadavg()
    res: dict[str, Any] = {
        "database": args.database,
        "prefect_api_url": api,
        "machine": machine,
        "params": {
            "latency_samples": args.latency_samples,
            "rate": args.rate,
            "seconds": args.seconds,
            "throughput_seconds": args.throughput_seconds,
            "throughput_repeats": args.repeats,
            "connections": args.connections,
            "quick": args.quick,
            "database": args.database,
        },
        "settings": {
            "uvicorn": {**webhook.UVICORN_SETTINGS, "log_level": "warning", "access_log": False},
            "max_in_flight": int(os.environ.get(webhook.MAX_IN_FLIGHT_ENV, webhook.DEFAULT_MAX_IN_FLIGHT)),
            "max_body_bytes": webhook.MAX_BODY_BYTES,
        },
        "latency": latency,
        "sustained": sustained,
        "throughput": throughput,
        "checks": b.checks,
        "total_s": time.perf_counter() - started,
    }
    if postgres is not None:
        res["postgres"] = postgres
    print()
    print(render(res))
    out: Path = args.out
    write_results(out, res)
    return 0 if all(c["ok"] for c in b.checks) else 1


if __name__ == "__main__":
    sys.exit(main())
