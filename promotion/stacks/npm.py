"""npm packages (``npm pack`` output): name and version from ``package/package.json``.

npm pack writes every file under ``package/`` in name order, so package.json may follow a large
``dist/``: the stream is bounded by :data:`promotion.stacks._members.MAX_SCAN_BYTES`.
"""

from __future__ import annotations

import json
from pathlib import Path

from promotion.stacks import Probe, StackInfo, _members, refuse

STACK = "npm"
MEMBER = "package/package.json"


def claims(probe: Probe) -> str | None:
    first = probe.first_member() if probe.is_gzip else None
    return STACK if first is not None and first.startswith("package/") else None


def _under_package(path: Path, first: str) -> None:
    if not first.startswith("package/"):
        raise refuse(path, f"not an npm package: its first member {first!r} is not under package/")


def read(path: Path, stack: str) -> StackInfo:
    member, data = _members.scan_tar(
        path, lambda n: n == MEMBER, gzipped=True, what=MEMBER, first=lambda n: _under_package(path, n)
    )
    try:
        manifest = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise refuse(path, f"{member} is not JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise refuse(path, f"{member} is not a JSON object")
    name, version = manifest.get("name"), manifest.get("version")
    if not isinstance(name, str) or not name or not isinstance(version, str) or not version:
        raise refuse(path, f'{member} has no "name" or no "version" string')
    return StackInfo(stack=STACK, name=name, version=version, where=f"{member} of {path.name}")
