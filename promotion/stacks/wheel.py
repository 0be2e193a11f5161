"""Python wheels: name and version from ``*.dist-info/METADATA``, checked against the file name.

Reads the zip's central directory and one member. A wheel whose file name and METADATA disagree
is refused: installers trust the name, the index trusts the metadata.
"""

from __future__ import annotations

from pathlib import Path

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from promotion.stacks import Probe, StackInfo, _members, refuse
from promotion.stacks._python import name_and_version, pep440_equal

STACK = "wheel"


def claims(probe: Probe) -> str | None:
    return STACK if probe.name.endswith(".whl") and probe.is_zip else None


def same_version(given: str, own: str) -> bool:
    return pep440_equal(given, own)


def read(path: Path, stack: str) -> StackInfo:
    try:
        file_name, file_version, _build, tags = parse_wheel_filename(path.name)
    except InvalidWheelFilename as exc:
        raise refuse(path, f"not a wheel file name ({exc})") from None
    with _members.open_zip(path) as zf:
        names = _members.zip_names(path, zf)
        metadata = [n for n in names if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
        if len(metadata) != 1:
            raise refuse(path, f"a wheel has one top-level *.dist-info/METADATA; found {len(metadata)}")
        member = metadata[0]
        data = _members.read_zip_member(path, zf, member)
    name, meta_version = name_and_version(
        path, member, data, file_name, file_version, "; refused (rebuild the wheel instead of renaming it)"
    )
    return StackInfo(
        stack=STACK,
        name=name,
        version=str(meta_version),
        where=f"{member} of {path.name}",
        details={"tags": ".".join(sorted(str(t) for t in tags))},
    )
