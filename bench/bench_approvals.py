"""Benchmark what waiting for approval costs: suspended runs of a deployment vs in-process pauses.

Run it from the repository root::

    .venv/bin/python bench/bench_approvals.py            # 20 suspended, 10 in-process, 30 s windows
    .venv/bin/python bench/bench_approvals.py --quick    # smoke run: 3 and 2, 10 s windows
    .venv/bin/python bench/bench_approvals.py --count 50 --baseline-count 10 --out /tmp/approvals.json

Issue 8 asks what N promotions waiting for a person at once cost. The script starts its own
SeaweedFS server (:class:`promotion.local_s3.LocalS3`), a Prefect test server
(``prefect_test_harness``, SQLite, as the tests use) and a small counting reverse proxy in front
of it: every process the product runs (``promote serve``, its flow-run processes, ``promote run``)
gets ``PREFECT_API_URL`` pointing at the proxy, so each HTTP request they send is counted (and
each websocket message they send on the events sockets, which the proxy tunnels). The script's
own calls (creating runs, reading states, resuming) go to the server directly and are not counted.
The pipeline has ``dev`` (no gates) and ``prod`` with ``approval: {approvers: [alice, bob],
min_approvals: 1, timeout: 1h}``; each promotion is its own service (no lock or ledger shared).

1. *suspended* (the product's design): ``promote serve`` on the pipeline file, and ``--count`` runs
   created from the ``promote-pipeline/pipeline`` deployment in a burst. Once every run is
   Suspended with its resume form stored and no process is left for any of them: resident memory
   (sum of ``VmRSS`` from ``/proc/PID/status`` of the serve process and all its descendants, also
   the sum of ``Pss`` from ``smaps_rollup``, which does not count shared pages twice), sampled
   every 5 s, and requests/s reaching the Prefect server over ``--seconds``. First the same window,
   ``--idle-seconds`` long, on ``promote serve`` with nothing waiting: what is fixed and what each
   waiting promotion adds.
2. *in-process pause* (the baseline, a run without a deployment: ``promote -c FILE run SERVICE
   DIGEST`` in a terminal): ``--baseline-count`` such processes, each paused in its stage subflow
   (polling every ``PROMOTION_APPROVAL_POLL_SECONDS``, default 1 s); the same two figures over the
   processes and their descendants.
3. resume -> deployed: each waiting run is answered as the UI's form does
   (``resume_flow_run(id, run_input={"decision": "approve", "approver": "alice", "reason": ""})``:
   the pipeline run for the suspended design, the paused stage run for the baseline), one at a
   time (the next once the previous run is Completed), from the resume call to the ``at`` of the
   ``promoted`` ledger record for ``prod``. Goal for the suspended design: p50 <= 5 s.

Figures per promotion are totals divided by the promotions waiting; the lines "extrapolated to
200" are linear extrapolations of those figures, not measurements (200 in-process pauses would
need about 25 GiB here). Exit status 1 when a correctness check failed (a run not suspended or not
paused, a process left for a suspended run, a run not ending Completed with a ``promoted prod``
record, a chain that does not verify); the figures are still printed and written to ``--out``
(default ``bench/results/approvals.json``) with every sample and the facts of the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from _common import (
    RESULTS_DIR,
    SQLITE_DESCRIPTION,
    UUID_PATTERN,
    BenchError,
    RecordsChecks,
    exit_on_sigterm,
    fill_defaults,
    latency_summary,
    load_and_total_line,
    machine_facts,
    percentile,
    render_checks,
    rounded_load,
    stop_group,
    write_results,
)

from flows.serve import POLL_SECONDS as SERVE_POLL_SECONDS
from promotion.config import Pipeline, load_pipeline
from promotion.digest import Digest
from promotion.local_s3 import LocalS3
from promotion.models import LedgerRecord, Provenance
from promotion.requests import find_request
from promotion.store import ArtifactStore
from tests.local_servers import (  # on the path through _common
    aws_credentials,
    children,
    prefect_test_server,
    run_processes,
)

DEFAULT_OUT = RESULTS_DIR / "approvals.json"
PROMOTE = str(Path(sys.executable).parent / "promote")
HOST = "127.0.0.1"
DEPLOYMENT = "promote-pipeline/pipeline"
#: Registered last by ``promote serve`` (flows/serve.py): once it has our file, serve is ready.
LAST_DEPLOYMENT = "close-expired-approvals/approval-deadlines"
ANSWER = {"decision": "approve", "approver": "alice", "reason": ""}
EXTRAPOLATE_TO = 200
RSS_SAMPLE_EVERY_S = 5.0
GOAL_P50_S = 5.0

PIPELINE = """
store: {{endpoint_url: "{endpoint}", bucket: {bucket}, prefix: "{prefix}"}}
services: [{services}]
environments:
  - name: dev
  - name: prod
    approval: {{approvers: [alice, bob], min_approvals: 1, timeout: 1h}}
"""


# -- the counting reverse proxy -------------------------------------------------------------------

#: Hop-by-hop headers (RFC 9110 7.6.1), and the ones the forwarding client sets itself.
_NOT_FORWARDED = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}


def route(method: str, path: str) -> str:
    """``METHOD /path`` with ids replaced by ``{id}`` and no query: what the requests were."""
    return f"{method} {UUID_PATTERN.sub('{id}', path.split('?', 1)[0])}"


@dataclass
class Counts:
    """What reached the server, cumulative since the proxy started."""

    http: Counter[str] = field(default_factory=Counter)
    ws_connections: Counter[str] = field(default_factory=Counter)
    ws_messages_sent: int = 0  # data frames from clients to the server (events, auth)
    ws_control_frames_sent: int = 0  # pings, pongs, closes
    upstream_errors: int = 0

    def copy(self) -> Counts:
        return Counts(
            Counter(self.http),
            Counter(self.ws_connections),
            self.ws_messages_sent,
            self.ws_control_frames_sent,
            self.upstream_errors,
        )

    def minus(self, before: Counts) -> Counts:
        return Counts(
            self.http - before.http,
            self.ws_connections - before.ws_connections,
            self.ws_messages_sent - before.ws_messages_sent,
            self.ws_control_frames_sent - before.ws_control_frames_sent,
            self.upstream_errors - before.upstream_errors,
        )


class CountingProxy:
    """A threaded HTTP/1.1 reverse proxy to ``upstream`` that counts requests and websocket frames.

    Plain requests are forwarded with one shared httpx client (bodies buffered: Prefect's are
    small); a websocket upgrade (Prefect's events sockets) is tunnelled byte for byte, parsing the
    client's frames only to count them.
    """

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = f"{parts.scheme}://{parts.netloc}"
        self.upstream_addr = (parts.hostname or HOST, parts.port or 80)
        self.api_path = parts.path
        self.counts = Counts()
        self.lock = threading.Lock()
        self.client = httpx.Client(timeout=120, limits=httpx.Limits(max_connections=200))
        proxy = self

        class Handler(_ProxyHandler):
            owner = proxy

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="counting-proxy", daemon=True)

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.server.server_address[1]}{self.api_path}"

    def snapshot(self) -> Counts:
        with self.lock:
            return self.counts.copy()

    def __enter__(self) -> CountingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.client.close()


class _ProxyHandler(BaseHTTPRequestHandler):
    owner: CountingProxy
    protocol_version = "HTTP/1.1"  # keep-alive, as the Prefect client expects

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _forward(self) -> None:
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self._tunnel()
            return
        body = self._read_body()
        owner = self.owner
        with owner.lock:
            owner.counts.http[route(self.command, self.path)] += 1
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in _NOT_FORWARDED]
        try:
            request = owner.client.build_request(
                self.command, owner.upstream + self.path, headers=headers, content=body
            )
            response = owner.client.send(request, stream=True)
            try:
                raw = b"".join(response.iter_raw())  # as sent: a gzipped body stays gzipped
            finally:
                response.close()
        except httpx.HTTPError as exc:
            with owner.lock:
                owner.counts.upstream_errors += 1
            self.send_error(502, f"upstream: {type(exc).__name__}")
            return
        self.send_response_only(response.status_code, response.reason_phrase)
        for k, v in response.headers.multi_items():
            if k.lower() not in _NOT_FORWARDED:
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(raw)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _forward

    def _tunnel(self) -> None:
        owner = self.owner
        with owner.lock:
            owner.counts.ws_connections[route("WS", self.path)] += 1
        up = socket.create_connection(owner.upstream_addr, timeout=None)
        head = f"{self.command} {self.path} HTTP/1.1\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in self.headers.items()) + "\r\n"
        up.sendall(head.encode("latin-1"))
        down = threading.Thread(target=self._pipe_down, args=(up,), daemon=True)
        down.start()
        try:
            self._frames_up(up)
        except OSError:
            pass
        finally:
            try:
                up.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            down.join(10)
            up.close()
            self.close_connection = True

    def _frames_up(self, up: socket.socket) -> None:
        """Forward the client's frames (RFC 6455 5.2), counting data and control frames."""
        rf = self.rfile  # buffered: frames sent right after the handshake may already be in it
        while True:
            head = rf.read(2)
            if len(head) < 2:
                return
            n = head[1] & 0x7F
            ext = b""
            if n == 126:
                ext = rf.read(2)
                n = int.from_bytes(ext, "big")
            elif n == 127:
                ext = rf.read(8)
                n = int.from_bytes(ext, "big")
            mask = rf.read(4) if head[1] & 0x80 else b""
            payload = rf.read(n)
            up.sendall(head + ext + mask + payload)
            opcode = head[0] & 0x0F
            with self.owner.lock:
                if opcode >= 8:
                    self.owner.counts.ws_control_frames_sent += 1
                elif opcode != 0:  # a continuation frame is part of a message already counted
                    self.owner.counts.ws_messages_sent += 1

    def _pipe_down(self, up: socket.socket) -> None:
        try:
            while data := up.recv(65536):
                self.connection.sendall(data)
        except OSError:
            pass
        finally:
            try:
                self.connection.shutdown(socket.SHUT_WR)
            except OSError:
                pass


# -- processes --------------------------------------------------------------------------------------


def _kib(path: str, key: str) -> int | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def memory_of(roots: Sequence[int]) -> dict[str, Any]:
    """Sum of VmRSS and of Pss (KiB) over ``roots`` and their descendants, and how many processes."""
    pids = sorted({p for r in roots for p in (r, *children(r))})
    rss = pss = alive = 0
    for pid in pids:
        r = _kib(f"/proc/{pid}/status", "VmRSS")
        if r is None:  # gone, or a zombie (no VmRSS line)
            continue
        alive += 1
        rss += r
        pss += _kib(f"/proc/{pid}/smaps_rollup", "Pss") or 0
    return {"processes": alive, "rss_kib": rss, "pss_kib": pss}


def processes_of(run_id: str) -> list[int]:
    """Every process here whose environment names the flow run (the runner sets it)."""
    needle = f"PREFECT__FLOW_RUN_ID={run_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if needle in Path(f"/proc/{entry}/environ").read_bytes():
                found.append(int(entry))
        except OSError:
            continue
    return found


def tail(path: Path, n: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


# -- the bench ------------------------------------------------------------------------------------


@dataclass
class Bench(RecordsChecks):
    print_failures = True  # a run takes minutes: say at once

    config: Path
    pipeline: Pipeline
    store: ArtifactStore
    proxy: CountingProxy
    child_env: dict[str, str]
    tmp: Path
    checks: list[dict[str, Any]] = field(default_factory=list)

    def publish(self, service: str) -> Digest:
        f = self.tmp / f"{service}.bin"
        f.write_bytes(os.urandom(16 * 1024))
        prov = Provenance(commit="c0ffee", commit_author="dana", build_url="https://ci/1", published_by="ci")
        return self.store.publish(f, service=service, version="1.0", provenance=prov).digest

    def records(self, service: str) -> list[LedgerRecord]:
        return self.store.ledger.records(service)

    def promoted_prod(self, service: str, digest: Digest) -> LedgerRecord | None:
        return next(
            (
                r
                for r in self.records(service)
                if r.event == "promoted" and r.environment == "prod" and r.digest == digest
            ),
            None,
        )

    def waiting_run(self, service: str, digest: Digest) -> str | None:
        """The run the open prod request names as waiting (the stage run for an in-process pause)."""
        request = find_request(self.store.ledger, service, "prod", digest)
        return request.flow_run_id if request is not None else None


def poll(what: str, deadline_s: float, probe: Callable[[], Any], every: float = 0.3) -> Any:
    """``probe()`` until it returns something truthy; BenchError after ``deadline_s``."""
    deadline = time.monotonic() + deadline_s
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not within {deadline_s:g} s")
        time.sleep(every)  # polling for a condition, with a deadline


def window(b: Bench, roots: Callable[[], Sequence[int]], seconds: float) -> dict[str, Any]:
    """Requests reaching the server and memory of ``roots()`` and descendants over ``seconds``."""
    before = b.proxy.snapshot()
    load_at_start = os.getloadavg()
    t0 = time.monotonic()
    samples: list[dict[str, Any]] = []
    while True:
        at = time.monotonic() - t0
        samples.append({"t_s": round(at, 2), **memory_of(roots())})
        if at >= seconds:
            break
        # A sampling interval inside a measurement window, not a synchronisation.
        time.sleep(min(RSS_SAMPLE_EVERY_S, seconds - at))
    elapsed = time.monotonic() - t0
    got = b.proxy.snapshot().minus(before)
    http = sum(got.http.values())
    rss = [s["rss_kib"] for s in samples]
    pss = [s["pss_kib"] for s in samples]
    return {
        "seconds": elapsed,
        "http_requests": http,
        "http_req_per_s": http / elapsed,
        "ws_messages_sent": got.ws_messages_sent,
        "ws_messages_per_s": got.ws_messages_sent / elapsed,
        "ws_control_frames_sent": got.ws_control_frames_sent,
        "ws_connections_opened": dict(got.ws_connections),
        "upstream_errors": got.upstream_errors,
        "by_route": dict(got.http.most_common()),
        "rss_mib_median": percentile(rss, 50) / 1024,
        "rss_mib_max": max(rss) / 1024,
        "pss_mib_median": percentile(pss, 50) / 1024,
        "processes_median": percentile([s["processes"] for s in samples], 50),
        "memory_samples": samples,
        "loadavg_at_start": load_at_start,
        "loadavg_at_end": os.getloadavg(),
    }


def latency(samples_s: Sequence[float]) -> dict[str, Any]:
    ms = [s * 1000 for s in samples_s]
    return {**latency_summary(samples_s), "p90_ms": percentile(ms, 90)}


#: The phases of an answer: from the resume call to the run's first state of each kind after it
#: (server timestamps; for the suspended design Pending is when ``promote serve`` took the run,
#: Running when its new process entered the flow), and to the ``promoted prod`` record's ``at``.
PHASES = ("pending", "running", "promoted")


def resume_and_time(
    b: Bench, service: str, digest: Digest, run_id: str, done: Callable[[], bool], label: str
) -> dict[str, float | None] | None:
    """Answer as the UI does; seconds from the call to each of :data:`PHASES`."""
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run

    t0 = time.time()
    try:
        resume_flow_run(uuid.UUID(run_id), run_input=ANSWER)
    except Exception as exc:  # noqa: BLE001 - a refused resume is a failed check, not a crash
        b.check(f"{label}: {service} resumed", False, f"{type(exc).__name__}: {exc}")
        return None
    try:

        def promoted() -> LedgerRecord | None:
            rec = b.promoted_prod(service, digest)
            if rec is None and done():
                # Ended: read once more (the record may have come just before the end), then
                # stop waiting for a record that will not come.
                rec = b.promoted_prod(service, digest)
                if rec is None:
                    raise BenchError(f"{service}: the run ended without a promoted prod record")
            return rec

        rec = poll(f"{service}: promoted prod", 180, promoted, every=0.25)
        poll(f"{service}: run finished", 120, done)
    except BenchError as exc:
        b.check(f"{label}: {service} promoted to prod after the answer", False, str(exc))
        return None
    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(uuid.UUID(run_id))
    after: dict[str, float | None] = {"pending": None, "running": None}
    for st in sorted(states, key=lambda st: st.timestamp):
        kind = st.type.value.lower()
        if kind in after and after[kind] is None and st.timestamp.timestamp() >= t0:
            after[kind] = st.timestamp.timestamp() - t0
    return {**after, "promoted": rec.at.timestamp() - t0}


def phase_summaries(timed: Sequence[dict[str, float | None]]) -> dict[str, Any]:
    """``latency()`` of each phase over the answers that reached it."""
    out: dict[str, Any] = {}
    for phase in PHASES:
        xs = [x for t in timed if (x := t[phase]) is not None]
        out[phase] = latency(xs)
    return out


def read_run(run_id: str) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(uuid.UUID(run_id))


def waiting_with_form(run_id: str, state_name: str) -> bool:
    """The run is in ``state_name`` (``Suspended``/``Paused``) with its resume form stored."""
    from prefect.client.orchestration import get_client

    from flows.approval import form_ready

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(uuid.UUID(run_id))
        if run.state is not None and run.state.is_final():
            raise BenchError(f"run {run_id} ended: {run.state.name}: {run.state.message}")
        return bool(run.state is not None and run.state.name == state_name and form_ready(client, run))


def completed(run_id: str) -> bool:
    run = read_run(run_id)
    return bool(run.state is not None and run.state.is_final())


def exited(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is not None


def check_ledgers(b: Bench, label: str, digests: dict[str, Digest]) -> None:
    bad = []
    for service, digest in digests.items():
        records = b.records(service)
        events = [f"{r.event} {r.environment}" for r in records if r.digest == digest]
        counted = [
            r.actor
            for r in records
            if r.event == "approval" and r.digest == digest and r.details.get("counted")
        ]
        if events[-1:] != ["promoted prod"] or counted != ["alice"] or not b.store.ledger.verify(service).ok:
            bad.append(f"{service}: {events}, counted approvals {counted}")
    b.check(
        f"{label}: every ledger ends 'promoted prod' with alice's approval counted once, and verifies",
        not bad,
        "; ".join(bad) or f"{len(digests)} services",
    )


def suspended_side(b: Bench, count: int, seconds: float, idle_seconds: float) -> dict[str, Any]:
    from prefect.client.orchestration import get_client

    digests = {f"sus-{i:03d}": b.publish(f"sus-{i:03d}") for i in range(count)}
    log = b.tmp / "serve.log"
    with log.open("ab") as out:
        serve = subprocess.Popen(
            [PROMOTE, "-c", str(b.config), "serve"],
            env=b.child_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def ready() -> bool:
            if serve.poll() is not None:
                raise BenchError(f"promote serve exited {serve.returncode}: {tail(log)}")
            with get_client(sync_client=True) as client:
                try:
                    dep = client.read_deployment_by_name(LAST_DEPLOYMENT)
                except Exception:  # noqa: BLE001 - not registered yet
                    return False
                return bool(dep.parameters.get("config") == str(b.config.resolve()))

        t0 = time.monotonic()
        poll("promote serve registered its deployments", 120, ready)
        print(f"  promote serve (pid {serve.pid}) ready in {time.monotonic() - t0:.1f} s", flush=True)
        # Start-up goes on a little after the last registration (the nightly deployment, the
        # events sockets): the idle window starts once the runner has polled twice since.
        polls = "POST /api/deployments/get_scheduled_flow_runs"
        seen = b.proxy.snapshot().http[polls]
        poll("the runner polls", 60, lambda: b.proxy.snapshot().http[polls] >= seen + 2)
        print(f"  idle window: {idle_seconds:g} s with nothing waiting...", flush=True)
        idle = window(b, lambda: [serve.pid], idle_seconds)

        t0 = time.monotonic()
        with get_client(sync_client=True) as client:
            dep = client.read_deployment_by_name(DEPLOYMENT)
            runs = {
                s: str(
                    client.create_flow_run_from_deployment(
                        dep.id, parameters={"service": s, "digest": str(d), "requested_by": "dana"}
                    ).id
                )
                for s, d in digests.items()
            }
        print(f"  created {count} runs from {DEPLOYMENT}; waiting until all are Suspended...", flush=True)
        pending = dict(runs)

        def all_suspended() -> bool:
            for s, run_id in list(pending.items()):
                if waiting_with_form(run_id, "Suspended"):
                    del pending[s]
            return not pending

        poll(f"{count} runs suspended", 900, all_suspended, every=1.0)
        to_suspended = time.monotonic() - t0

        def nothing_left() -> bool:
            # Serve's forkserver and resource tracker are one each whatever waits (flows/serve.py).
            return not run_processes(serve.pid) and not any(processes_of(r) for r in runs.values())

        try:
            poll("every suspended run's process exited", 60, nothing_left)
            b.check(
                "suspended: no process left for a waiting run",
                True,
                f"{count} runs, serve runs nothing but its forkserver",
            )
        except BenchError:
            b.check(
                "suspended: no process left for a waiting run",
                False,
                f"serve's run processes {run_processes(serve.pid)}; run processes "
                f"{[p for r in runs.values() for p in processes_of(r)]}",
            )
        print(
            f"  all {count} Suspended {to_suspended:.1f} s after creation; window: {seconds:g} s...",
            flush=True,
        )
        busy = window(b, lambda: [serve.pid], seconds)
        b.check(
            "suspended: still nothing running for them at the end of the window",
            nothing_left() and serve.poll() is None,
            f"serve alive: {serve.poll() is None}; serve's run processes {run_processes(serve.pid)}",
        )
        b.check(
            "suspended: every run still Suspended at the end of the window",
            all(waiting_with_form(r, "Suspended") for r in runs.values()),
            f"{count} runs",
        )

        print(f"  resuming {count} runs one at a time...", flush=True)
        took: list[dict[str, float | None]] = []
        load_at_resume = os.getloadavg()
        for s, run_id in runs.items():
            t = resume_and_time(b, s, digests[s], run_id, partial(completed, run_id), "suspended")
            if t is not None:
                took.append(t)
        load_after_resume = os.getloadavg()
        states = {s: read_run(r).state for s, r in runs.items()}
        not_ok = {s: f"{st.name}: {st.message}" for s, st in states.items() if not st.is_completed()}
        b.check("suspended: every run ended Completed", not not_ok, str(not_ok) or f"{count} runs")
        check_ledgers(b, "suspended", digests)
    finally:
        stop_group(serve, grace_s=20)
    return {
        "count": count,
        "serve_pid": serve.pid,
        "seconds_from_creation_to_all_suspended": to_suspended,
        "idle": idle,
        "waiting": busy,
        "resume_to_promoted": phase_summaries(took)["promoted"],
        "resume_phases": phase_summaries(took),
        "resume_loadavg": {"start": load_at_resume, "end": load_after_resume},
        "runs": runs,
    }


def inprocess_side(b: Bench, count: int, seconds: float) -> dict[str, Any]:
    digests = {f"pau-{i:03d}": b.publish(f"pau-{i:03d}") for i in range(count)}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = {s: b.tmp / f"run-{s}.log" for s in digests}
    t0 = time.monotonic()
    try:
        for s, d in digests.items():
            with logs[s].open("ab") as out:
                procs[s] = subprocess.Popen(
                    [PROMOTE, "-c", str(b.config), "run", s, str(d), "--as", "dana"],
                    env=b.child_env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        print(f"  started {count} 'promote run' processes; waiting until all are paused...", flush=True)
        stage_runs: dict[str, str] = {}

        def all_paused() -> bool:
            for s, d in digests.items():
                if s in stage_runs:
                    continue
                if procs[s].poll() is not None:
                    raise BenchError(f"promote run {s} exited {procs[s].returncode}: {tail(logs[s])}")
                run_id = b.waiting_run(s, d)
                if run_id is not None and waiting_with_form(run_id, "Paused"):
                    stage_runs[s] = run_id
            return len(stage_runs) == count

        poll(f"{count} stage runs paused", 900, all_paused, every=1.0)
        to_paused = time.monotonic() - t0
        print(f"  all {count} paused {to_paused:.1f} s after start; window: {seconds:g} s...", flush=True)
        busy = window(b, lambda: [p.pid for p in procs.values()], seconds)
        alive = [s for s, p in procs.items() if p.poll() is None]
        b.check(
            "in-process: every 'promote run' process waits through the window",
            len(alive) == count,
            f"{len(alive)} of {count} alive",
        )
        print(f"  resuming {count} paused stage runs one at a time...", flush=True)
        took: list[dict[str, float | None]] = []
        load_at_resume = os.getloadavg()
        for s, run_id in stage_runs.items():
            t = resume_and_time(b, s, digests[s], run_id, partial(exited, procs[s]), "in-process")
            if t is not None:
                took.append(t)
        load_after_resume = os.getloadavg()
        codes = {s: p.returncode for s, p in procs.items()}
        b.check(
            "in-process: every 'promote run' exited 0 (pipeline Completed)",
            set(codes.values()) == {0},
            str({s: c for s, c in codes.items() if c != 0}) or f"{count} processes",
        )
        check_ledgers(b, "in-process", digests)
    finally:
        for p in procs.values():
            stop_group(p, grace_s=20)
    return {
        "count": count,
        "poll_seconds": int(b.child_env.get("PROMOTION_APPROVAL_POLL_SECONDS", "1")),
        "seconds_from_start_to_all_paused": to_paused,
        "waiting": busy,
        "resume_to_promoted": phase_summaries(took)["promoted"],
        "resume_phases": phase_summaries(took),
        "resume_loadavg": {"start": load_at_resume, "end": load_after_resume},
        "stage_runs": stage_runs,
    }


def derived(res: dict[str, Any]) -> dict[str, Any]:
    """Per-promotion figures, and linear extrapolations to EXTRAPOLATE_TO (labelled as such)."""
    sus, inp = res["suspended"], res["in_process"]
    n_s, n_i = sus["count"], inp["count"]
    idle, busy, base = sus["idle"], sus["waiting"], inp["waiting"]
    marginal_rss = (busy["rss_mib_median"] - idle["rss_mib_median"]) / n_s
    marginal_req = (busy["http_req_per_s"] - idle["http_req_per_s"]) / n_s
    per_rss_base = base["rss_mib_median"] / n_i
    per_req_base = base["http_req_per_s"] / n_i
    per_ws_base = base["ws_messages_per_s"] / n_i
    n = EXTRAPOLATE_TO
    return {
        "suspended_rss_mib_per_promotion": busy["rss_mib_median"] / n_s,
        "suspended_rss_mib_added_per_promotion": marginal_rss,
        "suspended_req_per_s_per_promotion": busy["http_req_per_s"] / n_s,
        "suspended_req_per_s_added_per_promotion": marginal_req,
        "in_process_rss_mib_per_promotion": per_rss_base,
        "in_process_pss_mib_per_promotion": base["pss_mib_median"] / n_i,
        "in_process_req_per_s_per_promotion": per_req_base,
        "in_process_ws_messages_per_s_per_promotion": per_ws_base,
        "extrapolated_to": n,
        "extrapolated_note": "linear extrapolation of the per-promotion figures, not a measurement",
        # One request more or less in a window moves the suspended extrapolation by this much.
        "extrapolated_suspended_req_per_s_resolution": n / (n_s * busy["seconds"]),
        "extrapolated_suspended_rss_mib": idle["rss_mib_median"] + n * max(marginal_rss, 0.0),
        "extrapolated_suspended_req_per_s": idle["http_req_per_s"] + n * max(marginal_req, 0.0),
        "extrapolated_in_process_rss_mib": n * per_rss_base,
        "extrapolated_in_process_req_per_s": n * per_req_base,
        "extrapolated_in_process_ws_messages_per_s": n * per_ws_base,
    }


def render(res: dict[str, Any]) -> str:
    lines: list[str] = []
    add = lines.append
    m, p, sus, inp, d = res["machine"], res["params"], res["suspended"], res["in_process"], res["derived"]
    add(
        f"approvals: {m['cpu_count']} CPUs, {m['mem_total_gib']} GiB, Python {m['python']}, "
        f"prefect {m['prefect']}; Prefect server: {m['prefect_database']}"
    )
    add(f"load average at start {rounded_load(m['loadavg_at_start'])}; window {p['seconds']:g} s each")
    add("")
    idle, busy, base = sus["idle"], sus["waiting"], inp["waiting"]
    w = 34
    add(f"  {'':<{w}} {'serve, idle':>14} {'suspended':>14} {'in-process':>14}")

    def row(label: str, a: str, b: str, c: str) -> None:
        add(f"  {label:<{w}} {a:>14} {b:>14} {c:>14}")

    row("promotions waiting", "0", str(sus["count"]), str(inp["count"]))
    row("processes (median)", f"{idle['processes_median']:g}", f"{busy['processes_median']:g}",
        f"{base['processes_median']:g}")  # fmt: skip
    row("RSS total, MiB (median)", f"{idle['rss_mib_median']:.0f}", f"{busy['rss_mib_median']:.0f}",
        f"{base['rss_mib_median']:.0f}")  # fmt: skip
    row("PSS total, MiB (median)", f"{idle['pss_mib_median']:.0f}", f"{busy['pss_mib_median']:.0f}",
        f"{base['pss_mib_median']:.0f}")  # fmt: skip
    row("RSS per promotion, MiB", "", f"{d['suspended_rss_mib_per_promotion']:.1f}",
        f"{d['in_process_rss_mib_per_promotion']:.1f}")  # fmt: skip
    row("  of which added by waiting, MiB", "", f"{d['suspended_rss_mib_added_per_promotion']:.1f}",
        f"{d['in_process_rss_mib_per_promotion']:.1f}")  # fmt: skip
    row("HTTP requests/s to Prefect", f"{idle['http_req_per_s']:.2f}", f"{busy['http_req_per_s']:.2f}",
        f"{base['http_req_per_s']:.2f}")  # fmt: skip
    row("HTTP requests/s per promotion", "", f"{d['suspended_req_per_s_per_promotion']:.3f}",
        f"{d['in_process_req_per_s_per_promotion']:.3f}")  # fmt: skip
    row("  of which added by waiting", "", f"{d['suspended_req_per_s_added_per_promotion']:.3f}",
        f"{d['in_process_req_per_s_per_promotion']:.3f}")  # fmt: skip
    row("websocket messages/s sent", f"{idle['ws_messages_per_s']:.2f}", f"{busy['ws_messages_per_s']:.2f}",
        f"{base['ws_messages_per_s']:.2f}")  # fmt: skip
    rs, ri = sus["resume_to_promoted"], inp["resume_to_promoted"]

    def lat(s: dict[str, Any], q: str) -> str:
        return f"{s[q] / 1000:.2f}" if s["n"] else "n/a"

    for q in ("p50_ms", "p90_ms", "max_ms"):
        row(f"resume -> promoted prod, s, {q[:-3]}", "", lat(rs, q), lat(ri, q))
    row("  answers timed", "", str(rs["n"]), str(ri["n"]))
    for phase in PHASES[:-1]:
        ps, pi = sus["resume_phases"][phase], inp["resume_phases"][phase]
        row(f"  resume -> run {phase.capitalize()}, s, p50", "", lat(ps, "p50_ms"), lat(pi, "p50_ms"))
    add("")
    add(
        "load average (1 min) at the start of: suspended window "
        f"{busy['loadavg_at_start'][0]:.2f}, its answers {sus['resume_loadavg']['start'][0]:.2f}; "
        f"in-process window {base['loadavg_at_start'][0]:.2f}, its answers "
        f"{inp['resume_loadavg']['start'][0]:.2f}"
    )
    goal = rs["n"] > 0 and rs["p50_ms"] <= GOAL_P50_S * 1000
    add(f"goal: suspended resume -> promoted p50 <= {GOAL_P50_S:g} s: {'met' if goal else 'NOT met'}")
    n = d["extrapolated_to"]
    add(f"extrapolated to {n} waiting promotions (linear, from the figures above; NOT measured):")
    add(
        f"  suspended  ~{d['extrapolated_suspended_rss_mib']:.0f} MiB RSS, "
        f"~{d['extrapolated_suspended_req_per_s']:.2f} requests/s "
        f"(+-{d['extrapolated_suspended_req_per_s_resolution']:.2f} per request more or less in the window)"
    )
    add(
        f"  in-process ~{d['extrapolated_in_process_rss_mib'] / 1024:.1f} GiB RSS, "
        f"~{d['extrapolated_in_process_req_per_s']:.0f} requests/s "
        f"(+{d['extrapolated_in_process_ws_messages_per_s']:.1f} websocket messages/s)"
    )
    add("")
    for label, wdw in (("suspended", busy), ("in-process", base)):
        top = ", ".join(f"{k} {v}" for k, v in list(wdw["by_route"].items())[:4])
        add(f"requests in the {label} window: {wdw['http_requests']} ({top})")
    add("")
    render_checks(res["checks"], add, every=True)
    add(load_and_total_line(m, res["total_s"]))
    return "\n".join(lines)


@contextmanager
def servers(tmp: Path) -> Iterator[tuple[LocalS3, str]]:
    with LocalS3(bucket="bench-approvals") as s3, aws_credentials(s3):
        print(f"SeaweedFS at {s3.endpoint_url}; starting the Prefect test server (SQLite)...", flush=True)
        with prefect_test_server() as api:
            yield s3, api


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--count", type=int, default=None, help="suspended promotions (default 20; quick 3)")
    ap.add_argument(
        "--baseline-count", type=int, default=None, help="in-process paused promotions (default 10; quick 2)"
    )
    ap.add_argument(
        "--seconds", type=float, default=None, help="window while they wait (default 30; quick 10)"
    )
    ap.add_argument(
        "--idle-seconds",
        type=float,
        default=None,
        help="window on serve with nothing waiting (default 15; quick 5)",
    )
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 and 2 promotions, 10 s windows")
    args = ap.parse_args(argv)
    fill_defaults(
        args,
        {"count": 3, "baseline_count": 2, "seconds": 10.0, "idle_seconds": 5.0},
        {"count": 20, "baseline_count": 10, "seconds": 30.0, "idle_seconds": 15.0},
    )
    if min(args.count, args.baseline_count) < 1 or min(args.seconds, args.idle_seconds) <= 0:
        ap.error("--count and --baseline-count must be >= 1, --seconds and --idle-seconds > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    started = time.perf_counter()
    machine = machine_facts(("prefect", "httpx", "pydantic", "boto3"))
    machine["prefect_database"] = SQLITE_DESCRIPTION
    with tempfile.TemporaryDirectory(prefix="bench-approvals-") as tmp_s, servers(Path(tmp_s)) as (s3, api):
        tmp = Path(tmp_s)
        services = [f"sus-{i:03d}" for i in range(args.count)] + [
            f"pau-{i:03d}" for i in range(args.baseline_count)
        ]
        config = tmp / "promotion.yaml"
        config.write_text(
            PIPELINE.format(
                endpoint=s3.endpoint_url,
                bucket=s3.bucket,
                prefix=f"bench-{uuid.uuid4().hex[:8]}/",
                services=", ".join(f"{{name: {s}}}" for s in services),
            )
        )
        pipeline = load_pipeline(config)
        with CountingProxy(api) as proxy:
            child_env = {**os.environ, **s3.env(), "PREFECT_API_URL": proxy.api_url}
            for var in ("PREFECT__FLOW_RUN_ID", "PROMOTION_CONFIG"):
                child_env.pop(var, None)
            b = Bench(config, pipeline, ArtifactStore(pipeline), proxy, child_env, tmp)
            print(f"Prefect at {api}, clients through the counting proxy at {proxy.api_url}", flush=True)
            print(f"1/2 suspended: promote serve + {args.count} runs of the deployment", flush=True)
            suspended = suspended_side(b, args.count, args.seconds, args.idle_seconds)
            print(f"2/2 in-process pause: {args.baseline_count} 'promote run' processes", flush=True)
            in_process = inprocess_side(b, args.baseline_count, args.seconds)
    machine["loadavg_at_end"] = os.getloadavg()
    res: dict[str, Any] = {
        "machine": machine,
        "params": {
            "count": args.count,
            "baseline_count": args.baseline_count,
            "seconds": args.seconds,
            "idle_seconds": args.idle_seconds,
            "quick": args.quick,
            "answer": ANSWER,
            "pipeline": "dev (no gates) -> prod (approval: alice or bob, 1 of 2, timeout 1h)",
            "serve_poll_seconds": SERVE_POLL_SECONDS,
        },
        "suspended": suspended,
        "in_process": in_process,
        "checks": b.checks,
        "finished_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "total_s": time.perf_counter() - started,
    }
    res["derived"] = derived(res)
    print()
    print(render(res))
    write_results(args.out, res)
    return 0 if all(c["ok"] for c in b.checks) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"BenchError: {exc}", file=sys.stderr)
        sys.exit(1)
