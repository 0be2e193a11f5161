"""Python source distributions (``name-version.tar.gz``): name and version from ``PKG-INFO``.

setuptools (and every PEP 517 backend) writes ``<name>-<version>/PKG-INFO`` right after the
top folder, so the stream stops within the first few KiB.
"""

from __future__ import annotations

from pathlib import Path

from packaging.utils import InvalidSdistFilename, parse_sdist_filename

from promotion.stacks import Probe, StackInfo, _members, refuse
from promotion.stacks._python import name_and_version, pep440_equal

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
    name, meta_version = name_and_version(path, member, data, file_name, file_version)
    return StackInfo(stack=STACK, name=name, version=str(meta_version), where=f"{member} of {path.name}")
