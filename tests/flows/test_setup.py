"""`promote setup`'s pieces: the crash automation and block types, and credentials from a block."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from promotion.config import load_pipeline
from promotion.errors import ConfigError
from promotion.local_s3 import ACCESS_KEY, SECRET_KEY, LocalS3
from promotion.store import ArtifactStore
from tests.conftest import PIPELINE_TEMPLATE


def test_crash_automation_is_created_once_and_repaired(prefect_api: str) -> None:
    """No concurrency limits any more (the store lock replaced them): setup makes one automation."""
    from prefect.client.orchestration import get_client

    from flows.setup import CRASH_AUTOMATION, WATCHED_FLOWS, crash_automation, ensure_crash_automation

    (first,) = ensure_crash_automation()
    with get_client(sync_client=True) as client:
        # Someone disabled it, and a second copy appeared (two setups racing): setup repairs both.
        broken = crash_automation().model_copy(update={"enabled": False})
        client.update_automation(first.id, broken)
        client.create_automation(crash_automation())
        assert len(client.read_automations_by_name(CRASH_AUTOMATION)) == 2
    (again,) = ensure_crash_automation()
    assert again.enabled
    trigger: Any = again.trigger
    assert trigger.match_related.get("prefect.resource.name") == WATCHED_FLOWS


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
        # the S3 client (and so the block lookup) is made on first use since 6af10ee
        ArtifactStore(load_pipeline(cfg)).s3.check_bucket()
