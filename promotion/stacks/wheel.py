"""Python wheels: name and version from ``*.dist-info/METADATA``, checked against the file name.

Reads the zip's central directory and one member. A wheel whose file name and METADATA disagree
is refused: installers trust the name, the index trusts the metadata.
"""

from __future__ import annotations

from pathlib import Path

from packaging.metadata import parse_email
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from promotion.stacks import Probe, StackInfo, _members, refuse

STACK = "wheel"


def claims(probe: Probe) -> str | None:
    return STACK if probe.name.endswith(".whl") and probe.is_zip else None


def same_version(given: str, own: str) -> bool:
    return pep440_equal(given, own)


def pep440_equal(given: str, own: str) -> bool:
    try:
        return Version(given) == Version(own)
    except InvalidVersion:
        return False


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
        raw, _unparsed = parse_email(_members.read_zip_member(path, zf, member))
    name, version = raw.get("name"), raw.get("version")
    if not name or not version:
        raise refuse(path, f"{member} has no Name or no Version")
    try:
        meta_version = Version(version)
    except InvalidVersion:
        raise refuse(path, f"{member}: Version {version!r} is not a PEP 440 version") from None
    if canonicalize_name(name) != file_name or meta_version != file_version:
        raise refuse(
            path,
            f"the file name says {file_name} {file_version} but {member} says {name} {version}; "
            "refused (rebuild the wheel instead of renaming it)",
        )
    return StackInfo(
        stack=STACK,
        name=name,
        version=str(meta_version),
        where=f"{member} of {path.name}",
        details={"tags": ".".join(sorted(str(t) for t in tags))},
    )
