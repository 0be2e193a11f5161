"""Python source distributions (``name-version.tar.gz``): name and version from ``PKG-INFO``.

setuptools (and every PEP 517 backend) writes ``<name>-<version>/PKG-INFO`` right after the
top folder, so the stream stops within the first few KiB.
"""

from __future__ import annotations

from pathlib import Path

from packaging.metadata import parse_email
from packaging.utils import InvalidSdistFilename, canonicalize_name, parse_sdist_filename
from packaging.version import InvalidVersion, Version

from promotion.stacks import Probe, StackInfo, _members, refuse
from promotion.stacks.wheel import pep440_equal

STACK = "sdist"


#: How many leading members are looked at for PKG-INFO when recognising an sdist.
CLAIM_MEMBERS = 16


def claims(probe: Probe) -> str | None:
    """An sdist by its name and a PKG-INFO among its first members.

    A release tarball such as ``git archive --prefix=app-1.0/`` output, named ``app-1.0.tar.gz``,
    has the same shape without PKG-INFO: it stays a generic tar rather than being refused.
    setuptools writes PKG-INFO second; a backend that writes it last (hatchling) is recognised
    with ``--stack sdist``, which reads as far as the scan bound.
    """
    if not (probe.name.endswith(".tar.gz") and probe.is_gzip):
        return None
    try:
        parse_sdist_filename(probe.name)
    except InvalidSdistFilename:
        return None
    top = probe.name.removesuffix(".tar.gz")
    names = _members.first_tar_members(probe.path, gzipped=True, count=CLAIM_MEMBERS)
    return STACK if f"{top}/PKG-INFO" in names else None


def same_version(given: str, own: str) -> bool:
    return pep440_equal(given, own)


def read(path: Path, stack: str) -> StackInfo:
    try:
        file_name, file_version = parse_sdist_filename(path.name)
    except InvalidSdistFilename as exc:
        raise refuse(path, f"not an sdist file name ({exc})") from None
    top = path.name.removesuffix(".tar.gz")
    member, data = _members.scan_tar(
        path, lambda n: n == f"{top}/PKG-INFO", gzipped=True, what=f"{top}/PKG-INFO"
    )
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
            path, f"the file name says {file_name} {file_version} but {member} says {name} {version}"
        )
    return StackInfo(stack=STACK, name=name, version=str(meta_version), where=f"{member} of {path.name}")
