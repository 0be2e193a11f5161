"""Metric alerts (issue 11 item 4): thresholds in the pipeline file, crossed once, recovered once,
remembered in the store across nights (real SeaweedFS)."""

from __future__ import annotations

import datetime as dt

import pytest

from promotion.config import Pipeline, parse_pipeline
from promotion.errors import ConfigError
from promotion.metrics.alerts import check_service, load_state, save_state
from promotion.store import ArtifactStore
from tests.conftest import PIPELINE_TEMPLATE
from tests.promotion.test_metrics import NOW, Seeder

D = dt.timedelta(days=1)
H = dt.timedelta(hours=1)

ALERTS = """
services:
  - name: api
    alerts: {{change_fail_rate: 0.15, lead_time_p50: 2d, deployment_frequency_min: 0.05{extra}}}
"""


def with_alerts(pipeline: Pipeline, extra: str = "") -> Pipeline:
    text = PIPELINE_TEMPLATE.format(
        endpoint=pipeline.store.endpoint_url, bucket=pipeline.store.bucket, prefix=pipeline.store.prefix
    )
    head, _, rest = text.partition("services:\n  - name: api\n")
    return parse_pipeline(head + ALERTS.format(extra=extra).lstrip("\n") + rest)


def test_alerts_in_the_pipeline_file(pipeline: Pipeline) -> None:
    p = with_alerts(pipeline)
    alerts = p.service("api").alerts
    assert alerts is not None
    assert (alerts.environment, alerts.window, alerts.lead_time_p50) == ("prod", 30 * D, 2 * D)
    assert p.service("web").alerts is None
    for extra, problem in (
        (", change_fail_rat: 0.1", r"alerts\.change_fail_rat: unknown key"),
        (", rework_rate: 1.5", "rework_rate"),
        (", environment: qa", "not one of the environments"),
        (", recovery_time_p50: soon", "recovery_time_p50"),
    ):
        with pytest.raises(ConfigError, match=problem):
            with_alerts(pipeline, extra)
    with pytest.raises(ConfigError, match="at least one threshold"):
        parse_pipeline(
            PIPELINE_TEMPLATE.format(endpoint="http://x", bucket="b", prefix="p").replace(
                "  - name: web\n", "  - name: web\n    alerts: {environment: prod}\n"
            )
        )


def night(store: ArtifactStore, pipeline: Pipeline, now: dt.datetime) -> list[tuple[str, str]]:
    """One sweep's alert step without Prefect: the transitions, and the state saved after."""
    alerts = pipeline.service("api").alerts
    assert alerts is not None
    changes, state = check_service(store.s3, store.ledger, "api", alerts, now)
    save_state(store.s3, state)
    return [(t.kind, t.reading.metric) for t in changes]


def test_crossed_once_then_recovered_once(store: ArtifactStore) -> None:
    p = with_alerts(store.pipeline)
    s = Seeder(store.ledger)
    first = NOW - 10 * D
    s.promoted("A", first, commit_time=first - H)
    s.promoted("B", first + D, commit_time=first + D - H)
    s.rolled_back("A", "B", first + D + 2 * H, "verification failed: http: HTTP 500")
    # night 1: fail rate 1 of 2 = 50 % > 15 %: crossed; lead time 1h and 2 deployments in 30 days
    # (0.067/day >= 0.05) are fine
    assert night(store, p, NOW) == [("crossed", "change_fail_rate")]
    state = load_state(store.s3, "api", "prod")
    assert list(state.crossed) == ["change_fail_rate"] and state.crossed["change_fail_rate"].since == NOW
    # night 2: still crossed, nothing new to tell (also after a restart: the state is in S3)
    assert night(store, p, NOW + D) == []
    # six good deployments: 1 of 8 = 12.5 % < 15 %
    for i in range(6):
        at = NOW + D + (i + 1) * H
        s.promoted(f"ok{i}", at, commit_time=at - H)
    assert night(store, p, NOW + 2 * D) == [("recovered", "change_fail_rate")]
    assert night(store, p, NOW + 3 * D) == []
    assert load_state(store.s3, "api", "prod").crossed == {}


def test_idle_window_crosses_the_frequency_and_keeps_unknown_figures(store: ArtifactStore) -> None:
    p = with_alerts(store.pipeline)
    s = Seeder(store.ledger)
    s.promoted("A", NOW - 40 * D, commit_time=NOW - 45 * D)  # before the window
    s.promoted("B", NOW - 1 * D, commit_time=NOW - 6 * D)  # lead time 5d > 2d
    s.rolled_back("A", "B", NOW - 1 * D + H, "manual")
    assert sorted(night(store, p, NOW)) == [
        ("crossed", "change_fail_rate"),
        ("crossed", "deployment_frequency_min"),  # 1 in 30 days = 0.033/day < 0.05
        ("crossed", "lead_time_p50"),
    ]
    # 40 days on, nothing was deployed since: no fail rate nor lead time can be computed; they
    # stay crossed (not "recovered" by lack of data), the frequency (0/day) stays crossed too
    assert night(store, p, NOW + 40 * D) == []
    assert set(load_state(store.s3, "api", "prod").crossed) == {
        "change_fail_rate",
        "deployment_frequency_min",
        "lead_time_p50",
    }
