"""Gate tasks: thin ``@task`` wrappers over :func:`promotion.evaluate.evaluate`."""

from __future__ import annotations

import datetime as dt

from prefect import task
from prefect.cache_policies import NO_CACHE

from promotion.config import Gate
from promotion.evaluate import MAX_EVIDENCE_BYTES, GateContext, evaluate
from promotion.gates import GateResult
from promotion.models import ArtifactRecord, EnvState
from promotion.store import ArtifactStore


def _gate_run_name() -> str:
    from prefect.runtime import task_run

    gate = task_run.parameters.get("gate")
    return f"gate {getattr(gate, 'name', None) or getattr(gate, 'kind', '?')}"


@task(name="evaluate-gate", task_run_name=_gate_run_name, cache_policy=NO_CACHE, retries=0)
def evaluate_gate(
    gate: Gate,
    store: ArtifactStore,
    artifact: ArtifactRecord,
    environment: str,
    previous_env: str | None,
    previous: EnvState | None,
    now: dt.datetime,
) -> GateResult:
    """Evaluate one gate; evidence is read from S3 by digest and re-checked against it."""
    ctx = GateContext(
        service=artifact.service,
        digest=artifact.digest,
        environment=store.pipeline.environment(environment),
        artifact=artifact,
        previous_env=previous_env,
        previous=previous,
        now=now,
        load_evidence=lambda ref: store.fetch_bytes(ref.digest, max_size=MAX_EVIDENCE_BYTES),
    )
    return evaluate(gate, ctx)
