"""deployments/prefect.yaml and `promote serve` describe the same, importable deployments."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

from promotion.config import SweepConfig, load_pipeline
from promotion.heartbeats import HEARTBEAT_S

REPO = Path(__file__).resolve().parents[2]


def test_prefect_yaml_entrypoints_resolve_to_the_flows() -> None:
    from prefect import Flow

    doc = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    found = {}
    for d in doc["deployments"]:
        path, _, attr = d["entrypoint"].partition(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, attr)
        assert isinstance(flow, Flow)
        assert set(d["parameters"]) <= set(flow.parameters.properties)
        # work-pool runs heartbeat as often as the crash-detection automation expects
        assert d["work_pool"]["job_variables"]["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == str(HEARTBEAT_S)
        found[f"{flow.name}/{d['name']}"] = d
    pipeline = load_pipeline(REPO / "promotion.yaml", apply_env=False)
    assert pipeline.webhooks.deployment in found  # what webhooks and the sweep start exists
    nightly = found["nightly-sweep/nightly"]
    assert nightly["schedules"] == [{"cron": SweepConfig().schedule, "timezone": SweepConfig().timezone}]
    assert nightly["concurrency_limit"] == 1


def test_serve_builds_the_same_four_deployments() -> None:
    from flows.serve import runner_deployments

    pipeline = load_pipeline(REPO / "promotion.yaml", apply_env=False)
    deps = runner_deployments(pipeline, REPO / "promotion.yaml")
    assert [(d.flow_name, d.name) for d in deps] == [
        ("promote-pipeline", "pipeline"),
        ("rollback", "rollback"),
        ("close-expired-approvals", "approval-deadlines"),
        ("nightly-sweep", "nightly"),
    ]
    assert all(d.parameters["config"] == str((REPO / "promotion.yaml").resolve()) for d in deps)
    (schedule,) = deps[3].schedules
    assert schedule.schedule.cron == "0 2 * * *"
