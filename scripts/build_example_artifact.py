"""Pack the example service (examples/hello/src) into a byte-for-byte deterministic .tar.gz.

The archive depends only on the paths and contents of the files: entries are sorted, every
mtime is 0, owner is 0/0 with empty names, modes are 0o644 for files and 0o755 for
directories, and the gzip header carries mtime 0 and no file name. ``__pycache__``
directories and ``*.pyc`` files are left out. Building twice, even after touching the files
or changing their permissions, gives the same sha256.

    python scripts/build_example_artifact.py OUT.tar.gz

Standard library only.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SRC = REPO_ROOT / "examples" / "hello" / "src"

FILE_MODE = 0o644
DIR_MODE = 0o755
COMPRESS_LEVEL = 9
SKIP_DIRS = frozenset({"__pycache__"})
SKIP_SUFFIXES = (".pyc", ".pyo")


def _walk(src: Path) -> Iterator[tuple[str, Path]]:
    """Yield ``(archive name, path)`` for every kept directory and file under ``src``, sorted."""
    entries: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        here = Path(dirpath)
        for name in dirnames:
            entries.append((here.joinpath(name).relative_to(src).as_posix(), here / name))
        for name in filenames:
            if not name.endswith(SKIP_SUFFIXES):
                entries.append((here.joinpath(name).relative_to(src).as_posix(), here / name))
    yield from sorted(entries)


def _tarinfo(name: str, *, is_dir: bool, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    info.mode = DIR_MODE if is_dir else FILE_MODE
    info.size = 0 if is_dir else size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _tar_bytes(src: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, path in _walk(src):
            if path.is_symlink():
                raise ValueError(f"{path}: symlinks are not allowed in the artifact")
            if path.is_dir():
                tar.addfile(_tarinfo(name, is_dir=True))
            elif path.is_file():
                data = path.read_bytes()
                tar.addfile(_tarinfo(name, is_dir=False, size=len(data)), io.BytesIO(data))
            else:
                raise ValueError(f"{path}: only regular files and directories can be packed")
    return buf.getvalue()


def build(dest: Path, src: Path = DEFAULT_SRC) -> Path:
    """Write the deterministic ``.tar.gz`` of ``src`` to ``dest`` and return ``dest``."""
    src = Path(src)
    dest = Path(dest)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: source directory not found")
    payload = _tar_bytes(src)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    with open(tmp, "wb") as raw:
        # filename="" and mtime=0 keep the gzip header free of the name and the build time.
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=COMPRESS_LEVEL, mtime=0) as gz:
            gz.write(payload)
    os.replace(tmp, dest)
    return dest


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("dest", type=Path, help="output path, e.g. hello.tar.gz")
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC, help="directory to pack (%(default)s)")
    args = parser.parse_args(argv)
    try:
        out = build(args.dest, args.src)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"sha256:{sha256_of(out)}  {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
