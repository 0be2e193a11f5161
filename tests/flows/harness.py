"""Helpers for flow tests: a pipeline per test, flow runs in threads, finding paused runs."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from promotion import heartbeats
from promotion.config import load_pipeline
from promotion.digest import Digest
from promotion.models import Provenance
from promotion.store import ArtifactStore, parse_evidence
from tests.flow_threads import FlowThread

REPO = Path(__file__).resolve().parents[2]
EVIDENCE = REPO / "examples" / "evidence"

# The flow runs of this test process heartbeat as promote run/serve would (before Prefect is
# imported): the crash-detection automation that tests create on the session's server would
# otherwise mark long runs Crashed (Prefect's default frequency, 180 s, exceeds its window).
heartbeats.enable()

PIPELINE = """
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
    approval: {{approvers: [alice, bob, carol], min_approvals: {min_approvals}, timeout: {timeout}}}
"""


class Setup:
    def __init__(self, config: Path) -> None:
        self.config = config
        self.pipeline = load_pipeline(config)
        self.store = ArtifactStore(self.pipeline)

    def publish(self, tmp: Path, *, evidence: list[str] | None = None, author: str = "dana") -> Digest:
        f = tmp / f"app-{uuid.uuid4().hex[:6]}.bin"
        f.write_bytes(uuid.uuid4().bytes * 100)
        ev = evidence if evidence is not None else [
            f"junit={EVIDENCE / 'junit.xml'}",
            f"coverage={EVIDENCE / 'coverage.xml'}",
            f"sarif={EVIDENCE / 'bandit.sarif'}",
        ]  # fmt: skip
        prov = Provenance(commit="c0ffee", commit_author=author, build_url="https://ci/1", published_by="ci")
        return self.store.publish(
            f, service="api", version="1.0", provenance=prov, evidence=parse_evidence(ev)
        ).digest


#: A flow run in a background thread (the flow tests' name for it; shared with bench/).
Run = FlowThread


def wait_for_paused(run: Run, seen: set[str] | None = None, timeout: float = 60) -> str:
    """The id of a paused flow run not in ``seen``: polls Prefect's API until one appears."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    from flows.approval import form_ready

    seen = seen or set()
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                )
            )
            fresh = [str(r.id) for r in runs if str(r.id) not in seen and form_ready(client, r)]
            if fresh:
                return fresh[0]
            assert run.thread.is_alive(), f"run ended without pausing: {run.state} {run.error}"
            time.sleep(0.2)  # polling the API for a condition, with a deadline
    raise AssertionError("no paused flow run appeared")


def resume(run_id: str, decision: str, approver: str, reason: str = "") -> None:
    from uuid import UUID

    from prefect.flow_runs import resume_flow_run

    resume_flow_run(UUID(run_id), run_input={"decision": decision, "approver": approver, "reason": reason})


def filtered_events(
    api: str, body: dict[str, Any], expected: set[str] | Mapping[str, int], timeout: float = 30
) -> list[dict[str, Any]]:
    """The events ``body`` (an /events/filter request) selects, once all ``expected`` names are
    among them (a mapping: at least that many of each): the server persists events
    asynchronously, so two events of one name may arrive a poll apart."""
    import httpx

    wanted = Counter(expected) if isinstance(expected, Mapping) else Counter(dict.fromkeys(expected, 1))
    deadline = time.monotonic() + timeout
    events: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        r = httpx.post(f"{api}/events/filter", json=body)
        r.raise_for_status()
        events = r.json()["events"]
        if not wanted - Counter(e["event"] for e in events):
            return events
        time.sleep(0.5)  # polling for a condition, with a deadline
    raise AssertionError(
        f"events {dict(wanted - Counter(e['event'] for e in events))} never arrived: "
        f"{[e['event'] for e in events]}"
    )


def promotion_events(
    api: str, digest: Digest, expected: set[str] | Mapping[str, int], timeout: float = 30
) -> list[dict[str, Any]]:
    """Promotion events about ``digest``, once all ``expected`` names are persisted (async)."""
    body = {"filter": {"any_resource": {"id": [f"promotion.digest.{digest}"]}}, "limit": 50}
    return filtered_events(api, body, expected, timeout)


def stage_artifact(key: str) -> str:
    """The latest markdown of a Prefect artifact by key."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert found, f"no artifact {key}"
    latest = max(found, key=lambda a: a.created or 0)
    return str(latest.data)
