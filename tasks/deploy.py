"""Deploy and post-deploy verification tasks. Environment secrets are read here and only here."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import SecretStr

from promotion.deploy import DeployPayload, call_deploy_webhook, copy_to_target, presign_blob
from promotion.digest import Digest
from promotion.evaluate import check_live, live_gates
from promotion.gates import GateResult
from promotion.store import ArtifactStore
from tasks.gates import INFRA_RETRY_DELAYS_S, retry_on_infrastructure


def _load_secret(block_name: str | None) -> SecretStr | None:
    if not block_name:
        return None
    from prefect.blocks.system import Secret

    from promotion.errors import SetupRequired

    try:
        block: Any = Secret.load(block_name)  # sync in a sync context (async_dispatch)
    except ValueError:
        raise SetupRequired(
            f"no Secret block named {block_name!r}: create it (prefect block create secret, or "
            "Secret(value=...).save(name)) or remove webhook.secret_block from the pipeline file"
        ) from None
    value: Any = block.get()
    return SecretStr(value if isinstance(value, str) else str(value))


def _deploy_run_name() -> str:
    from prefect.runtime import task_run

    params = task_run.parameters
    return f"deploy {str(params.get('digest', ''))[:19]}… → {params.get('environment')}"


# Retried on transient infrastructure errors only: the copy is idempotent (same bytes, same key)
# and the webhook carries the same idempotency key on every try.
@task(
    name="deploy",
    task_run_name=_deploy_run_name,
    cache_policy=NO_CACHE,
    retries=len(INFRA_RETRY_DELAYS_S),
    retry_delay_seconds=INFRA_RETRY_DELAYS_S,
    retry_condition_fn=retry_on_infrastructure,
)
def deploy(
    store: ArtifactStore,
    environment: str,
    service: str,
    digest: Digest,
    version: str | None,
    requested_by: str | None,
    idempotency_key: str,
) -> dict[str, Any]:
    """Move the environment's deployment target to ``digest``; returns what was done (no secrets)."""
    env = store.pipeline.environment(environment)
    done: dict[str, Any] = {}
    if env.target.copy_to is not None:
        # full_verify: some S3 servers (SeaweedFS) keep the source's checksum on a copy instead of
        # computing one, so only a re-hash of the copied bytes proves them.
        copied = copy_to_target(
            store, env.target.copy_to, service, digest, version, environment=environment, full_verify=True
        )
        done["copy"] = {"bucket": copied.bucket, "key": copied.key, "verified_by": copied.verification}
    if env.target.webhook is not None:
        secret = _load_secret(env.target.webhook.secret_block)
        record = store.record(service, digest)
        payload = DeployPayload(
            service=service,
            environment=environment,
            digest=digest,
            version=version,
            size=record.size,
            presigned_url=presign_blob(store, digest),
            requested_by=requested_by or "promotion",
            idempotency_key=idempotency_key,
        )
        answered = call_deploy_webhook(env.target.webhook, secret, payload)
        done["webhook"] = {"status": answered.status}
    return done


@task(name="verify-live", cache_policy=NO_CACHE)
def verify_live(store: ArtifactStore, environment: str) -> list[GateResult]:
    """Run the environment's live checks (http, prometheus) against what was just deployed."""
    return [check_live(gate) for gate in live_gates(store.pipeline.environment(environment))]
