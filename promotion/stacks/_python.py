"""Python core metadata (wheel ``METADATA``, sdist ``PKG-INFO``): the checks both stacks share.

Both files use the same email-header format (core metadata, PEP 566/643), and for both the file
name must agree with what the metadata says: installers trust the name, the index trusts the
metadata.
"""

from __future__ import annotations

from pathlib import Path

from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import InvalidVersion, Version

from promotion.stacks import refuse


def pep440_equal(given: str, own: str) -> bool:
    try:
        return Version(given) == Version(own)
    except InvalidVersion:
        return False


def name_and_version(
    path: Path,
    member: str,
    data: bytes,
    file_name: NormalizedName,
    file_version: Version,
    mismatch_advice: str = "",
) -> tuple[str, Version]:
    """Name (as the metadata spells it) and PEP 440 version from core metadata ``data``.

    Refused when Name or Version is missing, the Version is not PEP 440, or either disagrees
    with the file name (``mismatch_advice`` is appended to that refusal).
    """
    # Imported here: packaging.metadata (with its requirement parser) costs ~50 ms, which every
    # publish of a non-Python artifact would pay at start-up, since every adapter is imported.
    from packaging.metadata import parse_email

    raw, _unparsed = parse_email(data)
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
            f"the file name says {file_name} {file_version} but {member} says {name} {version}"
            + mismatch_advice,
        )
    return name, meta_version
