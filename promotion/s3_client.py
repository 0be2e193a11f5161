"""The S3 client the product talks to S3 with (botocore's), made from plain values.

Apart from :mod:`promotion.s3` so that it imports neither pydantic nor the pipeline's models:
``promote publish`` makes its client with it before those are imported
(:mod:`promotion.publish_ahead`). Everything else gets its client from
:func:`promotion.s3.make_client`, which calls :func:`new_client` with the validated store config.

botocore is imported inside the functions, not with this module: ~0.15 s, which a publish
spends on a thread while it hashes the file.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import botocore.session
    from mypy_boto3_s3 import S3Client

_LOADER: Any = None
_LOADER_LOCK = threading.Lock()


def endpoint_for(endpoint_url: object | None) -> str | None:
    """The endpoint as boto3 is given it: the configured URL without a trailing slash."""
    return str(endpoint_url).rstrip("/") if endpoint_url else None


def new_session(profile: str | None = None) -> botocore.session.Session:
    """A new botocore session (own credentials lookup, ``profile`` if named) sharing one data
    loader: every session otherwise re-reads and parses botocore's JSON service models (~0.5 s).

    botocore's, not boto3's: a boto3 session imports s3transfer and multiprocessing (~40 ms of
    every publish's CPU) for transfer helpers (``upload_file``) that nothing here uses.
    """
    global _LOADER
    import botocore.loaders
    import botocore.session

    with _LOADER_LOCK:
        if _LOADER is None:
            _LOADER = botocore.loaders.create_loader()
    core = botocore.session.Session(profile=profile)
    core.register_component("data_loader", _LOADER)
    return core


def new_client(
    *,
    endpoint: str | None,
    region: str,
    max_attempts: int,
    pool: int = 32,
    session: botocore.session.Session | None = None,
    credentials: Mapping[str, str] | None = None,
) -> S3Client:
    """An S3 client for ``endpoint`` (None: AWS S3 for ``region``), with botocore's standard
    retry mode; ``credentials`` (``aws_access_key_id``, ...) if given, else the session's chain."""
    from botocore.config import Config

    config = Config(
        region_name=region,
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        connect_timeout=5,
        read_timeout=60,
        max_pool_connections=pool,
        # We verify content ourselves against the digest; a second hash in botocore is waste.
        response_checksum_validation="when_required",
        # Bodies carry their own checksum header (SHA-256; CRC32 for a blob's parts), which the
        # signature covers; signing the payload too (botocore does it on plain-http endpoints)
        # would hash every byte again.
        s3={"addressing_style": "path", "payload_signing_enabled": False}
        if endpoint
        else {"payload_signing_enabled": False},
    )
    given = credentials or {}
    client = (session or new_session()).create_client(
        "s3",
        endpoint_url=endpoint,
        config=config,
        aws_access_key_id=given.get("aws_access_key_id"),
        aws_secret_access_key=given.get("aws_secret_access_key"),
        aws_session_token=given.get("aws_session_token"),
    )
    return cast("S3Client", client)
