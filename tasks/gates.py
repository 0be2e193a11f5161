"""Gate tasks: the task layer over :func:`promotion.evaluate.evaluate_stage`, one task run per gate."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun

from promotion.config import Environment, Gate
from promotion.errors import is_transient
from promotion.evaluate import GateContext, StageGates, evaluate, evaluate_stage, gate_context
from promotion.gates import GateResult
from promotion.models import ArtifactRecord, EnvState
from promotion.store import ArtifactStore


def _gate_run_name() -> str:
    from prefect.runtime import task_run

    gate = task_run.parameters.get("gate")
    return f"gate {getattr(gate, 'name', None) or getattr(gate, 'kind', '?')}"


#: Delays between tries of a task that met a transient infrastructure error. Each try already
#: includes botocore's own retries (PROMOTION_S3_MAX_ATTEMPTS per request), so these are short:
#: they ride out a blip of a few seconds, and a longer outage ends the run as errored instead.
INFRA_RETRY_DELAYS_S = [1.0, 3.0]


def retry_on_infrastructure(task: Any, task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect ``retry_condition_fn``: retry transient infrastructure errors, nothing else.

    A failed gate is a verdict (retrying it would only repeat it), and a configuration problem
    (access denied, missing bucket) needs a person.
    """
    return isinstance(state.data, BaseException) and is_transient(state.data)


@task(
    name="evaluate-gate",
    task_run_name=_gate_run_name,
    cache_policy=NO_CACHE,
    retries=len(INFRA_RETRY_DELAYS_S),
    retry_delay_seconds=INFRA_RETRY_DELAYS_S,
    retry_condition_fn=retry_on_infrastructure,
)
def evaluate_gate(
    gate: Gate,
    store: ArtifactStore,
    artifact: ArtifactRecord,
    environment: str,
    previous_env: str | None,
    previous: EnvState | None,
    now: dt.datetime,
    previous_until: dt.datetime | None = None,
) -> GateResult:
    """Evaluate one gate; evidence is read from S3 by digest and re-checked against it.

    Raises :class:`~promotion.errors.InfrastructureError` when S3 keeps failing (after the
    task's retries): the stage then ends errored, never with a failed gate.
    """
    env = store.pipeline.environment(environment)
    ctx = gate_context(store, env, artifact, previous_env, previous, now, previous_until)
    return evaluate(gate, ctx)


def evaluate_stage_gates(
    store: ArtifactStore,
    artifact: ArtifactRecord,
    env: Environment,
    previous_env: str | None,
    previous: EnvState | None,
    now: dt.datetime,
    previous_until: dt.datetime | None = None,
) -> StageGates:
    """:func:`~promotion.evaluate.evaluate_stage` with each gate in its own (concurrent) task run.

    A gate per task keeps each verdict, and each retry of an S3 hiccup, visible on its own in
    the Prefect UI; the task rebuilds the same context from plain parameters.
    """

    def in_tasks(gates: Sequence[Gate], ctx: GateContext) -> list[GateResult]:
        futures = [
            evaluate_gate.submit(
                gate,
                store,
                ctx.artifact,
                ctx.environment.name,
                ctx.previous_env,
                ctx.previous,
                ctx.now,
                ctx.previous_until,
            )
            for gate in gates
        ]
        return [f.result() for f in futures]

    return evaluate_stage(
        store,
        env,
        artifact,
        previous,
        now,
        previous_env=previous_env,
        previous_until=previous_until,
        run_gates=in_tasks,
    )
