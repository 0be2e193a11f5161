"""The nightly sweep's delivery summary on a real Prefect server: the table and markdown
artifacts read back from the API carry the dashboard's figures per service; an S3 outage while
the summary is built (injected by the real fault proxy, tests/faultproxy.py) is logged, writes no
artifact and no ledger record, and fails the sweep (a ledger it could not read)."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from promotion.config import Pipeline
from promotion.ledger import SEQ_WIDTH
from promotion.local_s3 import LocalS3
from promotion.store import ArtifactStore
from tests.conftest import PIPELINE_TEMPLATE
from tests.faultproxy import FaultProxy, Rule, proxied_pipeline
from tests.promotion.test_report import seed_report

if TYPE_CHECKING:
    from prefect.client.schemas.objects import Artifact

D = dt.timedelta(days=1)
#: The first ledger record of api: inside the summary's 90-day window, so the summary reads it;
#: a sweep whose history index is up to date reads only the tip (promotion/sweep/index.py).
FIRST_RECORD = rf"/ledger/api/{1:0{SEQ_WIDTH}d}\.json"


def _latest(key: str) -> Artifact:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert found, f"no artifact {key}"
    return max(found, key=lambda a: a.created or 0)


def test_sweep_writes_the_delivery_summary(
    store: ArtifactStore, pipeline: Pipeline, prefect_api: str
) -> None:
    from prefect import flow

    from flows.sweep import SUMMARY_KEY, delivery_summary

    now = dt.datetime.now(dt.UTC)
    seed_report(store.ledger, now - 20 * D)

    @flow
    def night() -> None:
        delivery_summary(pipeline, store, now)

    night()
    table = _latest(SUMMARY_KEY)
    assert table.type == "table"
    assert table.description == "2 service(s), 2 deployment(s) to prod"
    rows = json.loads(str(table.data))
    api = next(r for r in rows if r["service"] == "api")
    assert (api["environment"], api["deployments"], api["lead_time_p50"]) == ("prod", 2, "8h")
    assert api["change_fail_rate"] == "0.0%" and api["running"] == "sha256:3f39d5c348e5 for 12d"
    web = next(r for r in rows if r["service"] == "web")
    assert (web["deployments"], web["lead_time_p50"], web["running"]) == (0, "-", "-")
    md = _latest(SUMMARY_KEY + "-figures")
    text = str(md.data)
    assert md.type == "markdown"
    assert text.startswith("# Delivery summary: 90 days to ")
    assert "| api | 2 | 0.02 | 8h | 0.0% | - | sha256:3f39d5c348e5 for 12d |" in text


def _artifacts_of(flow_run_id: uuid.UUID) -> list[Artifact]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )


def _wait_for_log(flow_run_id: uuid.UUID, text: str, timeout: float = 30) -> str:
    """The first log line of the run holding ``text`` (logs reach the server in batches: polled)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        seen = [log.message for log in logs]
        found = next((m for m in seen if text in m), None)
        if found is not None:
            return found
        time.sleep(0.2)
    raise AssertionError(f"no log line with {text!r} in {timeout} s; seen: {seen}")


def test_an_s3_outage_writes_no_summary_and_records_nothing(
    s3_server: LocalS3, prefix: str, store: ArtifactStore, prefect_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect import flow

    from flows.sweep import delivery_summary

    monkeypatch.setenv("PROMOTION_S3_MAX_ATTEMPTS", "2")
    now = dt.datetime.now(dt.UTC)
    seed_report(store.ledger, now - 20 * D)
    before = store.ledger.records("api")
    with FaultProxy(s3_server.endpoint_url) as proxy:
        proxy.rules.append(Rule("GET", FIRST_RECORD, "status", status=503, times=-1))
        through_proxy = ArtifactStore(proxied_pipeline(s3_server, prefix, proxy))

        @flow
        def night() -> str | None:
            return delivery_summary(through_proxy.pipeline, through_proxy, now)

        state = night(return_state=True)
        assert sum(1 for _, _, status in proxy.log if status == 503) == 2  # botocore's two tries
    assert state.is_completed()  # the step itself reports; the sweep decides (next test)
    error = state.result()
    assert isinstance(error, str), error
    assert error.startswith("delivery summary not written: StoreUnavailable: "), error
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    assert _wait_for_log(run_id, "delivery summary not written") == error
    assert _artifacts_of(run_id) == []  # no table of made-up (or zero) figures
    assert store.ledger.records("api") == before  # nothing recorded against any digest


def test_the_sweep_fails_when_its_summary_cannot_be_read(
    s3_server: LocalS3,
    prefix: str,
    store: ArtifactStore,
    tmp_path: Path,
    prefect_api: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same sweep twice: healthy, then with the summary's first ledger read failing (the
    sweep's own reads pass: its history index is up to date). Only the summary is missing, and
    the sweep says so by failing, after writing its own table."""
    from flows.sweep import ARTIFACT_KEY, SUMMARY_KEY, nightly_sweep

    monkeypatch.setenv("PROMOTION_S3_MAX_ATTEMPTS", "2")
    with FaultProxy(s3_server.endpoint_url) as proxy:
        cfg = tmp_path / "promotion.yaml"
        cfg.write_text(PIPELINE_TEMPLATE.format(endpoint=proxy.url, bucket=s3_server.bucket, prefix=prefix))
        seed_report(store.ledger, dt.datetime.now(dt.UTC) - 20 * D)  # directly, not proxied

        healthy = nightly_sweep(config=str(cfg), return_state=True)
        assert healthy.is_completed(), healthy.message
        healthy_id = healthy.state_details.flow_run_id
        assert healthy_id is not None
        assert {a.key for a in _artifacts_of(healthy_id)} >= {SUMMARY_KEY, ARTIFACT_KEY}
        after_healthy = store.ledger.records("api")

        proxy.rules.append(Rule("GET", FIRST_RECORD, "status", status=503, times=-1))
        state = nightly_sweep(config=str(cfg), return_state=True)
        faulted = sum(1 for _, path, status in proxy.log if status == 503 and "/ledger/api/" in path)
    assert faulted == 2
    assert state.is_failed()
    assert "1 error(s): delivery summary not written: StoreUnavailable: " in str(state.message), state.message
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    keys = {a.key for a in _artifacts_of(run_id)}
    assert ARTIFACT_KEY in keys and SUMMARY_KEY not in keys and SUMMARY_KEY + "-figures" not in keys
    assert store.ledger.records("api") == after_healthy  # no verdict, no flag from the outage
