"""Every ``PROMOTION_*`` environment variable the product reads, in one validated object.

:func:`settings` parses the variables once into a frozen :class:`PromotionSettings`. The parse is
cached on the raw values of the variables: a process whose environment does not change parses
them once, and a test (or a long-lived worker) that changes one gets the new value on the next call
instead of a stale one. A bad value is a one-line :class:`~promotion.errors.ConfigError` naming
the variable (exit 2), never a ``ValueError`` traceback from deep inside an S3 call.

This module must not import Prefect: the S3-only commands read their settings through it.

Not here, on purpose: ``PROMOTION_SERVICE``, ``PROMOTION_DIGEST`` and ``PROMOTION_TO`` are
defaults of CLI options (typer's ``envvar=``), and ``PROMOTION_HOME`` is read by Prefect's own
templating in the deployments (``{{ $PROMOTION_HOME }}``), not by Python code of ours. The README
table lists them all.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from promotion.errors import ConfigError

ENV_PREFIX = "PROMOTION_"


class PromotionSettings(BaseSettings):
    """The runtime settings; each field is read from ``PROMOTION_<FIELD NAME IN CAPITALS>``."""

    # No .env file and no secrets directory: the environment is the only source, as before.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="forbid", env_file=None, secrets_dir=None
    )

    actor: str | None = Field(default=None, description="who acts, when --as is not given")
    config: str | None = Field(default=None, description="the pipeline file, when --config is not given")
    s3_endpoint_url: str | None = Field(default=None, description="overrides store.endpoint_url")
    s3_bucket: str | None = Field(default=None, description="overrides store.bucket")
    s3_prefix: str | None = Field(default=None, description="overrides store.prefix")
    s3_region: str | None = Field(default=None, description="overrides store.region")
    s3_max_attempts: int = Field(default=5, ge=1, description="tries per S3 request (botocore's retries)")
    # Any whole number is accepted, as before; the caller raises values below 1 to 1.
    approval_poll_seconds: int = Field(default=1, description="seconds between checks of a paused run")
    webhook_max_in_flight: int = Field(
        default=2, ge=1, description="flow-run creations in flight per webhook receiver process"
    )

    def store_overrides(self) -> dict[str, str]:
        """The pipeline's ``store`` fields overridden by ``PROMOTION_S3_*`` (set, even if empty)."""
        values = {
            "endpoint_url": self.s3_endpoint_url,
            "bucket": self.s3_bucket,
            "prefix": self.s3_prefix,
            "region": self.s3_region,
        }
        return {field: value for field, value in values.items() if value is not None}


def env_name(field: str) -> str:
    """The environment variable of a settings field: ``s3_bucket`` -> ``PROMOTION_S3_BUCKET``."""
    return ENV_PREFIX + field.upper()


#: Every variable :class:`PromotionSettings` reads.
VARIABLES: tuple[str, ...] = tuple(env_name(f) for f in PromotionSettings.model_fields)


def settings() -> PromotionSettings:
    """The settings from the current environment (parsed once per distinct set of values)."""
    return _parse(tuple(os.environ.get(v) for v in VARIABLES))


@functools.lru_cache(maxsize=16)
def _parse(raw: tuple[str | None, ...]) -> PromotionSettings:
    # ``raw`` is only the cache key: pydantic-settings reads os.environ itself, which holds
    # exactly these values now (the caller took them a moment ago, in the same thread).
    del raw
    try:
        return PromotionSettings()
    except ValidationError as exc:
        problems = [_describe(e) for e in exc.errors()]
        if len(problems) == 1:
            var, _, msg = problems[0].partition(": ")
            raise ConfigError(var, [msg]) from None
        # Several bad variables still make one line: the CLI prints errors one line each.
        raise ConfigError("environment", ["; ".join(problems)]) from None


def _describe(err: Any) -> str:
    field = str(err["loc"][0]) if err["loc"] else "?"
    msg = str(err["msg"])
    if err["type"] in ("int_parsing", "int_from_float", "greater_than_equal"):
        info = PromotionSettings.model_fields.get(field)
        low = next((m.ge for m in info.metadata if hasattr(m, "ge")), None) if info else None
        msg = "must be a whole number" + (f" of at least {low}" if low is not None else "")
    return f"{env_name(field)}: {msg} (got {err.get('input')!r})"
