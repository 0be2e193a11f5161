"""The nightly sweep's delivery summary on a real Prefect server: the table and markdown
artifacts read back from the API carry the dashboard's figures per service."""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING

from promotion.config import Pipeline
from promotion.store import ArtifactStore
from tests.promotion.test_report import seed_report

if TYPE_CHECKING:
    from prefect.client.schemas.objects import Artifact

D = dt.timedelta(days=1)


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
