"""The generic fallback: a plain zip or tar (gzip'd or not) that no specific adapter claims.

Recorded as ``zip`` or ``tar`` with no name or version. No member is read, so nothing here can
be fooled by one; a gzip'd tar is not walked (that would decompress all of it).
"""

from __future__ import annotations

from pathlib import Path

from promotion.stacks import Probe, StackInfo, _members, refuse

STACKS = ("zip", "tar")


def claims(probe: Probe) -> str | None:
    if probe.is_zip:
        return "zip"
    if probe.is_tar or (probe.is_gzip and probe.first_member() is not None):
        return "tar"
    return None


def read(path: Path, stack: str) -> StackInfo:
    with path.open("rb") as f:
        probe = Probe(path, f.read(512))
    if stack == "zip":
        with _members.open_zip(path) as zf:
            count = len(zf.infolist())
        return StackInfo(stack="zip", details={"members": str(count)})
    if probe.is_tar:
        return StackInfo(stack="tar", details={"compression": "none"})
    if probe.is_gzip and probe.first_member() is not None:
        return StackInfo(stack="tar", details={"compression": "gzip"})
    raise refuse(path, "not a tar archive (neither a ustar header nor a gzip'd tar)")
