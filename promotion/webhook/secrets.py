"""Where each source's shared secret is read from (a Prefect Secret block or an environment
variable), cached briefly so a rotation is picked up.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import SecretStr

from promotion.config import WebhookSource
from promotion.errors import (
    ReceiverUnavailable,
)

if TYPE_CHECKING:
    pass


# Every part of the receiver logs under the one name operators filter on (and the package's own).
logger = logging.getLogger("promotion.webhook")

#: How long a secret read from a Prefect Secret block is reused before it is read again (rotation).
SECRET_TTL_S = 60.0


class SecretResolver(Protocol):
    """Returns a source's secret, or None when it has none available. Called in a worker thread.

    A resolver may also have ``peek(source)``, answering without blocking (or :data:`NOT_CACHED`);
    the receiver then skips the worker thread, which costs as much as the rest of a request.
    """

    def __call__(self, source: WebhookSource) -> SecretStr | None: ...


class _NotCached(enum.Enum):
    NOT_CACHED = "not cached"


NOT_CACHED = _NotCached.NOT_CACHED


class DefaultSecrets:
    """Secrets from ``secret_env`` (read on every call) or ``secret_block`` (cached ``ttl`` seconds).

    A missing variable or block means the source is not served; a Prefect API that cannot be
    reached raises :class:`ReceiverUnavailable`.
    """

    def __init__(self, ttl: float = SECRET_TTL_S) -> None:
        self.ttl = ttl
        self._cache: dict[str, tuple[float, SecretStr]] = {}
        self._lock = threading.Lock()

    def peek(self, source: WebhookSource) -> SecretStr | None | _NotCached:
        """The secret if it can be had without blocking: a variable, or a block read recently."""
        if source.secret_env is not None:
            value = os.environ.get(source.secret_env)
            if not value:
                logger.warning("webhook secret variable %s is not set: source not served", source.secret_env)
                return None
            return SecretStr(value)
        assert source.secret_block is not None
        with self._lock:
            hit = self._cache.get(source.secret_block)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        return NOT_CACHED

    def __call__(self, source: WebhookSource) -> SecretStr | None:
        known = self.peek(source)
        if known is not NOT_CACHED:
            return known
        assert source.secret_block is not None
        name = source.secret_block
        secret = self._load_block(name)
        if secret is not None:
            with self._lock:
                self._cache[name] = (time.monotonic() + self.ttl, secret)
        return secret

    @staticmethod
    def _load_block(name: str) -> SecretStr | None:
        from prefect.blocks.system import Secret

        try:
            # Called in a worker thread without an event loop: load() runs synchronously.
            block: Secret[Any] = Secret.load(name)  # type: ignore[assignment]
        except ValueError:
            # Prefect raises ValueError for a block name that does not exist.
            logger.warning("webhook secret block %r does not exist: source not served", name)
            return None
        except Exception as exc:
            logger.error("cannot read webhook secret block %r: %s", name, type(exc).__name__)
            raise ReceiverUnavailable(
                "the receiver cannot read its secret from Prefect right now; retry later"
            ) from None
        value = block.get()
        if not isinstance(value, str) or not value:
            logger.warning("webhook secret block %r holds no non-empty string: source not served", name)
            return None
        return SecretStr(value)
