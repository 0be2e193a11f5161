"""The promotion deployments, defined once: ``promote serve`` serves them, prefect.yaml lists them.

:func:`deployments` is the one definition (names, descriptions, the nightly sweep's schedule
from the pipeline file). :func:`runner_deployments` turns it into what ``promote serve`` serves
from one process (no work pool); :func:`prefect_yaml` renders the same definition as the
``deployments/prefect.yaml`` a work pool's workers run (``python deployments/generate.py``
writes it, ``--check`` fails when the checked-in file drifted). Editing the file by hand would
let the two disagree, so the file says it is generated and a test compares it with this.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prefect import Flow
from prefect.schedules import Schedule

from flows.deadlines import DEPLOYMENT_NAME as DEADLINES_DEPLOYMENT
from flows.deadlines import close_expired_approvals
from flows.pipeline import promote_pipeline
from flows.rollback import rollback
from flows.sweep import nightly_sweep
from flows.sweep import schedule as sweep_schedule
from promotion import heartbeats
from promotion.config import Pipeline
from promotion.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
PIPELINE_DEPLOYMENT = "pipeline"
#: Seconds between the runner's checks for runs to start (Prefect's default is 10): a resumed
#: approval is picked up within this.
POLL_SECONDS = 1
#: The work pool prefect.yaml's deployments run on (``prefect work-pool create promotion``).
WORK_POOL = "promotion"
#: Recorded in prefect.yaml (Prefect only notes it): the version the file was written for.
PREFECT_VERSION = "3.9.1"


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment as both ``promote serve`` and prefect.yaml give it."""

    flow: Flow[..., Any]
    name: str
    description: str
    schedules: list[Schedule] = field(default_factory=list)
    concurrency_limit: int | None = None

    @property
    def entrypoint(self) -> str:
        """``path/to/file.py:function`` relative to the repository, as prefect.yaml wants it."""
        source = sys.modules[self.flow.fn.__module__].__file__
        assert source is not None
        return f"{Path(source).resolve().relative_to(REPO).as_posix()}:{self.flow.fn.__name__}"


def deployments(pipeline: Pipeline) -> list[DeploymentSpec]:
    """The four deployments. The pipeline's is named by ``webhooks.deployment`` (what webhooks and
    the sweep start); the approval deadline checks are the ones a suspending pipeline run
    schedules (flows/deadlines.py); the nightly sweep runs on ``sweep.schedule``."""
    flow_name, _, deployment_name = pipeline.webhooks.deployment.partition("/")
    if flow_name != promote_pipeline.name:
        raise ConfigError(
            "webhooks.deployment",
            [f"names flow {flow_name!r}; the pipeline flow is {promote_pipeline.name!r}"],
        )
    try:
        sweep = sweep_schedule(pipeline)
    except ValueError as exc:
        # The pipeline file's validation does not check the cron yet; Prefect's Cron does.
        raise ConfigError("sweep.schedule", [f"{pipeline.sweep.schedule!r} is not usable: {exc}"]) from None
    return [
        DeploymentSpec(
            promote_pipeline,
            deployment_name or PIPELINE_DEPLOYMENT,
            "Promote a digest through the environments of the pipeline file.",
        ),
        DeploymentSpec(rollback, "rollback", "Put an environment back on an earlier digest."),
        DeploymentSpec(
            close_expired_approvals,
            DEADLINES_DEPLOYMENT,
            "Record approval requests past their deadline as timed out (a suspended run cannot).",
        ),
        DeploymentSpec(
            nightly_sweep,
            "nightly",
            "Promote what has soaked, detect drift, re-verify deployed digests, retention.",
            schedules=sweep["schedules"],
            concurrency_limit=sweep["concurrency_limit"],
        ),
    ]


def runner_deployments(pipeline: Pipeline, config: Path) -> list[Any]:
    """The deployments ``promote serve`` serves, each defaulting to this pipeline file (absolute)."""
    params = {"config": str(config.resolve())}
    return [
        d.flow.to_deployment(
            name=d.name,
            description=d.description,
            parameters=params,
            schedules=d.schedules or None,
            concurrency_limit=d.concurrency_limit,
        )
        for d in deployments(pipeline)
    ]


_HEADER = """\
# GENERATED from flows/serve.py's deployments() and the pipeline file's sweep.schedule: do not
# edit. Change those, then run `python deployments/generate.py` (a test fails while this file
# differs from what it writes; `python deployments/generate.py --check` says so too).
#
# The promotion flows as Prefect deployments on a work pool:
#
#   prefect work-pool create promotion --type process
#   PROMOTION_HOME=$PWD prefect --no-prompt deploy --all --prefect-file deployments/prefect.yaml
#   PROMOTION_HOME=$PWD prefect worker start --pool promotion
#
# For a small installation, `promote serve` serves the same deployments from one process, with
# no work pool. Deployment names are what `webhooks.deployment` in the pipeline file and the
# nightly sweep refer to (promote-pipeline/pipeline).
#
# Flow runs send a heartbeat every {heartbeat} s (job_variables): the automation `promote setup`
# creates marks a run silent for {crash} s Crashed (Prefect's default frequency, 180 s, would let it
# crash healthy runs). The nightly sweep has concurrency_limit 1: two sweeps at once would only do
# the same work twice.
"""


def _schedule_yaml(schedule: Schedule) -> dict[str, Any]:
    if schedule.cron is None or schedule.parameters or not schedule.active:
        # Only what the pipeline file can say is rendered; anything else would be dropped silently.
        raise ValueError(f"cannot render schedule {schedule!r} in prefect.yaml")
    return {"cron": schedule.cron, "timezone": schedule.timezone}


def prefect_yaml(pipeline: Pipeline, config: str = "promotion.yaml") -> str:
    """deployments/prefect.yaml for this pipeline file; ``config`` is the path the deployments'
    runs open (relative to ``$PROMOTION_HOME``, their working directory)."""
    head = {
        "name": "prefect-promotion",
        "prefect-version": PREFECT_VERSION,
        "pull": [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $PROMOTION_HOME }}"}}],
    }
    job_variables = {"env": {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(heartbeats.HEARTBEAT_S)}}
    listed = []
    for d in deployments(pipeline):
        entry: dict[str, Any] = {
            "name": d.name,
            "description": d.description,
            "entrypoint": d.entrypoint,
            "work_pool": {"name": WORK_POOL, "job_variables": job_variables},
            "parameters": {"config": config},
        }
        if d.concurrency_limit is not None:
            entry["concurrency_limit"] = d.concurrency_limit
        if d.schedules:
            entry["schedules"] = [_schedule_yaml(s) for s in d.schedules]
        listed.append(entry)

    def dump(doc: dict[str, Any]) -> str:
        # No anchors: each deployment spells its job variables out (a generated file need not be short).
        class NoAliases(yaml.SafeDumper):
            def ignore_aliases(self, data: Any) -> bool:
                return True

        return yaml.dump(doc, Dumper=NoAliases, sort_keys=False, width=110, allow_unicode=True)

    header = _HEADER.format(heartbeat=heartbeats.HEARTBEAT_S, crash=heartbeats.CRASH_AFTER_S)
    return header + dump(head) + "\n" + dump({"deployments": listed})


#: What each flow run needs, imported once by the forkserver that serve's flow runs are forked
#: from (see :func:`_fork_flow_runs`); ``promotion.cli`` is the ``promote`` script's import, which
#: a child re-runs as its ``__mp_main__``.
FORKSERVER_PRELOAD = (
    "prefect.flow_engine",
    "flows.pipeline",
    "flows.rollback",
    "flows.deadlines",
    "flows.sweep",
    "promotion.cli",
)


def _fork_flow_runs() -> bool:
    """Start serve's flow runs by forking a warm process instead of spawning a fresh interpreter.

    Prefect's runner starts a flow it holds in memory with ``run_flow_in_subprocess``, which
    spawns a new interpreter: each resumed approval paid ~2-3 s of ``import prefect`` and our
    modules before its first line ran (bench/bench_approvals.py, issue 8). Python's forkserver
    is one single-threaded process (no threads, loops or sockets of serve's to inherit), started
    here, that imports :data:`FORKSERVER_PRELOAD` once and forks a child per run; a child gets
    its own environment and settings (Prefect's wrapper applies them, as after a spawn), and
    Prefect tracks, cancels and kills it by pid as before. Waiting still costs nothing per run:
    the forkserver (and multiprocessing's resource tracker) is one process whatever waits, and
    exits with serve, ``kill -9`` included (it watches a pipe from serve). The flow code is the
    one imported when serve started: restart serve to run changed code (as with any server
    that preloads).

    Prefect has no setting for the start method (``spawn`` is written in ``run_flow_in_subprocess``),
    so its module's ``multiprocessing`` is given a forkserver context. When Prefect's code is
    not what this was written for, serve keeps Prefect's spawn and says so (False).
    """
    import multiprocessing

    import prefect.flow_engine as engine

    if not isinstance(getattr(engine, "multiprocessing", None), type(multiprocessing)) or not hasattr(
        engine, "run_flow_in_subprocess"
    ):
        return False
    import multiprocessing.forkserver

    forkserver = multiprocessing.get_context("forkserver")
    forkserver.set_forkserver_preload(list(FORKSERVER_PRELOAD))
    # Now, not with the first run: that run is as quick as the others, and the forkserver is
    # part of what serve costs idle (it is the same one process with any number waiting).
    multiprocessing.forkserver.ensure_running()

    class StartedByForkserver:
        """``multiprocessing`` for Prefect's flow engine, whose every context is the forkserver."""

        def __getattr__(self, name: str) -> Any:
            return getattr(multiprocessing, name)

        def get_context(self, method: str | None = None) -> Any:
            return forkserver

    setattr(engine, "multiprocessing", StartedByForkserver())  # noqa: B010 - replaces a module
    return True


def serve_all(pipeline: Pipeline, config: Path, limit: int | None = None) -> None:
    """Block serving the deployments; Ctrl-C stops it."""
    import asyncio

    from prefect.exceptions import TerminationSignal
    from prefect.logging import get_logger
    from prefect.runner import Runner

    # The runner starts each flow run in a child process, which inherits this: the runs send the
    # heartbeats the crash-detection automation expects (promotion/heartbeats.py).
    heartbeats.enable()
    logger = get_logger("promotion.serve")
    runner = Runner(pause_on_shutdown=True, limit=limit, query_seconds=POLL_SECONDS)
    params = {"config": str(config.resolve())}
    # add_flow, not add_deployment: the runner then holds the flow and runs it in a child process
    # directly (no `python -m prefect.engine` that reads the deployment and imports the entrypoint
    # again). The deployments registered are those runner_deployments() gives (same arguments).
    served = deployments(pipeline)
    for d in served:
        runner.add_flow(
            d.flow,
            name=d.name,
            description=d.description,
            parameters=params,
            schedules=d.schedules or None,
            concurrency_limit=d.concurrency_limit,
        )
    # After the registrations: a serve that cannot reach Prefect fails without starting anything.
    if not _fork_flow_runs():
        logger.warning("Prefect's flow engine is not the one expected: flow runs start by spawn (slower)")
    logger.info("serving %d deployments (checking for runs every %d s)", len(served), POLL_SECONDS)
    try:
        asyncio.run(runner.start())
    except (KeyboardInterrupt, TerminationSignal) as exc:
        logger.info("received %s, shutting down", type(exc).__name__)
