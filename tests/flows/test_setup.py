"""`promote setup`'s pieces: concurrency limits and block types, and credentials from a block."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from pydantic import SecretStr

from promotion.config import load_pipeline
from promotion.errors import ConfigError
from promotion.local_s3 import ACCESS_KEY, SECRET_KEY, LocalS3
from promotion.store import ArtifactStore
from tests.conftest import PIPELINE_TEMPLATE


def test_limits_are_created_once_with_one_slot(prefect_api: str, config_file: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    from flows.setup import ensure_concurrency_limits

    pipeline = load_pipeline(config_file)
    names = ensure_concurrency_limits(pipeline)
    assert len(names) == len(pipeline.services) * len(pipeline.environments)
    with get_client(sync_client=True) as client:
        client.update_global_concurrency_limit(names[0], GlobalConcurrencyLimitUpdate(limit=5))
        assert ensure_concurrency_limits(pipeline) == names  # idempotent, and repairs drift
        assert all(client.read_global_concurrency_limit_by_name(n).limit == 1 for n in names)


def test_store_credentials_from_a_block(
    prefect_api: str, s3_server: LocalS3, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from blocks.credentials import S3StoreCredentials
    from flows.setup import register_blocks

    assert register_blocks() == ["promotion-s3-credentials"]
    name = f"store-{uuid.uuid4().hex[:8]}"
    S3StoreCredentials(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SecretStr(SECRET_KEY)).save(name)
    cfg = tmp_path / "p.yaml"
    cfg.write_text(
        PIPELINE_TEMPLATE.format(
            endpoint=s3_server.endpoint_url, bucket=s3_server.bucket, prefix=prefix
        ).replace("store:\n", f"store:\n  credentials_block: promotion-s3-credentials/{name}\n")
    )
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    store = ArtifactStore(load_pipeline(cfg))
    store.s3.check_bucket()  # works with nothing but the block
    assert store.ledger.state("api").environments == {}

    missing = cfg.read_text().replace(name, "nope")
    cfg.write_text(missing)
    with pytest.raises(ConfigError, match="no promotion-s3-credentials block named 'nope'"):
        ArtifactStore(load_pipeline(cfg))
