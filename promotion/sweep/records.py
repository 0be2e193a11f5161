"""Artifact records read at most once per service per sweep.

The re-check, the decisions and retention's references all read them: one cache, shared.
"""

from __future__ import annotations

from promotion.digest import Digest
from promotion.models import ArtifactRecord
from promotion.store import ArtifactStore


class ArtifactRecords:
    """Artifact records read at most once per service per sweep."""

    def __init__(self, store: ArtifactStore, service: str) -> None:
        self.store = store
        self.service = service
        self._cache: dict[str, ArtifactRecord | None] = {}

    def get(self, digest: Digest) -> ArtifactRecord | None:
        key = str(digest)
        if key not in self._cache:
            self._cache[key] = self.store.find_record(self.service, digest)
        return self._cache[key]
