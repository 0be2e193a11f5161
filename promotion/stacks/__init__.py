"""Stack adapters: what an artifact says about itself (issue 10 item 1).

``promote publish`` asks :func:`detect` before uploading: each adapter, in :data:`ADAPTERS`
order, looks at a :class:`Probe` (the file name, its first bytes, the first member of a tar) and
claims the file or not; the first that claims it reads the few members it needs and returns a
:class:`StackInfo`. ``--stack NAME`` skips the claiming and makes that adapter read the file, so
a file that is not of that stack is refused. A file nobody claims is a ``blob``, as before.

An adapter is one module with ``STACK`` (or ``STACKS``, its names), ``claims(probe) -> str |
None`` (the stack it recognises the file as, or None), ``read(path, stack) -> StackInfo`` (raising
:class:`promotion.errors.ArtifactMetadataError` with the reason) and optionally
``same_version(given, own) -> bool``; adding one is that module plus its place in
:data:`ADAPTERS`. No adapter reads the whole file (see :mod:`promotion.stacks._members`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from pydantic import BaseModel, ConfigDict, Field

from promotion.errors import ArtifactMetadataError, UnknownStack, VersionMismatch
from promotion.stacks import _members

#: ``stack`` of a file no adapter recognises: recorded as before, nothing refused.
BLOB = "blob"


class StackInfo(BaseModel):
    """What the artifact itself says it is. ``where`` names the member the version came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stack: str
    name: str | None = None
    version: str | None = None
    where: str = ""
    #: Stack-specific facts worth recording, e.g. ``image_manifest_digest`` of an OCI layout.
    details: dict[str, str] = Field(default_factory=dict)


@dataclass
class Probe:
    """Cheap facts about a file that adapters claim it by: nothing here reads more than a few KiB."""

    path: Path
    head: bytes
    _first_member: dict[bool, str | None] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def is_zip(self) -> bool:
        # The magic only: a truncated zip (no central directory) is still claimed, then refused
        # with the reason by the adapter that claimed it, instead of passing as a blob.
        return self.head[:4] in (b"PK\x03\x04", b"PK\x05\x06")

    @property
    def is_gzip(self) -> bool:
        return self.head[:2] == b"\x1f\x8b"

    @property
    def is_tar(self) -> bool:
        return len(self.head) >= 262 and self.head[257:262] == b"ustar"

    def first_member(self) -> str | None:
        """The first member of a tar or gzip'd tar (None when it is neither)."""
        gz = self.is_gzip
        if gz not in self._first_member:
            self._first_member[gz] = (
                _members.first_tar_member(self.path, gzipped=gz) if gz or self.is_tar else None
            )
        return self._first_member[gz]


def _adapters() -> tuple[ModuleType, ...]:
    # Imported here so that each adapter module may import this package's StackInfo.
    from promotion.stacks import archive, helm, jar, npm, oci, sdist, wheel

    # The order is the claiming order: specific before generic (a wheel and a JAR are zips, an
    # npm package, a chart and an sdist are gzip'd tars), the generic tar/zip fallback last.
    return (wheel, jar, npm, helm, sdist, oci, archive)


def _names_of(adapter: ModuleType) -> tuple[str, ...]:
    names: tuple[str, ...] = getattr(adapter, "STACKS", (getattr(adapter, "STACK", ""),))
    return names


def stack_names() -> list[str]:
    return [*(name for adapter in _adapters() for name in _names_of(adapter)), BLOB]


def detect(path: Path, stack: str | None = None) -> StackInfo:
    """The artifact's own stack, name and version; ``stack`` forces one adapter."""
    with path.open("rb") as f:
        head = f.read(512)
    probe = Probe(path, head)
    if stack is not None:
        if stack == BLOB:
            return StackInfo(stack=BLOB)
        for adapter in _adapters():
            if stack in _names_of(adapter):
                info: StackInfo = adapter.read(path, stack)
                return info
        raise UnknownStack(str(path), f"--stack {stack} is not a stack; stacks: {', '.join(stack_names())}")
    for adapter in _adapters():
        claimed = adapter.claims(probe)
        if claimed is not None:
            found: StackInfo = adapter.read(path, claimed)
            return found
    return StackInfo(stack=BLOB)


def resolve_version(path: Path, info: StackInfo, given: str | None) -> str | None:
    """The version to record: the given one if it agrees with the artifact's own, else refused.

    Agreement is the stack's own equality (PEP 440 for Python: ``1.0`` is ``1.0.0``); the given
    spelling is kept, so a re-publish of a record made before adapters keeps its identity.
    """
    if info.version is None or given is None:
        return given if given is not None else info.version
    adapter = next(
        (a for a in _adapters() if info.stack in getattr(a, "STACKS", (getattr(a, "STACK", None),))), None
    )
    same = getattr(adapter, "same_version", None) if adapter is not None else None
    agrees = bool(same(given, info.version)) if same is not None else _same_semver(given, info.version)
    if not agrees:
        raise VersionMismatch(str(path), given, info.version, info.where or info.stack)
    return given


def _same_semver(given: str, own: str) -> bool:
    """npm, Helm, OCI and Maven versions: equal as written, a leading ``v`` aside (npm drops it too)."""
    return given.strip().removeprefix("v") == own.strip().removeprefix("v")


def refuse(path: Path, reason: str) -> ArtifactMetadataError:
    return ArtifactMetadataError(str(path), reason)
