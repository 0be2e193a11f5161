"""Shared fixtures: one real SeaweedFS S3 server per test session, a fresh prefix per test."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from promotion.config import Pipeline, parse_pipeline
from promotion.local_s3 import LocalS3
from promotion.s3 import S3
from promotion.store import ArtifactStore
from tests.flows import harness
from tests.local_servers import aws_credentials, prefect_test_server

REPO = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[LocalS3]:
    # boto3 and the CLI subprocesses read credentials from the standard environment.
    with LocalS3(bucket="promotion-test") as server, aws_credentials(server):
        yield server


PIPELINE_TEMPLATE = """
store:
  endpoint_url: {endpoint}
  bucket: {bucket}
  prefix: {prefix}
services:
  - name: api
  - name: web
environments:
  - name: dev
  - name: staging
  - name: prod
"""


def make_pipeline(endpoint: str, bucket: str, prefix: str) -> Pipeline:
    return parse_pipeline(PIPELINE_TEMPLATE.format(endpoint=endpoint, bucket=bucket, prefix=prefix))


@pytest.fixture
def prefix() -> str:
    """A fresh key prefix: every test gets an empty store on the shared server."""
    return f"t-{uuid.uuid4().hex[:12]}/"


@pytest.fixture
def pipeline(s3_server: LocalS3, prefix: str) -> Pipeline:
    return make_pipeline(s3_server.endpoint_url, s3_server.bucket, prefix)


@pytest.fixture
def store(pipeline: Pipeline) -> ArtifactStore:
    return ArtifactStore(pipeline)


@pytest.fixture
def s3(store: ArtifactStore) -> S3:
    return store.s3


@pytest.fixture
def config_file(tmp_path: Path, s3_server: LocalS3, prefix: str) -> Path:
    path = tmp_path / "promotion.yaml"
    path.write_text(
        PIPELINE_TEMPLATE.format(endpoint=s3_server.endpoint_url, bucket=s3_server.bucket, prefix=prefix)
    )
    return path


@pytest.fixture
def shared_fixtures() -> Path:
    if not SHARED_FIXTURES.is_dir():
        pytest.skip("../shared/fixtures not present on this machine")
    return SHARED_FIXTURES


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """One Prefect server (SQLite) for the whole session; yields its API URL."""
    with prefect_test_server() as url:
        yield url


@pytest.fixture
def make_setup(
    prefect_api: str, s3_server: LocalS3, prefix: str, tmp_path: Path
) -> Callable[..., harness.Setup]:
    """Build a 3-stage pipeline (dev, staging, prod with approval) on the session's servers."""

    def make(min_approvals: int = 1, timeout: str = "120s") -> harness.Setup:
        cfg = tmp_path / "promotion.yaml"
        cfg.write_text(
            harness.PIPELINE.format(
                endpoint=s3_server.endpoint_url,
                bucket=s3_server.bucket,
                prefix=prefix,
                min_approvals=min_approvals,
                timeout=timeout,
            )
        )
        return harness.Setup(cfg)

    return make
