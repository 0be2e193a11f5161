"""Bounded reads of one member of an archive, shared by the adapters.

Nothing is ever extracted: member names are only compared with the name an adapter wants, never
joined to a path. Still, a name that would escape an extraction directory (``../``, absolute) or
a link where a file is expected says the archive was not written by the tool it claims to come
from, so such members are refused with the reason rather than skipped.

Every read is bounded twice: the size a member *declares* (refused before reading when above the
cap, so a member declaring 10 GB costs nothing) and the bytes actually produced (a lying header
or a decompression bomb stops at the cap). A gzip'd tar has no index: it is streamed from the
start, and the scan stops after :data:`MAX_SCAN_BYTES` decompressed or :data:`MAX_SCAN_MEMBERS`
members with a "not found within" reason.
"""

from __future__ import annotations

import gzip
import io
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Protocol

from promotion.errors import ArtifactMetadataError

KiB = 1024
MiB = 1024 * KiB
#: A metadata member (METADATA, package.json, Chart.yaml, pom.properties, index.json) larger than
#: this is not metadata.
MAX_MEMBER_BYTES = 1 * MiB
#: How far a gzip'd tar is decompressed looking for its metadata member. npm pack writes members
#: in name order (package.json comes after a dist/ folder), setuptools and helm write PKG-INFO and
#: Chart.yaml first: the bound is for npm's case; decompressing it costs well under a second.
MAX_SCAN_BYTES = 256 * MiB
#: How many members a scan looks at before giving up.
MAX_SCAN_MEMBERS = 100_000

_DRIVE = re.compile(r"^[A-Za-z]:")


def unsafe_name_reason(name: str) -> str | None:
    """Why a member name could escape an extraction directory, or None when it cannot."""
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return "is an absolute path"
    if ".." in re.split(r"[/\\]", name):
        return "climbs out of the archive with '..'"
    return None


def check_name(path: Path, name: str) -> None:
    why = unsafe_name_reason(name)
    if why is not None:
        raise ArtifactMetadataError(str(path), f"member {name!r} {why}; refused (a hostile archive?)")


def _too_big(path: Path, name: str, declared: int, cap: int) -> ArtifactMetadataError:
    return ArtifactMetadataError(
        str(path), f"member {name!r} declares {declared} bytes, more than the {cap} read as metadata"
    )


# --- zip ---------------------------------------------------------------------------------------


def open_zip(path: Path) -> zipfile.ZipFile:
    """The zip's central directory (zipfile reads only that), or a clear refusal."""
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise ArtifactMetadataError(str(path), f"not a readable zip archive ({exc})") from None


def zip_names(path: Path, zf: zipfile.ZipFile) -> list[str]:
    """Every member name, each checked: the central directory is already in memory."""
    names = zf.namelist()
    for name in names:
        check_name(path, name)
    return names


def read_zip_member(path: Path, zf: zipfile.ZipFile, name: str, cap: int = MAX_MEMBER_BYTES) -> bytes:
    info = zf.getinfo(name)
    check_name(path, name)
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ArtifactMetadataError(str(path), f"member {name!r} is a symbolic link, not a file; refused")
    if info.file_size > cap:
        raise _too_big(path, name, info.file_size, cap)
    try:
        with zf.open(info) as member:
            # zipfile stops at the declared size and checks the CRC there: a lying header fails
            # the CRC instead of inflating past it. cap + 1 bounds it even so.
            data = member.read(cap + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
        raise ArtifactMetadataError(str(path), f"member {name!r} is unreadable ({exc})") from None
    if len(data) > cap:
        raise _too_big(path, name, len(data), cap)
    return data


# --- tar ---------------------------------------------------------------------------------------


class _ScanCapReached(Exception):
    pass


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


class _CappedReader(io.RawIOBase):
    """Decompressed bytes of a gzip stream, failing once more than ``cap`` were produced."""

    def __init__(self, source: _Readable, cap: int) -> None:
        self._source = source
        self._left = cap

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        want = self._left + 1 if size < 0 else min(size, self._left + 1)
        data = self._source.read(want)
        self._left -= len(data)
        if self._left < 0:
            raise _ScanCapReached
        return data

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def _member_bytes(path: Path, tar: tarfile.TarFile, member: tarfile.TarInfo, cap: int) -> bytes:
    if member.issym() or member.islnk():
        raise ArtifactMetadataError(
            str(path), f"member {member.name!r} is a link (to {member.linkname!r}), not a file; refused"
        )
    if not member.isfile():
        raise ArtifactMetadataError(str(path), f"member {member.name!r} is not a regular file")
    if member.size > cap:
        raise _too_big(path, member.name, member.size, cap)
    handle = tar.extractfile(member)
    if handle is None:
        raise ArtifactMetadataError(str(path), f"member {member.name!r} has no data")
    data = handle.read(cap + 1)
    if len(data) != member.size:
        raise ArtifactMetadataError(
            str(path), f"member {member.name!r} holds {len(data)} bytes, its header says {member.size}"
        )
    return data


def scan_tar(
    path: Path,
    wanted: Callable[[str], bool],
    *,
    gzipped: bool,
    what: str,
    cap: int = MAX_MEMBER_BYTES,
    first: Callable[[str], None] | None = None,
) -> tuple[str, bytes]:
    """The name and bytes of the first member ``wanted`` accepts, reading as little as possible.

    An uncompressed tar is walked header to header (tarfile seeks past the data); a gzip'd one
    is streamed within :data:`MAX_SCAN_BYTES`. ``first`` sees the first member's name (e.g. to
    check every member lives under one folder). ``what`` names the member in "not found".
    """
    try:
        with path.open("rb") as raw:
            stream: IO[bytes] = raw
            if gzipped:
                stream = io.BufferedReader(
                    _CappedReader(gzip.GzipFile(fileobj=raw, mode="rb"), MAX_SCAN_BYTES), 64 * KiB
                )
            with tarfile.open(fileobj=stream, mode="r|" if gzipped else "r:") as tar:
                for count, member in enumerate(tar):
                    check_name(path, member.name)
                    if count == 0 and first is not None:
                        first(member.name)
                    if wanted(member.name):
                        return member.name, _member_bytes(path, tar, member, cap)
                    if count + 1 >= MAX_SCAN_MEMBERS:
                        raise ArtifactMetadataError(
                            str(path), f"no {what} within the first {MAX_SCAN_MEMBERS} members; refused"
                        )
    except _ScanCapReached:
        raise ArtifactMetadataError(
            str(path), f"no {what} within the first {MAX_SCAN_BYTES // MiB} MiB decompressed; refused"
        ) from None
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise ArtifactMetadataError(
            str(path), f"not a readable tar archive: truncated or corrupt ({exc})"
        ) from None
    raise ArtifactMetadataError(str(path), f"no {what} in the archive")


def tar_index(path: Path) -> tuple[tarfile.TarFile, dict[str, tarfile.TarInfo]]:
    """An uncompressed tar's members by name, from their headers only (tarfile seeks past data).

    The caller closes the TarFile. Every name is checked; at most :data:`MAX_SCAN_MEMBERS`.
    """
    try:
        tar = tarfile.open(path, mode="r:")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ArtifactMetadataError(str(path), f"not a readable tar archive ({exc})") from None
    members: dict[str, tarfile.TarInfo] = {}
    try:
        for count, member in enumerate(tar):
            check_name(path, member.name)
            members.setdefault(_strip_dot(member.name), member)
            if count + 1 >= MAX_SCAN_MEMBERS:
                raise ArtifactMetadataError(str(path), f"more than {MAX_SCAN_MEMBERS} members; refused")
    except (tarfile.TarError, EOFError, OSError) as exc:
        tar.close()
        raise ArtifactMetadataError(
            str(path), f"not a readable tar archive: truncated or corrupt ({exc})"
        ) from None
    except ArtifactMetadataError:
        tar.close()
        raise
    return tar, members


def _strip_dot(name: str) -> str:
    # `tar -C dir .` writes "./index.json": the same member as "index.json".
    return name[2:] if name.startswith("./") else name


def read_tar_member(
    path: Path, tar: tarfile.TarFile, member: tarfile.TarInfo, cap: int = MAX_MEMBER_BYTES
) -> bytes:
    try:
        return _member_bytes(path, tar, member, cap)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ArtifactMetadataError(str(path), f"member {member.name!r} is unreadable ({exc})") from None


def first_tar_member(path: Path, *, gzipped: bool) -> str | None:
    """The first member's name (None for an empty or unreadable tar); reads a few KiB."""
    names = first_tar_members(path, gzipped=gzipped, count=1)
    return names[0] if names else None


def first_tar_members(path: Path, *, gzipped: bool, count: int) -> list[str]:
    """The names of the first ``count`` members (fewer if the tar is shorter or unreadable).

    For claiming only: reads at most 1 MiB decompressed, never raises, checks nothing.
    """
    names: list[str] = []
    try:
        with path.open("rb") as raw:
            source: _Readable = gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw
            capped = io.BufferedReader(_CappedReader(source, 1 * MiB), 64 * KiB)
            with tarfile.open(fileobj=capped, mode="r|") as tar:
                for member in tar:
                    names.append(member.name)
                    if len(names) >= count:
                        break
    except (_ScanCapReached, tarfile.TarError, EOFError, OSError, zlib.error):
        pass
    return names
