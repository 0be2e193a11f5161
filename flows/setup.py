"""What a new installation needs on the Prefect server. Idempotent: safe to run again."""

from __future__ import annotations

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
from prefect.exceptions import ObjectNotFound

from flows.pipeline import limit_name
from promotion.config import Pipeline


def register_blocks() -> list[str]:
    """Register the project's block types, as ``prefect block register -m blocks`` would."""
    from blocks.credentials import S3StoreCredentials

    S3StoreCredentials.register_type_and_schema()
    return [S3StoreCredentials.get_block_type_slug()]


def ensure_concurrency_limits(pipeline: Pipeline) -> list[str]:
    """One global concurrency limit of 1 slot per (service, environment); returns their names.

    The stage subflow acquires its limit with ``strict=True``, so a missing limit is an error,
    never a silent skip (Prefect skips unknown limits unless strict).
    """
    names = [limit_name(s.name, e.name) for s in pipeline.services for e in pipeline.environments]
    with get_client(sync_client=True) as client:
        for name in names:
            try:
                existing = client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
                continue
            if existing.limit != 1 or not existing.active:
                client.update_global_concurrency_limit(
                    name, GlobalConcurrencyLimitUpdate(limit=1, active=True)
                )
    return names
