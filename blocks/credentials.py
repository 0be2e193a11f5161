"""Credentials for the artifact store as a Prefect block.

Name it in the pipeline file (``store.credentials_block: promotion-s3-credentials/NAME``) to keep
keys out of the environment of every worker. A bare name means prefect-aws's ``aws-credentials``
block type, which this reads without needing prefect-aws installed.
"""

from __future__ import annotations

from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr


class S3StoreCredentials(Block):
    """Access key for the S3-compatible store that holds artifacts and the ledger."""

    _block_type_name: ClassVar[str] = "Promotion S3 Credentials"
    _block_type_slug: ClassVar[str] = "promotion-s3-credentials"
    _description: ClassVar[str] = (
        "Access key for the prefect-promotion artifact store (any S3-compatible server)."
    )

    aws_access_key_id: str = Field(description="Access key id.")
    aws_secret_access_key: SecretStr = Field(description="Secret access key.")
    aws_session_token: SecretStr | None = Field(
        default=None, description="Session token, for temporary credentials."
    )
    region_name: str | None = Field(
        default=None, description="Region; the pipeline file's store.region otherwise."
    )
