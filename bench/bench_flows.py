"""Benchmark the promotion flows against a real Prefect server and a real local S3 server.

Run it from the repository root::

    .venv/bin/python bench/bench_flows.py             # 10 promotions + 10 baselines, 10 approvals
    .venv/bin/python bench/bench_flows.py --quick     # smoke run: 2 + 2, 2 approvals
    .venv/bin/python bench/bench_flows.py --runs 20 --approvals 20 --out /tmp/flows.json
    .venv/bin/python bench/bench_flows.py --database postgres   # the Prefect server on PostgreSQL
    .venv/bin/python bench/bench_flows.py --database both       # SQLite, then PostgreSQL, side by side

The script starts its own SeaweedFS server (:class:`promotion.local_s3.LocalS3`, every port on
127.0.0.1, data in a temporary directory) and its own Prefect server. With ``--database sqlite``
(the default) that is ``prefect_test_harness(server_startup_timeout=180)`` (a uvicorn subprocess
on a free 127.0.0.1 port, SQLite in a temporary directory; ``PREFECT_API_URL`` points at it for
the duration). With ``--database postgres`` the script starts its own PostgreSQL (``bench/pg.py``:
Debian's server, installed with apt-get when missing; ``initdb --auth=trust`` as the ``postgres``
OS user into a temporary directory, ``pg_ctl start`` on a free 127.0.0.1 port, default server
settings) and a Prefect server on it
(``PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://postgres@127.0.0.1:PORT/prefect``,
``PREFECT_HOME`` in a temporary directory). ``--postgres-server harness`` (the default) starts
it with the very command and settings the harness uses for SQLite (uvicorn, no UI, the services
of an ephemeral server), so that the two differ in the database only; ``--postgres-server cli``
runs ``prefect server start`` instead (UI and every background service, as in production). This
process's client is pointed at it with ``prefect.settings.temporary_settings`` plus the global
settings context, as the harness does (``os.environ["PREFECT_API_URL"]`` set after Prefect is
imported is not read). ``--database both`` runs every part on SQLite, then on PostgreSQL (one
SeaweedFS server for both, a fresh Prefect server each; ``--approvals-on sqlite`` skips part 2
on PostgreSQL) and ends with a side-by-side table.
Every flow runs in this process against those servers. It prints a table and writes JSON (default
``bench/results/flows.json``; with ``both``, one object per database under ``databases``) with
every sample and the facts of the machine (CPU count, load average before and after each part:
another engineer may be running tests on this 2-core machine). The servers, the temporary files
and any flow run still waiting in a thread are cleaned up on exit, Ctrl-C and SIGTERM included.
The exit status is 1 when a correctness check failed (a run that did not promote, a baseline
that returned the wrong thing, on PostgreSQL: no flow runs in its database); the figures are
still printed and written.

Prefect's console log lines are silenced (``--verbose`` keeps them); the logs still go to the
API, as in production. Times come from ``time.perf_counter`` unless said otherwise.

What each figure means
----------------------
1. Orchestration overhead
   *ours*: ``promote_pipeline(service, digest, config=...)`` of a freshly published artifact
   through dev (tests + coverage gates), staging (scan + policy) and prod (soak 0s + policy), no
   approval, no deploy target: wall time of the call in this process, until the final state is
   returned. Each run gets a new store prefix and a new artifact (published with the evidence in
   ``examples/evidence``, outside the timed region), so every run really promotes three times.
   *baseline*: a bare Prefect ``@flow`` that calls 3 subflows, each submitting 2 trivial tasks
   (``@task``) concurrently (as many as our gates: 2, 2, 2) and waiting for them; same server.
   The two alternate (ours first on even runs, baseline first on odd runs) after one untimed
   warm-up of each. Reported: median and p90 of each, and ratio = median(ours) /
   median(baseline) (goal <= 1.3), plus the ratio of each back-to-back pair.
   *context, not a goal*: the same bare flow shaped like ours (per stage: 2 concurrent tasks,
   then a "deploy" task and a "verify" task, sequential), run after each pair: the difference
   between it and the baseline is what our extra tasks cost; the rest of our extra is product work.
   Where our extra time goes (always printed; it matters when the ratio is above goal):
   (a) the Prefect server's view: the pipeline run's and each stage run's start..end from the API,
       and the client wall time outside the server-recorded run (flow run creation, engine
       start-up, heartbeat join at exit);
   (b) counters taken during each timed run: Prefect API calls per endpoint (count; time
       including the Prefect client's retries and their back-off sleeps; answers that made it
       retry: 503/423/429/502), S3 requests per operation (through ``promotion.s3.S3.call``) and
       S3 client constructions. Events and task-run states travel over the events websocket and
       are not counted. Summed times of concurrent requests can exceed the wall time;
   (c) the pure parts measured outside Prefect on a fresh artifact (``promotion.evaluate`` /
       ``promotion.plan``, ledger reads and appends, config load, and the Prefect calls the
       product adds: the store lock, artifacts, events), each unit cost (median) times how
       often one promotion does it = a model of our extra work, shown next to the measured
       extra (median ours - median baseline);
   (d) an attribution of the mean extra (mean ours - mean baseline) to: the Prefect client's
       back-off after answers it retries (503 = the SQLite server's "database is locked"), S3 client
       construction, time on the wire of the extra Prefect API requests, S3 requests, our extra
       tasks, gate CPU. Pieces that overlap in time (the 2 gates of a stage fetch evidence
       concurrently) can make the remainder negative.
2. Approval latency
   A one-stage pipeline whose stage requires approval (approvers [alice], 1 approval, timeout
   300s) runs in a thread. The script polls the API until that stage run is PAUSED and its
   resume form schema is stored, waits a random 0..2 x poll-interval (a person answers at any
   moment of the run's poll cycle), then calls ``resume_flow_run(run_id, run_input=...)``.
   Latency = start of the stage's ``deploy`` task run (its ``start_time`` from the Prefect API,
   the client-side timestamp of its RUNNING state) minus the wall clock when ``resume_flow_run``
   returned. Also shown: resume -> the ledger's ``approval`` record (``at``: the run noticed the
   resume and recorded the decision), and resume -> the ledger's ``promoted`` record (an upper
   bound: written after the deploy). p50/p90/max, goal p50 <= 3 s. The product's poll interval
   is used as shipped (``PROMOTION_APPROVAL_POLL_SECONDS`` is unset: 1 s); Prefect's own default
   would be 10 s, i.e. about 4.5 s more at the median (printed as an estimate, not measured).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime as dt
import math
import os
import random
import signal
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import httpx
import pg  # bench/pg.py, beside this script (the script's directory is first on sys.path)
from _common import (
    BENCH_DIR,
    RESULTS_DIR,
    UUID_PATTERN,
    BenchError,
    RecordsChecks,
    exit_on_sigterm,
    fill_defaults,
    fmt_samples,
    machine_facts,
    median,
    paired,
    percentile,
    prefect_on,
    quiet_prefect_console,
    render_checks,
    write_results,
)
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
    TaskRunFilterName,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.exceptions import ObjectNotFound

from flows._report import artifact_key
from flows.approval import poll_interval
from flows.pipeline import promote_pipeline
from promotion import s3 as s3_module
from promotion.config import load_pipeline
from promotion.digest import Digest
from promotion.evaluate import MAX_EVIDENCE_BYTES, GateContext, evaluate, pre_deploy_gates
from promotion.gates import GateResult
from promotion.local_s3 import LocalS3
from promotion.lock import Holder, StoreLock
from promotion.models import EnvState, EvidenceRef, Provenance, utcnow
from promotion.plan import plan, previous_environment
from promotion.report import stage_report
from promotion.s3 import S3
from promotion.store import ArtifactStore, parse_evidence
from tests.flow_threads import FlowThread  # on the path through _common; no heartbeats, no Prefect
from tests.local_servers import aws_credentials  # on the path through _common

T = TypeVar("T")

REPO = BENCH_DIR.parent
EVIDENCE = REPO / "examples" / "evidence"
DEFAULT_OUT = RESULTS_DIR / "flows.json"
SERVICE = "api"
GATES_PER_STAGE = (2, 2, 2)
STAGES = ("dev", "staging", "prod")
OVERHEAD_GOAL = 1.3
APPROVAL_GOAL_P50_S = 3.0
PREFECT_DEFAULT_POLL_S = 10
POLL_ENV = "PROMOTION_APPROVAL_POLL_SECONDS"
APPROVER = "alice"
REQUESTER = "erin"
AUTHOR = "dana"

OVERHEAD_PIPELINE = """
store: {{endpoint_url: "{endpoint}", bucket: {bucket}, prefix: "{prefix}"}}
services: [{{name: api}}]
environments:
  - name: dev
    gates:
      - {{kind: tests, min_pass_rate: 1.0}}
      - {{kind: coverage, min_line_rate: 0.8}}
  - name: staging
    gates:
      - {{kind: scan, max_findings: {{error: 0}}}}
      - {{kind: policy, require_provenance: [commit, build_url]}}
  - name: prod
    gates:
      - {{kind: soak, min_duration: 0s}}
      - {{kind: policy, require_provenance: [commit, build_url]}}
"""

APPROVAL_PIPELINE = """
store: {{endpoint_url: "{endpoint}", bucket: {bucket}, prefix: "{prefix}"}}
services: [{{name: api}}]
environments:
  - name: dev
    approval: {{approvers: [alice], min_approvals: 1, timeout: 300s}}
"""

#: How often one 3-stage promotion (no approval, no deploy target) does each pure part.
#: Parent: load, record, state, table artifact. Each stage: load, record, state, its gates, state
#: again under the lock, store lock (S3 create + conditional delete), ledger append, markdown
#: artifact, event.
MODEL_COUNTS = {
    "config load (YAML + validation)": 4,
    "S3 client (new boto3 session)": 1,  # flows.pipeline keeps one store per pipeline file
    "artifact record read": 4,
    "ledger state read": 7,
    "gates of one stage (S3 evidence fetch + evaluate)": 3,
    "ledger append (promoted)": 3,
    "store lock acquire + release": 3,
    "markdown/table artifact": 4,
    "emit_event": 3,
}


# -- statistics ------------------------------------------------------------------------------------


def summary(samples: Sequence[float]) -> dict[str, Any]:
    return {
        "n": len(samples),
        "median_s": median(samples),
        "p90_s": percentile(samples, 90),
        "min_s": min(samples) if samples else math.nan,
        "max_s": max(samples) if samples else math.nan,
        "samples_s": [round(x, 4) for x in samples],
    }


# -- instrumentation -------------------------------------------------------------------------------


@dataclass
class Tally:
    """Requests seen during one timed run: Prefect API by endpoint, S3 by operation."""

    #: Prefect client calls: count and time including the client's own retries and back-off.
    api_n: Counter[str] = field(default_factory=Counter)
    api_s: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    #: HTTP attempts under those calls, their time, and answers that make the client retry.
    api_attempts: Counter[str] = field(default_factory=Counter)
    api_attempt_s: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    api_retry_answers: Counter[str] = field(default_factory=Counter)
    s3_n: Counter[str] = field(default_factory=Counter)
    s3_s: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    clients_n: int = 0
    clients_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        keys = sorted(set(self.api_n) | set(self.api_attempts))
        return {
            "prefect_api": {
                k: {
                    "n": self.api_n[k],
                    "s": round(self.api_s[k], 5),
                    "attempts": self.api_attempts[k],
                    "attempt_s": round(self.api_attempt_s[k], 5),
                    "retry_answers": self.api_retry_answers[k],
                }
                for k in keys
            },
            "s3": {k: {"n": self.s3_n[k], "s": round(self.s3_s[k], 5)} for k in sorted(self.s3_n)},
            "s3_clients": {"n": self.clients_n, "s": round(self.clients_s, 5)},
        }


#: Answers on which Prefect's client (or its concurrency service) waits and tries again.
RETRY_STATUSES = frozenset({423, 429, 502, 503})


class Probe:
    """Counts and times Prefect API requests and S3 requests (``S3.call``) in this process.

    Prefect calls are timed twice: around the Prefect client's ``send`` (which includes its
    retries and their back-off sleeps) and around each HTTP attempt (``httpx`` ``send``), with the
    status of each attempt. Only while a tally is open; a wrapper costs a ``perf_counter`` pair.
    """

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url.rstrip("/")
        self._lock = threading.Lock()
        self._tally: Tally | None = None
        self._undo: list[Callable[[], None]] = []

    def _endpoint(self, request: httpx.Request) -> str | None:
        url = str(request.url)
        if not url.startswith(self.api_url):
            return None
        path = url[len(self.api_url) :].split("?", 1)[0]
        return f"{request.method} {UUID_PATTERN.sub(':id', path)}"

    def _api(self, request: httpx.Request, took: float) -> None:
        name = self._endpoint(request)
        with self._lock:
            if name is not None and self._tally is not None:
                self._tally.api_n[name] += 1
                self._tally.api_s[name] += took

    def _attempt(self, request: httpx.Request, status: int | None, took: float) -> None:
        name = self._endpoint(request)
        with self._lock:
            if name is not None and self._tally is not None:
                self._tally.api_attempts[name] += 1
                self._tally.api_attempt_s[name] += took
                if status in RETRY_STATUSES:
                    self._tally.api_retry_answers[name] += 1

    def _s3(self, operation: str, took: float) -> None:
        with self._lock:
            if self._tally is not None:
                self._tally.s3_n[operation] += 1
                self._tally.s3_s[operation] += took

    def _client(self, took: float) -> None:
        with self._lock:
            if self._tally is not None:
                self._tally.clients_n += 1
                self._tally.clients_s += took

    def install(self) -> None:
        from prefect.client.base import PrefectHttpxAsyncClient, PrefectHttpxSyncClient

        probe = self
        sync_send = httpx.Client.send
        async_send = httpx.AsyncClient.send
        prefect_sync_send = PrefectHttpxSyncClient.send
        prefect_async_send = PrefectHttpxAsyncClient.send
        s3_call = S3.call
        make_client = s3_module.make_client

        def send(self: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
            t0 = time.perf_counter()
            status: int | None = None
            try:
                response = sync_send(self, request, **kwargs)
                status = response.status_code
                return response
            finally:
                probe._attempt(request, status, time.perf_counter() - t0)

        async def asend(self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any) -> httpx.Response:
            t0 = time.perf_counter()
            status: int | None = None
            try:
                response = await async_send(self, request, **kwargs)
                status = response.status_code
                return response
            finally:
                probe._attempt(request, status, time.perf_counter() - t0)

        def psend(self: PrefectHttpxSyncClient, request: httpx.Request, *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return prefect_sync_send(self, request, *args, **kwargs)
            finally:
                probe._api(request, time.perf_counter() - t0)

        async def pasend(
            self: PrefectHttpxAsyncClient, request: httpx.Request, *args: Any, **kwargs: Any
        ) -> Any:
            t0 = time.perf_counter()
            try:
                return await prefect_async_send(self, request, *args, **kwargs)
            finally:
                probe._api(request, time.perf_counter() - t0)

        def call(self: S3, operation: str, key: str, fn: Callable[[], T]) -> T:
            t0 = time.perf_counter()
            try:
                return s3_call(self, operation, key, fn)
            finally:
                probe._s3(operation, time.perf_counter() - t0)

        def client(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return make_client(*args, **kwargs)
            finally:
                probe._client(time.perf_counter() - t0)

        httpx.Client.send = send  # type: ignore[method-assign]
        httpx.AsyncClient.send = asend  # type: ignore[method-assign]
        PrefectHttpxSyncClient.send = psend  # type: ignore[method-assign]
        PrefectHttpxAsyncClient.send = pasend  # type: ignore[method-assign]
        S3.call = call  # type: ignore[method-assign]
        s3_module.make_client = client

        def undo() -> None:
            httpx.Client.send = sync_send  # type: ignore[method-assign]
            httpx.AsyncClient.send = async_send  # type: ignore[method-assign]
            PrefectHttpxSyncClient.send = prefect_sync_send  # type: ignore[method-assign]
            PrefectHttpxAsyncClient.send = prefect_async_send  # type: ignore[method-assign]
            S3.call = s3_call  # type: ignore[method-assign]
            s3_module.make_client = make_client

        self._undo.append(undo)

    def uninstall(self) -> None:
        while self._undo:
            self._undo.pop()()

    @contextmanager
    def tally(self) -> Iterator[Tally]:
        t = Tally()
        with self._lock:
            self._tally = t
        try:
            yield t
        finally:
            with self._lock:
                self._tally = None


# -- the bare Prefect baseline ---------------------------------------------------------------------


@task(name="bench-trivial", cache_policy=NO_CACHE)
def trivial(stage: int, i: int) -> int:
    return stage * 100 + i


@flow(name="bench-bare-stage")
def bare_stage(stage: int, tasks: int, shaped_like_ours: bool = False) -> list[int]:
    futures = [trivial.submit(stage, i) for i in range(tasks)]
    out = [f.result() for f in futures]
    if shaped_like_ours:  # a "deploy" and a "verify" task after the gates, one after the other
        out.append(trivial(stage, 98))
        out.append(trivial(stage, 99))
    return out


@flow(name="bench-bare-pipeline")
def bare_pipeline(gates: list[int], shaped_like_ours: bool = False) -> list[list[int]]:
    out: list[list[int]] = []
    for stage, n in enumerate(gates):
        state = bare_stage(stage, n, shaped_like_ours, return_state=True)
        if not state.is_completed():
            raise BenchError(f"bare stage {stage} ended {state.type.value}: {state.message}")
        out.append(state.result())
    return out


def expected_bare(shaped_like_ours: bool) -> list[list[int]]:
    extra = [98, 99] if shaped_like_ours else []
    return [[s * 100 + i for i in [*range(n), *extra]] for s, n in enumerate(GATES_PER_STAGE)]


# -- set-up ----------------------------------------------------------------------------------------


@dataclass
class Bench(RecordsChecks):
    print_failures = True  # a run takes minutes: say at once

    server: LocalS3
    api_url: str
    tmp: Path
    probe: Probe
    checks: list[dict[str, Any]] = field(default_factory=list)
    #: Flow runs started in threads, for the clean-up on interruption.
    threads: list[FlowThread] = field(default_factory=list)

    def config(self, template: str, tag: str) -> Path:
        """A pipeline file on the shared S3 server with a fresh, empty key prefix."""
        prefix = f"bench-{tag}-{uuid.uuid4().hex[:10]}/"
        path = self.tmp / f"{tag}-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(
            template.format(endpoint=self.server.endpoint_url, bucket=self.server.bucket, prefix=prefix),
            encoding="utf-8",
        )
        return path

    def publish(self, config: Path) -> tuple[ArtifactStore, Digest]:
        """Publish a new random artifact with passing evidence (never timed)."""
        store = ArtifactStore(load_pipeline(config))
        f = self.tmp / f"app-{uuid.uuid4().hex[:8]}.bin"
        f.write_bytes(os.urandom(16) * 100)
        prov = Provenance(
            commit="c0ffee", commit_author=AUTHOR, build_url="https://ci.example/1", published_by="ci"
        )
        evidence = parse_evidence(
            [
                f"junit={EVIDENCE / 'junit.xml'}",
                f"coverage={EVIDENCE / 'coverage.xml'}",
                f"sarif={EVIDENCE / 'bandit.sarif'}",
            ]
        )
        res = store.publish(f, service=SERVICE, version="1.0", provenance=prov, evidence=evidence)
        f.unlink()
        if res.already_published:
            raise BenchError(f"{res.digest} was already published: the run would not really promote")
        return store, res.digest


# -- 1. orchestration overhead ---------------------------------------------------------------------


def run_timings(parent_id: UUID, wall: float) -> dict[str, Any]:
    """The server's view of one pipeline run: its own start..end and each stage run's."""

    def span(r: FlowRun) -> float:
        if r.start_time is None or r.end_time is None:
            return math.nan
        return float((r.end_time - r.start_time).total_seconds())

    with get_client(sync_client=True) as client:
        parent = client.read_flow_run(parent_id)
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_id]))
        )
    children.sort(key=lambda r: r.start_time or dt.datetime.max.replace(tzinfo=dt.UTC))
    stages = [span(r) for r in children]
    parent_s = span(parent)
    return {
        "parent_run_s": parent_s,
        "stage_runs_s": stages,
        "parent_outside_stages_s": parent_s - sum(stages),
        "client_outside_parent_s": wall - parent_s,
    }


def run_ours(b: Bench, label: str) -> dict[str, Any]:
    config = b.config(OVERHEAD_PIPELINE, "overhead")
    store, digest = b.publish(config)
    with b.probe.tally() as t:
        t0 = time.perf_counter()
        state = promote_pipeline(SERVICE, str(digest), config=str(config), return_state=True)
        wall = time.perf_counter() - t0
    expected = f"promoted {digest.short} to prod"
    promoted = [r.environment for r in store.ledger.records(SERVICE) if r.event == "promoted"]
    ok = state.is_completed() and state.message == expected and promoted == list(STAGES)
    b.check(f"ours {label}: promoted through dev, staging, prod", ok, f"{state.message}; promoted {promoted}")
    out: dict[str, Any] = {"wall_s": wall, "requests": t.as_dict()}
    if state.state_details.flow_run_id is not None:
        out["server"] = run_timings(state.state_details.flow_run_id, wall)
    return out


def run_bare(b: Bench, label: str, shaped_like_ours: bool = False) -> dict[str, Any]:
    with b.probe.tally() as t:
        t0 = time.perf_counter()
        state = bare_pipeline(list(GATES_PER_STAGE), shaped_like_ours, return_state=True)
        wall = time.perf_counter() - t0
    result = state.result() if state.is_completed() else None
    b.check(
        f"baseline {label}: all tasks ran",
        result == expected_bare(shaped_like_ours),
        f"{state.type.value}: {result}",
    )
    out: dict[str, Any] = {"wall_s": wall, "requests": t.as_dict()}
    if state.state_details.flow_run_id is not None:
        out["server"] = run_timings(state.state_details.flow_run_id, wall)
    return out


def bench_overhead(b: Bench, runs: int) -> dict[str, Any]:
    # Untimed warm-up: the first run of each flow registers it and opens the connections.
    warm = {"ours_s": run_ours(b, "warm-up")["wall_s"], "baseline_s": run_bare(b, "warm-up")["wall_s"]}
    warm["shaped_s"] = run_bare(b, "warm-up shaped", shaped_like_ours=True)["wall_s"]
    ours: list[dict[str, Any]] = []
    base: list[dict[str, Any]] = []
    shaped: list[dict[str, Any]] = []
    for i in range(runs):
        one_ours, one_base = paired(i, partial(run_ours, b, f"#{i}"), partial(run_bare, b, f"#{i}"))
        ours.append(one_ours)
        base.append(one_base)
        shaped.append(run_bare(b, f"#{i} shaped", shaped_like_ours=True))
        print(
            f"  run {i + 1}/{runs}: ours {ours[-1]['wall_s']:.3f} s, baseline {base[-1]['wall_s']:.3f} s, "
            f"shaped like ours {shaped[-1]['wall_s']:.3f} s",
            flush=True,
        )
    o = [r["wall_s"] for r in ours]
    t = [r["wall_s"] for r in base]
    pairs = [a / c for a, c in zip(o, t, strict=True)]
    ratio = median(o) / median(t)
    return {
        "ours": summary(o),
        "baseline": summary(t),
        "baseline_shaped_like_ours": summary([r["wall_s"] for r in shaped]),
        "ratio": {
            "ours_over_baseline": ratio,
            "paired_median": median(pairs),
            "paired": [round(x, 4) for x in pairs],
            "goal": OVERHEAD_GOAL,
            "meets_goal": ratio <= OVERHEAD_GOAL,
        },
        "warmup_untimed_s": warm,
        "runs": {"ours": ours, "baseline": base, "baseline_shaped_like_ours": shaped},
        "where": where_the_time_goes(ours, base, shaped),
    }


def _median_of(runs: list[dict[str, Any]], get: Callable[[dict[str, Any]], float]) -> float:
    return median([get(r) for r in runs if "server" in r])


def _requests_per_run(runs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, float]]:
    """Mean per run of every counter of each endpoint/operation."""
    acc: defaultdict[str, defaultdict[str, float]] = defaultdict(lambda: defaultdict(float))
    for r in runs:
        for k, v in r["requests"][kind].items():
            for name, x in v.items():
                acc[k][name] += x
    return {k: {name: x / len(runs) for name, x in acc[k].items()} for k in sorted(acc)}


def _retries(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Answers that made Prefect's client retry, and the time its calls spent beyond their attempts."""
    answers = [sum(v.get("retry_answers", 0) for v in r["requests"]["prefect_api"].values()) for r in runs]
    waits = [
        sum(v["s"] - v.get("attempt_s", v["s"]) for v in r["requests"]["prefect_api"].values()) for r in runs
    ]
    return {
        "answers_per_run": answers,
        "runs_with_retries": sum(1 for a in answers if a),
        "backoff_s_per_run": [round(w, 4) for w in waits],
        "backoff_median_s": median(waits),
        "backoff_mean_s": sum(waits) / len(waits) if waits else math.nan,
    }


def where_the_time_goes(
    ours: list[dict[str, Any]], base: list[dict[str, Any]], shaped: list[dict[str, Any]]
) -> dict[str, Any]:
    def view(runs: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "parent_run_s": _median_of(runs, lambda r: r["server"]["parent_run_s"]),
            "stage_runs_s": [
                median([r["server"]["stage_runs_s"][i] for r in runs if "server" in r])
                for i in range(len(STAGES))
            ],
            "parent_outside_stages_s": _median_of(runs, lambda r: r["server"]["parent_outside_stages_s"]),
            "client_outside_parent_s": _median_of(runs, lambda r: r["server"]["client_outside_parent_s"]),
        }

    def mean(xs: Sequence[float]) -> float:
        return sum(xs) / len(xs) if xs else math.nan

    def api_attempts_s(r: dict[str, Any]) -> float:
        return float(sum(v["attempt_s"] for k, v in r["requests"]["prefect_api"].items() if "/logs" not in k))

    def backoff_s(r: dict[str, Any]) -> float:
        return float(sum(v["s"] - v["attempt_s"] for v in r["requests"]["prefect_api"].values()))

    clients = [r["requests"]["s3_clients"] for r in ours]
    wall = {name: mean([r["wall_s"] for r in runs]) for name, runs in (("ours", ours), ("base", base))}
    attribution = {
        "measured_extra_s": wall["ours"] - wall["base"],
        "extra_tasks_s": mean([r["wall_s"] for r in shaped]) - wall["base"],
        "prefect_retry_backoff_s": mean([backoff_s(r) for r in ours]) - mean([backoff_s(r) for r in base]),
        "prefect_api_requests_s": mean([api_attempts_s(r) for r in ours])
        - mean([api_attempts_s(r) for r in base]),
        "s3_client_construction_s": mean([c["s"] for c in clients]),
        "s3_requests_summed_s": mean([sum(v["s"] for v in r["requests"]["s3"].values()) for r in ours]),
    }
    return {
        "attribution_means_per_run": attribution,
        "server_view_medians": {"ours": view(ours), "baseline": view(base), "shaped": view(shaped)},
        "prefect_api_per_run": {
            "ours": _requests_per_run(ours, "prefect_api"),
            "baseline": _requests_per_run(base, "prefect_api"),
            "shaped": _requests_per_run(shaped, "prefect_api"),
        },
        "prefect_retries": {"ours": _retries(ours), "baseline": _retries(base), "shaped": _retries(shaped)},
        "s3_per_run": _requests_per_run(ours, "s3"),
        "s3_clients_per_run": {
            "n": sum(c["n"] for c in clients) / len(clients),
            "s": sum(c["s"] for c in clients) / len(clients),
        },
    }


# -- 1c. the pure parts, outside Prefect -------------------------------------------------------------


@dataclass
class Stopwatch:
    """Named samples; ``with sw("name"): ...`` adds one."""

    samples: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.samples[name].append(time.perf_counter() - t0)


def pure_parts(b: Bench, reps: int) -> dict[str, Any]:
    """Unit costs of what a promotion does besides orchestration, measured without any flow."""
    sw = Stopwatch()
    gate_cpu: list[float] = []
    plan_s: list[float] = []
    for i in range(reps):
        gate_cpu.append(_pure_once(b, i, sw, plan_s))
    units = {
        k: {"median_s": median(v), "n": len(v), "count_per_promotion": MODEL_COUNTS[k]}
        for k, v in sw.samples.items()
    }
    model = sum(u["median_s"] * u["count_per_promotion"] for u in units.values())
    return {
        "reps": reps,
        "units": units,
        "gates_cpu_only_all_stages": summary(gate_cpu),
        "plan_all_stages": summary(plan_s),
        "modelled_extra_s": model,
    }


def _pure_once(b: Bench, i: int, sw: Stopwatch, plan_s: list[float]) -> float:
    """One fresh artifact through every pure part; returns the CPU-only gate time of all stages."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact
    from prefect.events import emit_event

    config = b.config(OVERHEAD_PIPELINE, "pure")
    _, digest = b.publish(config)
    pipeline = load_pipeline(config)
    store = ArtifactStore(pipeline)
    with sw("config load (YAML + validation)"):
        again = load_pipeline(config)
    with sw("S3 client (new boto3 session)"):
        ArtifactStore(again)
    with sw("artifact record read"):
        artifact = store.record(SERVICE, digest)
    with sw("ledger state read"):
        store.ledger.state(SERVICE)
    now = utcnow()
    cache: dict[str, bytes] = {}

    def load(ref: EvidenceRef) -> bytes:
        data = store.fetch_bytes(ref.digest, max_size=MAX_EVIDENCE_BYTES)
        cache[str(ref.digest)] = data
        return data

    def cached(ref: EvidenceRef) -> bytes:
        return cache[str(ref.digest)]

    all_results: list[list[GateResult]] = []
    cpu = 0.0
    for env in pipeline.environments:
        prev = previous_environment(pipeline, env.name)
        previous = EnvState(digest=digest, version="1.0", since=now, by="bench", seq=0) if prev else None
        ctx = GateContext(SERVICE, digest, env, artifact, prev, previous, now, load)
        gates = pre_deploy_gates(env)
        with sw("gates of one stage (S3 evidence fetch + evaluate)"):
            results = [evaluate(g, ctx) for g in gates]
        bad = [f"{r.gate}: {r.reasons}" for r in results if not r.passed]
        b.check(f"pure #{i}: {env.name} gates pass", not bad, "; ".join(bad) or "all passed")
        all_results.append(results)
        mem = dataclasses.replace(ctx, load_evidence=cached)
        t0 = time.perf_counter()
        for g in gates:
            evaluate(g, mem)
        cpu += time.perf_counter() - t0
    t0 = time.perf_counter()
    p = plan(store, SERVICE, digest)
    plan_s.append(time.perf_counter() - t0)
    actions = [s.action for s in p.stages]
    b.check(f"pure #{i}: plan promotes every stage", actions == ["promote"] * 3, p.summary())
    for env_name, results in zip(STAGES, all_results, strict=True):
        with sw("ledger append (promoted)"):
            store.ledger.append(
                SERVICE,
                "promoted",
                digest,
                actor="bench",
                environment=env_name,
                version="1.0",
                reason="gates passed",
                gates=[r.model_dump(mode="json") for r in results],
                details={"approvals": [], "deploy": {}, "previous": None, "flow_run_id": "bench"},
                idempotency_id=f"bench-{uuid.uuid4().hex}:promoted",
            )
        with (
            sw("store lock acquire + release"),
            StoreLock(store.s3, SERVICE, env_name, Holder.here("bench", "bench"), timeout_s=60),
        ):
            pass
        report_md = stage_report(artifact, env_name, "promoted", results, [], [])
        with sw("markdown/table artifact"), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "outside of a flow run is deprecated"
            create_markdown_artifact(
                markdown=report_md, key=artifact_key("bench-pure", SERVICE, env_name), description="bench"
            )
        with sw("emit_event"):
            emit_event(
                event="promotion.bench",
                resource={"prefect.resource.id": f"promotion.{SERVICE}.{env_name}"},
                payload={"digest": str(digest)},
            )
    with sw("markdown/table artifact"), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        create_table_artifact(
            table=[{"environment": e, "outcome": "promoted"} for e in STAGES],
            key=artifact_key("bench-pure", SERVICE),
            description="bench",
        )
    promoted = [r.environment for r in store.ledger.records(SERVICE) if r.event == "promoted"]
    b.check(f"pure #{i}: ledger appends landed", promoted == list(STAGES), str(promoted))
    return cpu


# -- 2. approval latency ---------------------------------------------------------------------------


def _schema_saved(client: Any, run_id: UUID) -> bool:
    run = client.read_flow_run(run_id)
    st = run.state
    if st is None or not st.is_paused():
        return False
    keyset = st.state_details.run_input_keyset
    if not keyset or "schema" not in keyset:
        return False
    try:
        client.read_flow_run_input(run_id, keyset["schema"])
    except ObjectNotFound:
        return False
    return True


def wait_paused(b: Bench, ft: FlowThread, seen: set[UUID], timeout: float = 120) -> tuple[UUID, bool, float]:
    """The paused stage run; whether its form schema was already stored when PAUSED was first seen."""
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["promote-to-environment"])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                ),
            )
            fresh = [r.id for r in runs if r.id not in seen]
            if fresh:
                run_id = fresh[0]
                ft.paused_id = run_id
                seen.add(run_id)
                first = _schema_saved(client, run_id)
                t0 = time.perf_counter()
                ready = first
                while not ready and time.monotonic() < deadline:
                    time.sleep(0.02)  # polling the API for a condition, with a deadline
                    ready = _schema_saved(client, run_id)
                if not ready:
                    raise BenchError(f"paused run {run_id} never stored its resume form schema")
                return run_id, first, time.perf_counter() - t0
            if not ft.thread.is_alive():
                raise BenchError(f"the run ended without pausing: {ft.state} {ft.error}")
            time.sleep(0.05)  # polling the API for a condition, with a deadline
    raise BenchError("no paused stage run appeared")


def wait_deploy_start(run_id: UUID, timeout: float = 60) -> float:
    """Epoch seconds at which the stage run's deploy task started (from the API)."""
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            trs = client.read_task_runs(
                task_run_filter=TaskRunFilter(
                    flow_run_id=TaskRunFilterFlowRunId(any_=[run_id]), name=TaskRunFilterName(like_="deploy")
                )
            )
            for tr in trs:
                if tr.start_time is not None:
                    return float(tr.start_time.timestamp())
                for st in client.read_task_run_states(tr.id):
                    if st.type == StateType.RUNNING:
                        return float(st.timestamp.timestamp())
            time.sleep(0.05)  # polling the API for a condition, with a deadline
    raise BenchError(f"no deploy task run started in {run_id}")


def bench_approvals(b: Bench, n: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    interval = poll_interval()
    rows: list[dict[str, Any]] = []
    seen: set[UUID] = set()
    for i in range(n):
        config = b.config(APPROVAL_PIPELINE, "approval")
        store, digest = b.publish(config)
        t_start = time.perf_counter()
        ft = FlowThread(
            promote_pipeline, service=SERVICE, digest=str(digest), requested_by=REQUESTER, config=str(config)
        )
        b.threads.append(ft)
        run_id, schema_at_pause, schema_wait = wait_paused(b, ft, seen)
        to_pause = time.perf_counter() - t_start
        delay = rng.uniform(0, 2 * interval)
        time.sleep(delay)  # a person answers at a random moment of the run's poll cycle
        from prefect.flow_runs import resume_flow_run

        resume_flow_run(run_id, run_input={"decision": "approve", "approver": APPROVER, "reason": ""})
        resumed = time.time()
        deploy_at = wait_deploy_start(run_id)
        try:
            state = ft.join(120)
        except TimeoutError as exc:
            raise BenchError(str(exc)) from None
        b.threads.remove(ft)
        recs = store.ledger.records(SERVICE)
        approval = next((r for r in recs if r.event == "approval"), None)
        promoted = next((r for r in recs if r.event == "promoted"), None)
        ok = state.is_completed() and approval is not None and promoted is not None
        b.check(f"approval #{i}: approved and promoted to dev", ok, f"{state.message}")
        row = {
            "flow_run_id": str(run_id),
            "start_to_paused_s": to_pause,
            "schema_stored_when_paused_seen": schema_at_pause,
            "schema_wait_s": schema_wait,
            "random_delay_s": delay,
            "resume_to_deploy_start_s": deploy_at - resumed,
            "resume_to_approval_recorded_s": approval.at.timestamp() - resumed if approval else math.nan,
            "approval_recorded_to_deploy_start_s": deploy_at - approval.at.timestamp()
            if approval
            else math.nan,
            "resume_to_promoted_recorded_s": promoted.at.timestamp() - resumed if promoted else math.nan,
        }
        rows.append(row)
        print(
            f"  approval {i + 1}/{n}: resume -> deploy start {row['resume_to_deploy_start_s']:.3f} s "
            f"(after a {delay:.2f} s wait)",
            flush=True,
        )

    def col(name: str) -> dict[str, Any]:
        xs = [r[name] for r in rows]
        return {**summary(xs), "p50_s": median(xs)}

    lat = col("resume_to_deploy_start_s")
    return {
        "poll_interval_s": interval,
        "poll_env": os.environ.get(POLL_ENV),
        "prefect_default_poll_interval_s": PREFECT_DEFAULT_POLL_S,
        "random_delay_max_s": 2 * interval,
        "resume_to_deploy_start": lat,
        "resume_to_approval_recorded": col("resume_to_approval_recorded_s"),
        "approval_recorded_to_deploy_start": col("approval_recorded_to_deploy_start_s"),
        "resume_to_promoted_recorded": col("resume_to_promoted_recorded_s"),
        "start_to_paused": col("start_to_paused_s"),
        "schema_missing_when_paused_seen": sum(1 for r in rows if not r["schema_stored_when_paused_seen"]),
        "goal_p50_s": APPROVAL_GOAL_P50_S,
        "meets_goal": lat["p50_s"] <= APPROVAL_GOAL_P50_S,
        "method": "deploy task run start_time (Prefect API); ledger approval/promoted at as context",
        "runs": rows,
    }


def reject_leftovers(b: Bench) -> None:
    """Best effort on interruption: answer any paused run with a rejection, then join its thread."""
    from prefect.exceptions import NotPausedError
    from prefect.flow_runs import resume_flow_run

    for ft in list(b.threads):
        if ft.thread.is_alive() and ft.paused_id is not None:
            try:
                resume_flow_run(
                    ft.paused_id,
                    run_input={"decision": "reject", "approver": APPROVER, "reason": "benchmark interrupted"},
                )
            except NotPausedError:
                pass  # already resumed: it finishes by itself
            except Exception as exc:  # noqa: BLE001 - clean-up must go on
                print(f"could not reject {ft.paused_id}: {exc}", file=sys.stderr)
        ft.thread.join(15)


# -- report ----------------------------------------------------------------------------------------


def load3(x: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.2f}" for v in x) + ")"


def render(res: dict[str, Any]) -> str:
    m, p = res["machine"], res["params"]
    lines: list[str] = []
    add = lines.append
    add(
        f"prefect-promotion flow benchmark  {m['date_utc']}  {m['cpu_count']} CPUs  Python {m['python']}  "
        f"Prefect {m['prefect']}  boto3 {m['boto3']}  SeaweedFS {m['seaweedfs'].removeprefix('version ')}"
    )
    add(
        f"Prefect server: {p['prefect_server']} at {res.get('prefect_api_url')}; "
        f"{p['runs']} runs each side, {p['approvals'] if 'approval' in res else 0} approvals"
    )
    if "postgres" in res:
        pgr = res["postgres"]
        add(
            f"PostgreSQL {pgr['version']} on 127.0.0.1:{pgr['port']}; flow runs in its database after "
            f"the run: {pgr['flow_runs_in_db']}"
        )
    add(f"load average at start {load3(m['loadavg']['start'])}")
    add("")
    if "error" in res:
        add(f"FAILED before the end: {res['error']}")
        add("")
    if "overhead" in res:
        render_overhead(res, add)
    if "approval" in res:
        render_approval(res, add)
    render_checks(res["checks"], add)
    add(f"load average at end {load3(m['loadavg']['end'])}; total {res['total_s']:.1f} s")
    return "\n".join(lines)


def render_comparison(both: dict[str, Any]) -> str:
    """The databases side by side: the headline figures of each part."""
    dbs: dict[str, dict[str, Any]] = both["databases"]
    names = list(dbs)
    lines: list[str] = []
    add = lines.append
    add("side by side: the same benchmark, one Prefect server per database (run one after the other)")
    for name in names:
        add(f"  {name}: {dbs[name]['params']['prefect_server']}")
    add(f"  {'':<58}" + "".join(f"{n:>14}" for n in names))

    def row(label: str, get: Callable[[dict[str, Any]], Any], fmt: str = "{:14.3f}") -> None:
        cells = []
        for n in names:
            try:
                v = get(dbs[n])
            except (KeyError, IndexError, TypeError, ZeroDivisionError):
                v = None
            cells.append(f"{'-':>14}" if v is None else fmt.format(v))
        add(f"  {label:<58}" + "".join(cells))

    def retries(r: dict[str, Any], who: str) -> dict[str, Any]:
        return dict(r["overhead"]["where"]["prefect_retries"][who])

    def attr(r: dict[str, Any], key: str) -> float:
        return float(r["overhead"]["where"]["attribution_means_per_run"][key])

    def approvals(r: dict[str, Any], key: str) -> float:
        return float(r["approval"]["resume_to_deploy_start"][key])

    row("1. ours: promote_pipeline, median (s)", lambda r: r["overhead"]["ours"]["median_s"])
    row("   ours p90 (s)", lambda r: r["overhead"]["ours"]["p90_s"])
    row("   baseline: bare flow, median (s)", lambda r: r["overhead"]["baseline"]["median_s"])
    row("   baseline p90 (s)", lambda r: r["overhead"]["baseline"]["p90_s"])
    row(
        f"   RATIO ours/baseline (medians), goal <= {OVERHEAD_GOAL}",
        lambda r: r["overhead"]["ratio"]["ours_over_baseline"],
    )
    row("   ratio, median of the back-to-back pairs", lambda r: r["overhead"]["ratio"]["paired_median"])
    row("   meets goal", lambda r: "yes" if r["overhead"]["ratio"]["meets_goal"] else "NO", "{:>14}")
    row(
        "   bare flow shaped like ours, median (s)",
        lambda r: r["overhead"]["baseline_shaped_like_ours"]["median_s"],
    )
    row("   measured extra, mean ours - mean baseline (s)", lambda r: attr(r, "measured_extra_s"))
    row(
        "   runs with a retried Prefect call: ours",
        lambda r: f"{retries(r, 'ours')['runs_with_retries']}/{len(retries(r, 'ours')['answers_per_run'])}",
        "{:>14}",
    )
    row(
        "   runs with a retried Prefect call: baseline",
        lambda r: (
            f"{retries(r, 'baseline')['runs_with_retries']}/{len(retries(r, 'baseline')['answers_per_run'])}"
        ),
        "{:>14}",
    )
    row(
        "   retry answers (503/423/429/502) per run, ours (mean)",
        lambda r: sum(retries(r, "ours")["answers_per_run"]) / len(retries(r, "ours")["answers_per_run"]),
    )
    row("   client time beyond HTTP tries (back-off), ours", lambda r: retries(r, "ours")["backoff_mean_s"])
    row("   the same, baseline (mean per run, s)", lambda r: retries(r, "baseline")["backoff_mean_s"])
    row("   S3 client construction per run, ours (mean, s)", lambda r: attr(r, "s3_client_construction_s"))
    row(
        "   Prefect API time on the wire, ours - baseline (s)",
        lambda r: attr(r, "prefect_api_requests_s"),
    )
    row(
        "   server's view: pipeline run, ours (median, s)",
        lambda r: r["overhead"]["where"]["server_view_medians"]["ours"]["parent_run_s"],
    )
    row(
        "   server's view: pipeline run, baseline (median, s)",
        lambda r: r["overhead"]["where"]["server_view_medians"]["baseline"]["parent_run_s"],
    )
    row("   modelled product work per promotion (c) (s)", lambda r: r["pure"]["modelled_extra_s"])
    row("2. approval: resume -> deploy task started, p50 (s)", lambda r: approvals(r, "p50_s"))
    row("   p90 (s)", lambda r: approvals(r, "p90_s"))
    row("   max (s)", lambda r: approvals(r, "max_s"))
    row(
        "checks ok",
        lambda r: f"{sum(1 for c in r['checks'] if c['ok'])}/{len(r['checks'])}",
        "{:>14}",
    )
    row("load average (1 min) at start of the database's run", lambda r: r["machine"]["loadavg"]["start"][0])
    row("load average (1 min) after part 1", lambda r: r["machine"]["loadavg"]["after_overhead"][0])
    row("time of the database's run, server start included (s)", lambda r: r["total_s"])
    add(f"total {both['total_s']:.1f} s")
    return "\n".join(lines)


def render_overhead(res: dict[str, Any], add: Callable[[str], None]) -> None:
    o, m = res["overhead"], res["machine"]
    add("1. orchestration overhead: 3-stage promotion (dev: tests+coverage, staging: scan+policy,")
    add("   prod: soak 0s+policy; no approval, no deploy target) vs a bare Prefect flow with 3 subflows")
    add("   of 2 concurrent trivial tasks each; wall time per run, ours/baseline alternating")

    def trow(label: str, s: dict[str, Any]) -> None:
        add(
            f"  {label:<46} median {s['median_s']:7.3f} s   p90 {s['p90_s']:7.3f} s   "
            f"[{fmt_samples(s['samples_s'])}]"
        )

    trow("ours: promote_pipeline", o["ours"])
    trow("baseline: bare flow, 3 subflows x 2 tasks", o["baseline"])
    r = o["ratio"]
    verdict = "meets goal" if r["meets_goal"] else "ABOVE GOAL"
    add(
        f"  {'ratio ours/baseline (medians)':<46} {r['ours_over_baseline']:7.3f}   goal <= {r['goal']}: "
        f"{verdict}   paired: median {r['paired_median']:.3f} [{fmt_samples(r['paired'])}]"
    )
    trow("context: bare flow shaped like ours (+2 tasks)", o["baseline_shaped_like_ours"])
    w = o["warmup_untimed_s"]
    add(
        f"  (untimed warm-up: ours {w['ours_s']:.3f} s, baseline {w['baseline_s']:.3f} s, "
        f"shaped {w['shaped_s']:.3f} s)"
    )
    add(f"  load average after part 1 {load3(m['loadavg'].get('after_overhead', []))}")
    add("")
    wh = o["where"]
    extra = o["ours"]["median_s"] - o["baseline"]["median_s"]
    shaped_extra = o["baseline_shaped_like_ours"]["median_s"] - o["baseline"]["median_s"]
    add(f"  where our extra {extra:.3f} s per run goes (medians or means per run):")
    add(
        f"    our task shape alone (deploy + verify-live tasks per stage, trivial): {shaped_extra:+.3f} s; "
        f"the rest, {extra - shaped_extra:+.3f} s, is product work"
    )
    add("    (a) server's view: run start..end from the API (medians, s)")
    add(
        f"        {'':<10} {'pipeline run':>12} {'stage runs dev/staging/prod':>30} {'parent-only':>12} "
        f"{'client-only':>12}"
    )
    for name in ("ours", "baseline", "shaped"):
        v = wh["server_view_medians"][name]
        stages = "/".join(f"{x:.3f}" for x in v["stage_runs_s"])
        add(
            f"        {name:<10} {v['parent_run_s']:12.3f} {stages:>30} {v['parent_outside_stages_s']:12.3f} "
            f"{v['client_outside_parent_s']:12.3f}"
        )
    add("        (parent-only: pipeline run minus its stage runs; client-only: wall minus pipeline run)")
    add("    (b) Prefect API calls per run (mean; ms include the client's retries and back-off;")
    add("        retry = answers 503/423/429/502; events and task-run states use the websocket, not counted)")
    add(
        f"        {'endpoint':<50} {'ours n':>6} {'ms':>7} {'retry':>5}   "
        f"{'base n':>6} {'ms':>7} {'retry':>5}"
    )
    api_o, api_b = wh["prefect_api_per_run"]["ours"], wh["prefect_api_per_run"]["baseline"]
    keys = sorted(set(api_o) | set(api_b), key=lambda k: -api_o.get(k, {}).get("s", 0.0))
    zero = {"n": 0.0, "s": 0.0, "retry_answers": 0.0}

    def cells(v: dict[str, float]) -> str:
        return f"{v['n']:6.1f} {v['s'] * 1000:7.1f} {v.get('retry_answers', 0.0):5.1f}"

    for k in keys:
        add(f"        {k[:50]:<50} {cells(api_o.get(k, zero))}   {cells(api_b.get(k, zero))}")

    def total(api: dict[str, dict[str, float]]) -> dict[str, float]:
        fg = [v for k, v in api.items() if "/logs" not in k]
        return {
            "n": sum(v["n"] for v in fg),
            "s": sum(v["s"] for v in fg),
            "retry_answers": sum(v.get("retry_answers", 0.0) for v in fg),
        }

    add(
        f"        {'total without /logs (sent in the background)':<50} "
        f"{cells(total(api_o))}   {cells(total(api_b))}"
    )
    for name in ("ours", "baseline"):
        rt = wh["prefect_retries"][name]
        add(
            f"        {name}: runs with a retried call "
            f"{rt['runs_with_retries']}/{len(rt['answers_per_run'])}, "
            f"retry answers per run [{' '.join(str(int(a)) for a in rt['answers_per_run'])}], "
            f"back-off mean {rt['backoff_mean_s']:.3f} s/run"
        )
    s3 = wh["s3_per_run"]
    add(
        f"    S3 requests per run (ours): {sum(v['n'] for v in s3.values()):.1f}, summed "
        f"{sum(v['s'] for v in s3.values()) * 1000:.1f} ms: "
        + ", ".join(f"{k} {v['n']:.1f} ({v['s'] * 1000:.0f} ms)" for k, v in s3.items())
    )
    c = wh["s3_clients_per_run"]
    add(f"    S3 clients built per run (ours): {c['n']:.1f}, {c['s'] * 1000:.1f} ms")
    pp = res.get("pure")
    at = wh["attribution_means_per_run"]
    gates_s = pp["gates_cpu_only_all_stages"]["median_s"] if pp else 0.0
    parts = [
        ("Prefect client back-off after retry answers (ours - baseline)", at["prefect_retry_backoff_s"]),
        (f"S3 client construction ({c['n']:.1f} clients)", at["s3_client_construction_s"]),
        ("Prefect API requests, time on the wire (ours - baseline)", at["prefect_api_requests_s"]),
        ("S3 requests (summed; the 2 gates of a stage overlap)", at["s3_requests_summed_s"]),
        ("our task shape (deploy + verify-live tasks), bare", at["extra_tasks_s"]),
        ("gate evaluation, CPU only (from (c))", gates_s),
    ]
    rest = at["measured_extra_s"] - sum(x for _, x in parts)
    add(
        f"    attribution of the mean extra {at['measured_extra_s']:.3f} s per run "
        "(mean ours - mean baseline; approximate):"
    )
    for label, x in parts:
        add(f"        {label:<62} {x:7.3f} s")
    add(f"        {'rest (negative: the pieces above overlap in time)':<62} {rest:7.3f} s")
    if pp:
        add(
            f"    (c) pure parts outside Prefect, median of {pp['reps']} fresh artifacts, "
            "x count per promotion:"
        )
        for k, u in pp["units"].items():
            n = u["count_per_promotion"]
            add(f"        {k:<50} {u['median_s'] * 1000:8.2f} ms x {n} = {u['median_s'] * n * 1000:8.1f} ms")
        add(
            f"        {'modelled product work per promotion':<50} {pp['modelled_extra_s'] * 1000:24.1f} ms   "
            f"(measured rest: {(extra - shaped_extra) * 1000:.0f} ms)"
        )
        add(
            f"        gate evaluation alone (evidence in memory, 6 gates) "
            f"{pp['gates_cpu_only_all_stages']['median_s'] * 1000:.2f} ms; "
            f"promotion.plan (3 stages, with S3) {pp['plan_all_stages']['median_s'] * 1000:.1f} ms"
        )
    add("")


def render_approval(res: dict[str, Any], add: Callable[[str], None]) -> None:
    a, m = res["approval"], res["machine"]
    add("2. approval latency: resume_flow_run returned -> the stage's deploy task started")
    add("   (the deploy task run's start_time from the Prefect API)")
    env = "unset" if a["poll_env"] is None else repr(a["poll_env"])
    add(
        f"   {POLL_ENV} {env} -> poll interval {a['poll_interval_s']} s (Prefect's own default would be "
        f"{a['prefect_default_poll_interval_s']} s);"
    )
    add(f"   resume sent after a random 0..{a['random_delay_max_s']:.0f} s wait once the form is stored")

    def lrow(label: str, s: dict[str, Any]) -> None:
        add(
            f"  {label:<44} p50 {s['p50_s']:6.3f} s  p90 {s['p90_s']:6.3f} s  max {s['max_s']:6.3f} s  "
            f"[{fmt_samples(s['samples_s'])}]"
        )

    lrow("resume -> deploy task started", a["resume_to_deploy_start"])
    verdict = "meets goal" if a["meets_goal"] else "ABOVE GOAL"
    add(f"  {'':<44} goal p50 <= {a['goal_p50_s']:.0f} s: {verdict}")
    est = (
        a["resume_to_deploy_start"]["p50_s"]
        + (a["prefect_default_poll_interval_s"] - a["poll_interval_s"]) / 2
    )
    add(
        f"  {'':<44} with Prefect's default poll of {a['prefect_default_poll_interval_s']} s "
        f"the wait for the next poll would be 0..{a['prefect_default_poll_interval_s']} s:"
    )
    add(f"  {'':<44} p50 ~ {est:.1f} s (estimate, not measured)")
    lrow("resume -> ledger 'approval' recorded", a["resume_to_approval_recorded"])
    lrow("ledger 'approval' -> deploy task started", a["approval_recorded_to_deploy_start"])
    lrow("resume -> ledger 'promoted' (upper bound)", a["resume_to_promoted_recorded"])
    lrow("run start -> stage PAUSED (seen via API)", a["start_to_paused"])
    add(
        f"  form schema not yet stored when PAUSED was first seen: {a['schema_missing_when_paused_seen']} "
        f"of {len(a['runs'])}"
    )
    add("  (a resume in that gap is refused by the server: 'Run input schema not found')")
    add(f"  load average after part 2 {load3(m['loadavg']['after_approval'])}")
    add("")


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=None, help="timed promotions and baselines each (default 10)")
    ap.add_argument("--approvals", type=int, default=None, help="approval latency samples (default 10)")
    ap.add_argument("--pure-reps", type=int, default=None, help="repeats of the pure parts (default 5)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the random wait before each resume")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 runs each side, 2 approvals")
    ap.add_argument("--verbose", action="store_true", help="keep Prefect's console log lines")
    ap.add_argument(
        "--database",
        choices=("sqlite", "postgres", "both"),
        default="sqlite",
        help="the Prefect server's database; both: every part on SQLite, then on PostgreSQL",
    )
    ap.add_argument(
        "--postgres-server",
        choices=pg.SERVER_MODES,
        default="harness",
        help="how the Prefect server on PostgreSQL is started: harness = the harness's own uvicorn command "
        "and settings (only the database differs from sqlite); cli = prefect server start (UI, all services)",
    )
    ap.add_argument(
        "--approvals-on",
        choices=("all", "sqlite"),
        default="all",
        help="with --database both: run part 2 (approval latency) on every database or on SQLite only",
    )
    args = ap.parse_args(argv)
    quick = {"runs": 2, "approvals": 2, "pure_reps": 2}
    full = {"runs": 10, "approvals": 10, "pure_reps": 5}
    fill_defaults(args, quick, full)
    if args.runs < 1 or args.approvals < 1 or args.pure_reps < 1:
        ap.error("--runs, --approvals and --pure-reps must be >= 1")
    return args


def bench_database(
    database: str, args: argparse.Namespace, s3: LocalS3, tmp: Path, machine: dict[str, Any], approvals: bool
) -> dict[str, Any]:
    """Every part of the benchmark on a fresh Prefect server on ``database``."""
    started = time.perf_counter()
    machine = {**copy.deepcopy(machine), "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    machine["loadavg"] = {"start": os.getloadavg()}
    res: dict[str, Any] = {
        "database": database,
        "machine": machine,
        "params": {
            "runs": args.runs,
            "approvals": args.approvals if approvals else 0,
            "pure_reps": args.pure_reps,
            "seed": args.seed,
            "quick": args.quick,
            "gates_per_stage": list(GATES_PER_STAGE),
            "prefect_server": None,
        },
    }
    b: Bench | None = None
    tag = f"[{database}] "
    try:
        if database == "sqlite":
            print(f"{tag}starting a Prefect server (takes ~20 s)...", flush=True)
        with prefect_on(database, args.postgres_server) as server:
            api_url = server.api_url
            res["prefect_api_url"] = api_url
            res["params"]["prefect_server"] = server.description
            print(f"{tag}Prefect API at {api_url}", flush=True)
            probe = Probe(api_url)
            b = Bench(server=s3, api_url=api_url, tmp=tmp, probe=probe)
            probe.install()
            try:
                print(
                    f"{tag}1/2 orchestration overhead: {args.runs} runs each side (+ warm-up)...", flush=True
                )
                res["overhead"] = bench_overhead(b, args.runs)
                print(f"{tag}    pure parts outside Prefect, {args.pure_reps} fresh artifacts...", flush=True)
                res["pure"] = pure_parts(b, args.pure_reps)
                machine["loadavg"]["after_overhead"] = os.getloadavg()
                if approvals:
                    print(f"{tag}2/2 approval latency: {args.approvals} approvals...", flush=True)
                    res["approval"] = bench_approvals(b, args.approvals, args.seed)
                    machine["loadavg"]["after_approval"] = os.getloadavg()
                else:
                    print(f"{tag}2/2 approval latency: skipped on this database (--approvals-on)", flush=True)
            finally:
                probe.uninstall()
                reject_leftovers(b)
            if server.postgres is not None:
                db = server.postgres
                runs = int(db.sql("SELECT count(*) FROM flow_run"))
                res["postgres"] = {"version": db.version, "port": db.port, "flow_runs_in_db": runs}
                # at least: 1 + 3 stage runs per promotion and per bare run (warm-ups included)
                least = 4 * 3 * (args.runs + 1)
                b.check(
                    "postgres: the flow runs are in PostgreSQL",
                    runs >= least,
                    f"{runs} rows in flow_run (expected >= {least})",
                )
    except Exception as exc:
        if len(args.databases) == 1:
            raise
        import traceback

        traceback.print_exc()
        res["error"] = f"{type(exc).__name__}: {exc}"
        checks = b.checks if b else []
        checks.append({"name": f"{database}: benchmark finished", "ok": False, "detail": res["error"]})
        if b is None:
            res["checks"] = checks
    machine["loadavg"]["end"] = os.getloadavg()
    res.setdefault("checks", b.checks if b else [])
    res["total_s"] = time.perf_counter() - started
    return res


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.databases = ["sqlite", "postgres"] if args.database == "both" else [args.database]
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    if not args.verbose:
        quiet_prefect_console()
    poll_env = os.environ.pop(POLL_ENV, None)  # measure the product's default poll interval
    if poll_env is not None:
        print(f"note: {POLL_ENV}={poll_env} was set; unset for this run", flush=True)
    started = time.perf_counter()
    machine = machine_facts(("prefect", "boto3", "httpx"), nested_loadavg=True)
    results: dict[str, dict[str, Any]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bench-flows-") as tmp,
        LocalS3(bucket="bench-flows") as s3,
        aws_credentials(s3),
    ):
        print(f"SeaweedFS at {s3.endpoint_url}", flush=True)
        for i, database in enumerate(args.databases):
            approvals = args.approvals_on == "all" or database == "sqlite"
            results[database] = bench_database(database, args, s3, Path(tmp), machine, approvals)
            if i + 1 < len(args.databases):  # the figures of each database as soon as they are known
                print()
                print(render(results[database]))
                print()
    if poll_env is not None:
        os.environ[POLL_ENV] = poll_env
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    checks = [c for r in results.values() for c in r["checks"]]
    if len(results) == 1:
        res = next(iter(results.values()))
        print()
        print(render(res))
    else:
        res = {"databases": results, "total_s": time.perf_counter() - started}
        print()
        print(render(results[args.databases[-1]]))
        print()
        print(render_comparison(res))
    write_results(out, res, default=str)
    return 0 if all(c["ok"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
