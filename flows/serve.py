"""Serve the promotion deployments from one process (``promote serve``): no work pool needed.

The same deployments as ``deployments/prefect.yaml``: the pipeline and rollback on demand, the
approval deadline checks the pipeline schedules, the nightly sweep on the pipeline file's cron.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flows.deadlines import DEPLOYMENT_NAME as DEADLINES_DEPLOYMENT
from flows.deadlines import close_expired_approvals
from flows.pipeline import promote_pipeline
from flows.rollback import rollback
from flows.sweep import nightly_sweep
from flows.sweep import schedule as sweep_schedule
from promotion import heartbeats
from promotion.config import Pipeline

PIPELINE_DEPLOYMENT = "pipeline"
#: Seconds between the runner's checks for runs to start (Prefect's default is 10): a resumed
#: approval is picked up within this.
POLL_SECONDS = 2


def runner_deployments(pipeline: Pipeline, config: Path) -> list[Any]:
    """The four deployments, each defaulting to this pipeline file (an absolute path)."""
    params = {"config": str(config.resolve())}
    flow_name, _, deployment_name = pipeline.webhooks.deployment.partition("/")
    if flow_name != promote_pipeline.name:
        from promotion.errors import ConfigError

        raise ConfigError(
            "webhooks.deployment",
            [f"names flow {flow_name!r}; the pipeline flow is {promote_pipeline.name!r}"],
        )
    return [
        promote_pipeline.to_deployment(name=deployment_name or PIPELINE_DEPLOYMENT, parameters=params),
        rollback.to_deployment(name="rollback", parameters=params),
        close_expired_approvals.to_deployment(name=DEADLINES_DEPLOYMENT, parameters=params),
        nightly_sweep.to_deployment(name="nightly", parameters=params, **sweep_schedule(pipeline)),
    ]


def serve_all(pipeline: Pipeline, config: Path, limit: int | None = None) -> None:
    """Block serving the deployments; Ctrl-C stops it."""
    from prefect import serve

    # The runner starts each flow run in a child process, which inherits this: the runs send the
    # heartbeats the crash-detection automation expects (promotion/heartbeats.py).
    heartbeats.enable()
    serve(*runner_deployments(pipeline, config), limit=limit, query_seconds=POLL_SECONDS)
