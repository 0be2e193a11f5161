"""The nightly sweep's alert step on a real Prefect server: ``promotion.metric.crossed`` once while
a threshold stays crossed, then ``promotion.metric.recovered`` once, about the service."""

from __future__ import annotations

import datetime as dt
from typing import Any

from promotion.config import Pipeline
from promotion.store import ArtifactStore
from tests.flows.harness import filtered_events
from tests.promotion.test_metric_alerts import with_alerts
from tests.promotion.test_metrics import NOW, Seeder

D = dt.timedelta(days=1)
H = dt.timedelta(hours=1)


def metric_events(api: str, since: dt.datetime, until_seen: str, timeout: float = 30) -> list[dict[str, Any]]:
    """``promotion.metric.*`` events about api/prod since ``since``, once ``until_seen`` arrived."""
    body = {
        "filter": {
            "occurred": {"since": since.isoformat()},
            "event": {"prefix": ["promotion.metric."]},
            "resource": {"id": ["promotion.api.prod"]},
            "order": "ASC",
        },
        "limit": 50,
    }
    return filtered_events(api, body, {until_seen}, timeout)


def test_crossing_and_recovery_events(store: ArtifactStore, pipeline: Pipeline, prefect_api: str) -> None:
    from prefect import flow

    from flows.sweep import metric_alerts

    p = with_alerts(pipeline)
    # No slack before now: an event's time is this process's clock, and the test before this one
    # (tests/flows/test_owner_notifications.py) emits promotion.metric.* about api/prod too.
    started = dt.datetime.now(dt.UTC)

    @flow
    def nights(nows: list[dt.datetime]) -> list[list[str]]:
        return [[t.kind for t in metric_alerts(p, store, now)] for now in nows]

    s = Seeder(store.ledger)
    s.promoted("A", NOW - 10 * D, commit_time=NOW - 10 * D - H)
    s.promoted("B", NOW - 9 * D, commit_time=NOW - 9 * D - H)
    s.rolled_back("A", "B", NOW - 9 * D + H, "verification failed: http: HTTP 500")
    assert nights([NOW, NOW + D]) == [["crossed"], []]  # the second night tells nothing
    for i in range(6):
        s.promoted(f"ok{i}", NOW + D + (i + 1) * H, commit_time=NOW + D + i * H)
    assert nights([NOW + 2 * D, NOW + 3 * D]) == [["recovered"], []]

    events = metric_events(prefect_api, started, "promotion.metric.recovered")
    assert [e["event"] for e in events] == ["promotion.metric.crossed", "promotion.metric.recovered"]
    crossed, recovered = (e["payload"] for e in events)
    assert crossed["metric"] == "change_fail_rate" and crossed["value"] == 0.5
    assert crossed["threshold"] == 0.15 and crossed["direction"] == "above"
    assert recovered["value"] == 1 / 8 and recovered["window_days"] == 30
    assert events[0]["resource"]["promotion.service"] == "api"
    assert {"prefect.resource.id": "promotion.service.api", "prefect.resource.role": "service"} in events[0][
        "related"
    ]
