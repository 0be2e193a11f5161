"""Evidence files read at publish: opened safely, checked against their kind, copied privately.

``promote publish --evidence junit=reports/junit.xml`` runs in CI on a checkout that a pull
request may have shaped. A planted ``reports/junit.xml -> ~/.aws/credentials`` symlink must not
upload the runner's secrets, and a report that no gate could read must be refused while the
author is still looking at the CI log, not days later at the gate. So, before anything is sent:

* the path is opened without following symbolic links: ``O_NOFOLLOW`` on the file, and every
  directory below the current directory opened the same way (``openat`` from the current
  directory), so a link anywhere under the checkout is seen; with ``follow_symlinks`` a link is
  accepted only when its resolved target lies inside the current directory;
* the *opened descriptor* is checked with ``fstat`` (regular file; FIFOs, devices, sockets and
  directories are refused; ``O_NONBLOCK`` keeps a FIFO from blocking the open), so swapping the
  path between the check and the read cannot smuggle another file in;
* the bytes read from that descriptor are size-checked, parsed with the parsers the gates use,
  and written to a private copy (a fresh 0700 directory), which is what the store hashes and
  uploads: exactly the validated bytes, whatever happens to the original afterwards.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path

from promotion.errors import EvidenceError, EvidenceUnreadable
from promotion.evidence import (
    MAX_EVIDENCE_BYTES,
    parse_coverage,
    parse_junit,
    parse_perf,
    parse_sarif,
)
from promotion.models import EVIDENCE_KINDS, EvidenceKind

#: The parser each kind is checked with (the gates' own), what the kind is called in errors and
#: the format name that parser gives when it did not get as far as detecting a format.
#: ``other`` is stored as it is: there is nothing to check it against.
PARSED_KINDS: dict[str, tuple[Callable[[bytes], object], str, str]] = {
    "junit": (parse_junit, "JUnit XML report", "JUnit XML"),
    "coverage": (parse_coverage, "coverage report", "coverage report"),
    "sarif": (parse_sarif, "SARIF log", "SARIF"),
    "perf": (parse_perf, "performance report", "performance report"),
}

_READ_CHUNK = 1024 * 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class ValidatedEvidence(list[tuple[EvidenceKind, Path]]):
    """``(kind, path)`` pairs whose paths are private copies of the validated bytes.

    Each copy keeps the original file name (the record stores it). The copies are removed when
    this list is garbage-collected or the process exits: keep the list while the paths are used.
    """

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="promote-evidence-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.directory), True)

    def cleanup(self) -> None:
        self._cleanup()


def read_evidence(specs: Sequence[str], *, follow_symlinks: bool = False) -> ValidatedEvidence:
    """Check every ``KIND=PATH`` spec and return private copies; EvidenceError on the first problem."""
    out = ValidatedEvidence()
    try:
        for i, spec in enumerate(specs):
            kind, path = _split(spec)
            data_fd = _open_regular(spec, path, follow_symlinks)
            copy_dir = out.directory / str(i)
            copy_dir.mkdir(mode=0o700)
            copy = copy_dir / (os.path.basename(os.path.normpath(path)) or "evidence")
            try:
                _validate_and_copy(spec, kind, data_fd, copy)
            finally:
                os.close(data_fd)
            out.append((kind, copy))
    except BaseException:
        out.cleanup()
        raise
    return out


def _split(spec: str) -> tuple[EvidenceKind, str]:
    kind, sep, path = spec.partition("=")
    if not sep or not kind or not path:
        raise EvidenceError(f"--evidence {spec!r}: expected KIND=PATH, e.g. junit=report.xml")
    if kind not in EVIDENCE_KINDS:
        allowed = ", ".join(EVIDENCE_KINDS)
        raise EvidenceError(f"--evidence {spec!r}: unknown kind {kind!r}; allowed: {allowed}")
    return kind, path  # type: ignore[return-value]


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def _open_regular(spec: str, path: str, follow_symlinks: bool) -> int:
    """An fd open on the regular file ``path`` names, under the symlink rules; EvidenceError otherwise."""
    cwd = os.path.realpath(os.getcwd())
    lexical = os.path.abspath(path)
    target = lexical
    if follow_symlinks:
        resolved = os.path.realpath(path)
        if resolved != lexical:
            if not _inside(resolved, cwd):
                raise EvidenceError(
                    f"--evidence {spec}: {path} leads through a symbolic link to {resolved}, "
                    f"outside the current directory {cwd}; refused"
                )
            target = resolved
    if _inside(target, cwd):
        fd = _open_below(spec, path, cwd, os.path.relpath(target, cwd))
    else:
        # Outside the checkout (an absolute path the CI job chose): only the file itself is
        # checked, its directories are the runner's own.
        try:
            dir_fd = os.open(os.path.dirname(lexical) or os.sep, _DIR_FLAGS)
        except OSError as exc:
            raise _os_problem(spec, path, exc) from None
        try:
            fd = _open_at(spec, path, dir_fd, os.path.basename(lexical), _FILE_FLAGS, path)
        finally:
            os.close(dir_fd)
    try:
        _require_regular(spec, path, os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_below(spec: str, path: str, cwd: str, relative: str) -> int:
    """Walk ``relative`` from ``cwd`` one component at a time, never following a link."""
    parts = [p for p in relative.split(os.sep) if p and p != "."]
    if not parts:
        raise EvidenceError(f"--evidence {spec}: {path} is a directory; evidence must be a regular file")
    dir_fd = os.open(cwd, _DIR_FLAGS)
    try:
        for depth, part in enumerate(parts[:-1]):
            shown = os.path.join(*parts[: depth + 1])
            next_fd = _open_at(spec, path, dir_fd, part, _DIR_FLAGS | os.O_NOFOLLOW, shown)
            os.close(dir_fd)
            dir_fd = next_fd
        return _open_at(spec, path, dir_fd, parts[-1], _FILE_FLAGS, path)
    finally:
        os.close(dir_fd)


def _open_at(spec: str, path: str, dir_fd: int, name: str, flags: int, shown: str) -> int:
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(name, dir_fd):
            try:
                link_target = os.readlink(name, dir_fd=dir_fd)
            except OSError:
                link_target = "?"
            where = f"{path} is" if shown == path else f"{shown} (in {path}) is"
            raise EvidenceError(
                f"--evidence {spec}: {where} a symbolic link (to {link_target}); evidence must be a "
                "regular file (--follow-symlinks accepts links whose target is inside the current "
                "directory)"
            ) from None
        raise _os_problem(spec, path, exc) from None


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode)
    except OSError:
        return False


def _os_problem(spec: str, path: str, exc: OSError) -> EvidenceError:
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return EvidenceError(f"--evidence {spec!r}: no such file {path}")
    if exc.errno == errno.ENXIO:
        return EvidenceError(f"--evidence {spec}: {path} is a socket; evidence must be a regular file")
    return EvidenceError(f"--evidence {spec}: cannot open {path}: {exc.strerror or exc}")


def _require_regular(spec: str, path: str, st: os.stat_result) -> None:
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        what = "a directory"
    elif stat.S_ISFIFO(mode):
        what = "a named pipe (FIFO)"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        what = "a device"
    elif stat.S_ISSOCK(mode):
        what = "a socket"
    else:
        what = "not a regular file"
    raise EvidenceError(f"--evidence {spec}: {path} is {what}; evidence must be a regular file")


def _too_big(spec: str, kind: str, size: str) -> EvidenceError:
    return EvidenceError(
        f"--evidence {spec}: the file is {size} bytes; {kind} evidence is limited to "
        f"{MAX_EVIDENCE_BYTES} bytes ({MAX_EVIDENCE_BYTES // (1024 * 1024)} MiB, MAX_EVIDENCE_BYTES)"
    )


def _validate_and_copy(spec: str, kind: EvidenceKind, fd: int, copy: Path) -> None:
    out_fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(out_fd, "wb") as out:
        if kind not in PARSED_KINDS:
            # Not parsed, so not size-limited either: streamed through, never held in memory.
            while chunk := _read(spec, fd, _READ_CHUNK):
                out.write(chunk)
            return
        size = os.fstat(fd).st_size
        if size > MAX_EVIDENCE_BYTES:
            raise _too_big(spec, kind, str(size))  # refused before a byte is read
        parts: list[bytes] = []
        total = 0
        # The file may grow after the fstat: read at most one byte past the limit to notice.
        while total <= MAX_EVIDENCE_BYTES and (chunk := _read(spec, fd, _READ_CHUNK)):
            parts.append(chunk)
            total += len(chunk)
        if total > MAX_EVIDENCE_BYTES:
            raise _too_big(spec, kind, f"more than {MAX_EVIDENCE_BYTES}")
        data = b"".join(parts)
        del parts
        parse, name, generic = PARSED_KINDS[kind]
        try:
            parse(data)
        except EvidenceUnreadable as exc:
            # "Cobertura XML: ..." says which format was recognised; the generic name says nothing.
            problem = exc.problem if exc.format == generic else str(exc)
            raise EvidenceError(f"--evidence {spec}: not a {name}: {problem}") from None
        out.write(data)


def _read(spec: str, fd: int, size: int) -> bytes:
    try:
        return os.read(fd, size)
    except OSError as exc:
        raise EvidenceError(f"--evidence {spec}: cannot read the file: {exc.strerror or exc}") from None
