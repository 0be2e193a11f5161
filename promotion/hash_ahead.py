"""Hash the file ``promote publish`` is given while the process is still starting up.

A large file's digest is its key, so it must be known before the upload starts: the first read
of the file hashes it (:meth:`promotion.digest.Digest.of_file_parts`), the second streams it.
Run one after the other, the hash pass adds ~0.2 s per 256 MiB (on two cores) to every publish.
But a publish also spends ~0.5 s on one core before it can send anything: importing pydantic,
pydantic-settings and boto3, reading the pipeline file, reading the artifact's metadata, making
the S3 client, all while the S3 server is idle. Started first, on its own threads (hashlib and
``os.preadv`` release the GIL), the hash pass is done by the time the upload can start.

Nothing is decided here: the store takes the open file, its state at open and the hashes, and
checks everything it checked before (the file unchanged since, the parts against this read).
A file this cannot open or that is small (one PUT, read once) gets no hash-ahead: the store's
own path then reads it, and reports any problem as it always did.
"""

from __future__ import annotations

import base64
import math
import os
import stat
import threading
import zlib
from concurrent.futures import Future
from pathlib import Path

from promotion.digest import Digest

MiB = 1024 * 1024
#: Files up to this size are one PUT whose checksum is the digest, read once into memory.
MULTIPART_THRESHOLD = 16 * MiB
#: Parts of a multipart upload (S3 allows at most 10,000 parts, so large files get larger parts).
PART_SIZE = 16 * MiB
#: Parts sent at once. Parts are streamed from the file, not held in memory, so this bounds
#: connections and threads, not memory.
UPLOAD_THREADS = 8
#: S3's limit on the number of parts, with room to spare.
_MAX_PARTS = 9_000


def part_size(size: int) -> int:
    """The part size for a file of ``size`` bytes: 16 MiB, larger where 9,000 parts would not do."""
    return max(PART_SIZE, math.ceil(size / _MAX_PARTS / MiB) * MiB)


FileState = tuple[int, int, int, int]


def file_state(fd: int) -> FileState:
    """What changes when a file is written to: size, modification and change times, inode."""
    st = os.fstat(fd)
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


class HashAhead:
    """One large file, open, its state at open, and its hash pass running on a thread."""

    def __init__(self, path: Path, fd: int, state: FileState) -> None:
        self.path = path
        self.fd = fd
        self.state = state
        self.part_size = part_size(state[0])
        self._result: Future[tuple[Digest, list[int], int]] = Future()
        self._stop = threading.Event()
        self._overlap = threading.Event()
        threading.Thread(target=self._run, name="hash-ahead", daemon=True).start()

    @classmethod
    def start(cls, path: Path) -> HashAhead | None:
        """Open ``path`` and start hashing it, or None (small, not a regular file, unreadable)."""
        try:
            # Non-blocking: opening a FIFO put in the file's place must not hang (it is refused below).
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            state = file_state(fd)
        except OSError:
            os.close(fd)
            return None
        if state[0] <= MULTIPART_THRESHOLD or not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        return cls(path, fd, state)

    def _run(self) -> None:
        try:
            # On this thread alone while the start-up beside it (imports, the client) has the other
            # core; overlapped once someone waits for the result: then nothing else runs.
            result = Digest.of_file_parts(
                self.fd, self.state[0], self.part_size, self._stop, overlap=self._overlap
            )
            self._result.set_result(result)
        except BaseException as exc:  # noqa: BLE001 - handed to whoever asks for the result
            self._result.set_exception(exc)

    def result(self) -> tuple[Digest, list[int], int]:
        """(digest, CRC32 of each part, bytes read): waits for the pass; raises its error.
        The caller has nothing else to do meanwhile: the pass spreads over its threads now."""
        self._overlap.set()
        return self._result.result()

    def close(self) -> None:
        """Stop the pass if it still runs (a publish refused meanwhile need not wait for it), then
        close the file once its thread is done with the descriptor."""
        if self.fd < 0:
            return
        self._stop.set()
        try:
            self._result.exception()
        finally:
            os.close(self.fd)
            self.fd = -1


class FilePart:
    """One part of a file as a seekable, sized body for botocore, read from disk as it is sent.

    Nothing but the HTTP layer's read buffer is held in memory; a retry rewinds (``seek(0)``).
    The bytes are not hashed again here: the part goes with the CRC32 of the first read, which
    the server checks (it refuses a part whose bytes differ, ``BadDigest``).
    """

    def __init__(self, fd: int, offset: int, length: int, crc32: int) -> None:
        self.fd = fd
        self.offset = offset
        self.length = length
        self.crc32 = crc32
        self.checksum = base64.b64encode(crc32.to_bytes(4, "big")).decode("ascii")
        self._pos = 0

    def __len__(self) -> int:
        return self.length

    def read(self, n: int = -1) -> bytes:
        left = self.length - self._pos
        if n is None or n < 0 or n > left:
            n = left
        if n == 0:
            return b""
        data = os.pread(self.fd, n, self.offset + self._pos)
        # A file that shrank ends this body short: the server refuses the part.
        self._pos = self._pos + len(data) if data else self.length
        return data

    def seek(self, pos: int, whence: int = 0) -> int:
        self._pos = {0: pos, 1: self._pos + pos, 2: self.length + pos}[whence]
        return self._pos

    def tell(self) -> int:
        return self._pos

    def changed_on_disk(self) -> bool:
        """Re-read the part from disk (after a failure only) and compare with the first read."""
        data = os.pread(self.fd, self.length, self.offset)
        return len(data) != self.length or zlib.crc32(data) != self.crc32

    def where(self) -> str:
        return f"bytes {self.offset}..{self.offset + self.length - 1} differ from its first read"
