"""Approvals that wait for free (issue 8, items 1, 2 and 4): a pipeline run of a deployment suspends.

A real ``promote serve`` process serves the deployments on the session's Prefect server; runs
are created from the deployment, as the webhook and the sweep create them. While a promotion
waits for a person, no process exists for it (checked on the process tree and on every process's
environment); an answer resumes it, and it re-enters from the top with what is done skipped.
``kill -9`` of ``promote serve`` loses nothing: decisions given before, during and after the
outage count, and no request is asked twice. A deadline passed with nothing running is recorded
as a timeout within a minute, and the form is no longer offered.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from promotion.config import load_pipeline
from promotion.digest import Digest
from promotion.models import LedgerRecord, Provenance
from promotion.store import ArtifactStore
from tests.local_servers import run_processes

PROMOTE = str(Path(sys.executable).parent / "promote")
SERVICES = ["api", "web", "worker"]

PIPELINE = """
store: {{endpoint_url: "{endpoint}", bucket: {bucket}, prefix: "{prefix}"}}
services: [{services}]
environments:
  - name: dev
  - name: prod
    approval: {{approvers: [alice, bob, carol], min_approvals: 2, timeout: {timeout}}}
"""


class Served:
    """A pipeline file and a ``promote serve`` process for it, which a test may kill and restart."""

    def __init__(self, config: Path, env: dict[str, str], log: Path) -> None:
        self.config = config
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.pipeline = load_pipeline(config)
        self.store = ArtifactStore(self.pipeline)

    def start(self) -> None:
        from prefect.client.orchestration import get_client

        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [PROMOTE, "-c", str(self.config), "serve"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # Ready once the runner has registered the pipeline deployment with this file as default.
        deadline = time.monotonic() + 90
        with get_client(sync_client=True) as client:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, self.log.read_text()[-3000:]
                try:
                    dep = client.read_deployment_by_name("close-expired-approvals/approval-deadlines")
                    if dep.parameters.get("config") == str(self.config.resolve()):
                        return
                except Exception:  # noqa: BLE001 - not registered yet
                    pass
                time.sleep(0.3)  # polling the API for a condition, with a deadline
        raise AssertionError("promote serve did not register its deployments:\n" + self.log.read_text())

    def kill(self) -> None:
        """``kill -9`` of the serve process and everything it started."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()

    def publish(self, tmp: Path, service: str) -> Digest:
        f = tmp / f"{service}-{uuid.uuid4().hex[:6]}.bin"
        f.write_bytes(uuid.uuid4().bytes * 64)
        prov = Provenance(commit="c0ffee", commit_author="dana", build_url="https://ci/1", published_by="ci")
        return self.store.publish(f, service=service, version="1.0", provenance=prov).digest

    def start_run(self, service: str, digest: Digest) -> str:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            dep = client.read_deployment_by_name("promote-pipeline/pipeline")
            run = client.create_flow_run_from_deployment(
                dep.id, parameters={"service": service, "digest": str(digest), "requested_by": "dana"}
            )
        return str(run.id)

    def promote(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PROMOTE, "-c", str(self.config), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def records(self, service: str) -> list[LedgerRecord]:
        return self.store.ledger.records(service)


@pytest.fixture
def served(
    prefect_api: str, s3_server: Any, prefix: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Served]:
    timeout = getattr(request, "param", "1h")
    cfg = tmp_path / "promotion.yaml"
    cfg.write_text(
        PIPELINE.format(
            endpoint=s3_server.endpoint_url,
            bucket=s3_server.bucket,
            prefix=prefix,
            services=", ".join(f"{{name: {s}}}" for s in SERVICES),
            timeout=timeout,
        )
    )
    env = {**os.environ, "PREFECT_API_URL": prefect_api, **s3_server.env()}
    env.pop("PREFECT__FLOW_RUN_ID", None)
    s = Served(cfg, env, tmp_path / "serve.log")
    s.start()
    try:
        yield s
    finally:
        s.stop()


def run_state(run_id: str) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(uuid.UUID(run_id))


def wait_suspended(run_id: str, after: int = 0, timeout: float = 120) -> Any:
    """The run once it is suspended with a form stored, for the ``after``-th time or later."""
    from prefect.client.orchestration import get_client

    from flows.approval import form_ready

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(uuid.UUID(run_id))
            assert run.state is not None
            assert not run.state.is_final(), f"run ended: {run.state.name}: {run.state.message}"
            if run.state.name == "Suspended" and form_ready(client, run):
                states = client.read_flow_run_states(uuid.UUID(run_id))
                if sum(st.name == "Suspended" for st in states) > after:
                    return run
            time.sleep(0.3)  # polling the API for a condition, with a deadline
    raise AssertionError(f"run {run_id} was not suspended (the {after + 1}th time) in {timeout}s")


def wait_final(run_id: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = run_state(run_id)
        if run.state is not None and run.state.is_final():
            return run
        time.sleep(0.3)  # polling the API for a condition, with a deadline
    raise AssertionError(f"run {run_id} did not finish in {timeout}s")


def processes_of(run_id: str) -> list[str]:
    """Every process on this machine whose environment names the flow run (the runner sets it)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if f"PREFECT__FLOW_RUN_ID={run_id}".encode() in environ:
            found.append(pid)
    return found


def gone(run_id: str, serve_pid: int | None = None, timeout: float = 30) -> list[str]:
    """Processes of the run (and run processes of ``serve_pid``, zombies too) still there once
    the run had ``timeout`` s to exit after suspending. A run process forked by serve's
    forkserver keeps the forkserver's environment: the process tree is what finds it."""
    deadline = time.monotonic() + timeout
    while True:
        left = processes_of(run_id) + (describe(run_processes(serve_pid)) if serve_pid else [])
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)  # polling the process table for a condition, with a deadline


def describe(pids: list[int]) -> list[str]:
    said = []
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except OSError:
            continue
        said.append(f"{pid} [{stat}] {cmd}")
    return said


def resume_as_ui(run_id: str, decision: str, approver: str, reason: str = "") -> None:
    """What the UI's Resume form sends: the run input, and nothing in the ledger."""
    from prefect.flow_runs import resume_flow_run

    resume_flow_run(
        uuid.UUID(run_id), run_input={"decision": decision, "approver": approver, "reason": reason}
    )


def approvals(records: list[LedgerRecord], digest: Digest) -> list[tuple[str, str, bool]]:
    return [
        (r.actor, str(r.details.get("source")), bool(r.details.get("counted")))
        for r in records
        if r.event == "approval" and r.digest == digest
    ]


def events(records: list[LedgerRecord], digest: Digest) -> list[str]:
    return [f"{r.event} {r.environment}" for r in records if r.digest == digest]


def test_a_waiting_promotion_holds_no_process_and_each_answer_resumes_it(
    served: Served, tmp_path: Path
) -> None:
    digest = served.publish(tmp_path, "api")
    run_id = served.start_run("api", digest)
    wait_suspended(run_id)
    assert served.proc is not None
    # Nothing runs for the waiting promotion, and promote serve runs nothing either.
    assert gone(run_id, served.proc.pid) == []
    assert events(served.records("api"), digest) == [
        "published None",
        "promoted dev",
        "approval_requested prod",
    ]

    # Through the form (as the UI does): the commit author is refused, the run waits again.
    resume_as_ui(run_id, "approve", "dana", "my own change")
    wait_suspended(run_id, after=1)
    resume_as_ui(run_id, "approve", "alice", "looks good")
    wait_suspended(run_id, after=2)
    assert gone(run_id) == []
    # From the CLI, by SERVICE ENV: recorded first, then the run resumes and deploys.
    done = served.promote("approve", "api", "prod", "--as", "bob", "--reason", "ok")
    assert done.returncode == 0, done.stderr
    assert "counted (2 of 2): approved" in done.stdout + done.stderr
    final = wait_final(run_id)
    assert final.state.is_completed(), final.state.message

    records = served.records("api")
    # Each answer recorded once (bob's by the CLI only), dana's refused; asked once.
    assert approvals(records, digest) == [
        ("dana", "run", False),
        ("alice", "run", True),
        ("bob", "cli", True),
    ]
    assert events(records, digest) == [
        "published None",
        "promoted dev",
        "approval_requested prod",
        "approval prod",
        "approval prod",
        "approval prod",
        "promoted prod",
    ]
    assert served.store.ledger.tip("api").state.environments["prod"].digest == digest
    assert served.store.ledger.verify("api").ok
    # Each entry ran its stage as a new subflow run: none re-used (and re-ran) an earlier one.
    stages = stage_runs(run_id)
    assert sorted(r.parameters["environment"] for r in stages) == ["dev"] + ["prod"] * 4
    assert all(r.run_count == 1 and r.state.is_completed() for r in stages)


def stage_runs(run_id: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        flt = FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[uuid.UUID(run_id)]))
        return list(client.read_flow_runs(flow_run_filter=flt))


def test_kill_9_of_promote_serve_while_three_wait_loses_no_decision(served: Served, tmp_path: Path) -> None:
    digests = {s: served.publish(tmp_path, s) for s in SERVICES}
    runs = {s: served.start_run(s, d) for s, d in digests.items()}
    for run_id in runs.values():
        wait_suspended(run_id)
    # Before the crash: alice approves each (1 of 2); each run re-enters and waits again.
    for s in SERVICES:
        r = served.promote("approve", s, "prod", "--as", "alice")
        assert r.returncode == 0, r.stderr
    for run_id in runs.values():
        wait_suspended(run_id, after=1)

    served.kill()
    # While nothing serves: carol approves api (recorded, and its run is scheduled again).
    during = served.promote("approve", "api", "prod", "--as", "carol")
    assert during.returncode == 0, during.stderr
    served.start()
    final = wait_final(runs["api"])
    assert final.state.is_completed(), final.state.message
    # After the restart: bob approves the other two.
    for s in ("web", "worker"):
        wait_suspended(runs[s], after=1)
        r = served.promote("approve", s, "prod", "--as", "bob")
        assert r.returncode == 0, r.stderr
    for s in ("web", "worker"):
        final = wait_final(runs[s])
        assert final.state.is_completed(), final.state.message

    for s, d in digests.items():
        records = served.records(s)
        second = "carol" if s == "api" else "bob"
        assert approvals(records, d) == [("alice", "cli", True), (second, "cli", True)]
        assert events(records, d).count("approval_requested prod") == 1  # never asked twice
        assert events(records, d)[-1] == "promoted prod"
        assert served.store.ledger.verify(s).ok


@pytest.mark.parametrize("served", ["15s"], indirect=True)
def test_the_deadline_is_recorded_with_nothing_running(served: Served, tmp_path: Path) -> None:
    digest = served.publish(tmp_path, "api")
    run_id = served.start_run("api", digest)
    wait_suspended(run_id)
    assert gone(run_id) == []
    request = served.store.ledger.tip("api").state.approval_requests
    assert len(request) == 1
    rec = next(r for r in served.records("api") if r.event == "approval_requested")
    deadline = rec.at.timestamp() + 15

    # Nothing runs for it: the server fails the run at the deadline (the form is gone), and the
    # deadline check the run scheduled records the timeout.
    closed: LedgerRecord | None = None
    while time.time() < deadline + 60:
        closed = next((r for r in served.records("api") if r.event == "rejected"), None)
        if closed is not None:
            break
        time.sleep(0.5)  # polling the ledger for a condition, with a deadline
    assert closed is not None, "the timeout was not recorded within a minute of the deadline"
    assert closed.at.timestamp() >= deadline
    assert closed.reason == "approval timed out after 15s: no valid decision"
    assert closed.details["timed_out"] is True
    final = run_state(run_id)
    assert final.state.is_failed() and "never resumed" in (final.state.message or ""), final.state
    assert served.store.ledger.tip("api").state.approval_requests == {}

    # No form is offered any more: an answer is refused and says so.
    late = served.promote("approve", run_id, "--as", "alice")
    assert late.returncode != 0
    assert "not waiting" in late.stderr or "no approval request" in late.stderr, late.stderr
    pending = served.promote("pending", "--json")
    assert pending.returncode == 0 and json.loads(pending.stdout) == []
    assert served.store.ledger.verify("api").ok
