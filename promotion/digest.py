"""Content digests: the only name an artifact has after it is published.

>>> d = Digest.of_bytes(b"hello")
>>> d
Digest('sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824')
>>> d.hex[:8], d.short
('2cf24dba', 'sha256:2cf24dba5fb0')
>>> Digest("latest")
Traceback (most recent call last):
...
promotion.errors.InvalidDigest: 'latest' is not a digest: expected 'sha256:' followed by 64 ...
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import threading
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import IO, TYPE_CHECKING, Any

from promotion.errors import InvalidDigest

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler
    from pydantic_core import core_schema


class HashingStopped(Exception):
    """A hash pass ended early on request (:meth:`Digest.of_file_parts`'s ``stop``)."""


_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")

#: Read size for hashing files and streams. Large buffers keep hashing near memory speed.
CHUNK_SIZE = 1024 * 1024 * 4
#: Read size of :meth:`Digest.of_file_parts`: larger, so that its hashing threads hand the GIL
#: back and forth less often while other threads run Python code (e.g. imports).
PARTS_CHUNK_SIZE = 1024 * 1024 * 16


class Digest(str):
    """A ``sha256:<64 lowercase hex>`` string; constructing one validates it."""

    __slots__ = ()

    def __new__(cls, value: object) -> Digest:
        if isinstance(value, Digest):
            return value
        if not isinstance(value, str) or not _DIGEST_RE.fullmatch(value):
            raise InvalidDigest(value)
        return super().__new__(cls, value)

    def __repr__(self) -> str:
        return f"Digest({str(self)!r})"

    @property
    def hex(self) -> str:
        """The 64 hex characters without the algorithm prefix."""
        return self[7:]

    @property
    def short(self) -> str:
        """``sha256:`` and the first 12 hex characters, for humans (never for lookups)."""
        return self[:19]

    @property
    def b64(self) -> str:
        """The raw digest in base64: the form S3's ``ChecksumSHA256`` uses."""
        return base64.b64encode(bytes.fromhex(self.hex)).decode("ascii")

    @classmethod
    def from_hasher(cls, hasher: Any) -> Digest:
        return cls("sha256:" + hasher.hexdigest())

    @classmethod
    def of_bytes(cls, data: bytes | bytearray | memoryview) -> Digest:
        return cls("sha256:" + hashlib.sha256(data).hexdigest())

    @classmethod
    def of_chunks(cls, chunks: Iterable[bytes]) -> Digest:
        h = hashlib.sha256()
        for chunk in chunks:
            h.update(chunk)
        return cls.from_hasher(h)

    @classmethod
    def of_stream(cls, stream: IO[bytes], chunk_size: int = CHUNK_SIZE) -> Digest:
        """Hash a binary stream in one pass, reading ``chunk_size`` bytes at a time.

        Reading and hashing overlap: a thread reads the next chunk into one buffer while this
        thread hashes the other (hashlib releases the GIL on large buffers).
        """
        h = hashlib.sha256()
        readinto = getattr(stream, "readinto", None)
        if readinto is None:
            while chunk := stream.read(chunk_size):
                h.update(chunk)
            return cls.from_hasher(h)
        views = [memoryview(bytearray(chunk_size)) for _ in range(2)]
        with ThreadPoolExecutor(max_workers=1) as reader:
            n = readinto(views[0])
            i = 0
            while n:
                pending = reader.submit(readinto, views[1 - i])
                h.update(views[i][:n])
                n = pending.result()
                i = 1 - i
        return cls.from_hasher(h)

    @classmethod
    def of_file_parts(
        cls,
        fd: int,
        size: int,
        part_size: int,
        stop: threading.Event | None = None,
        *,
        overlap: bool | threading.Event = True,
    ) -> tuple[Digest, list[int], int]:
        """One pass over the first ``size`` bytes of file ``fd``: the whole digest, the CRC32 of
        every ``part_size`` part, and the number of bytes read (less than ``size`` if the file
        shrank). ``stop``, once set, ends the pass after the chunk in hand (``HashingStopped``).

        The parts get a CRC32, not a SHA-256: it is what the upload sends with each part, for the
        server to refuse one whose bytes differ from this read, and both sides compute it for less
        (per 256 MiB here: 0.10 s of client hashing, 0.15 s of SeaweedFS's CPU; see
        ``bench/bench_part_checksums.py``).
        The name stays the SHA-256 of the whole; a part's checksum only ties the bytes sent to
        the bytes hashed, against accidents (a file rewritten meanwhile, a corrupted transfer),
        which a CRC32 catches as well.

        Overlapped (``overlap=True``), the whole hash runs on this thread, each part's CRC32 on a
        second thread and the next read on a third, all over the same buffer (hashlib and zlib
        release the GIL), so the three overlap and the pass costs about one hash of the file.
        Reads never straddle a part boundary.

        In turn (``overlap=False``), all on this thread, one chunk after the other: for a pass
        that runs beside other work (a publish's start-up: imports, the S3 client), which then
        keeps a core of the two to itself. Both done, median of 8 runs beside making the S3
        client, 256 MiB: 0.36 s in turn, 0.40 s overlapped. Given an event, the pass goes in turn
        until the event is set, then overlapped (once the other work is done, or someone waits).
        """
        whole = hashlib.sha256()
        part_crcs: list[int] = []
        views = [memoryview(bytearray(min(PARTS_CHUNK_SIZE, max(size, 1))))]

        def read(view: memoryview, offset: int) -> int:
            if offset >= size:
                return 0
            in_part = part_size - offset % part_size
            want = min(len(view), in_part, size - offset)
            return os.preadv(fd, [view[:want]], offset)

        def overlapped() -> bool:
            return overlap.is_set() if isinstance(overlap, threading.Event) else overlap

        pool: ThreadPoolExecutor | None = None
        try:
            offset = 0
            part = 0
            i = 0
            n = read(views[0], 0)
            while n:
                if stop is not None and stop.is_set():
                    raise HashingStopped(f"stopped after {offset} of {size} bytes")
                if pool is None and overlapped():
                    pool = ThreadPoolExecutor(max_workers=2)
                    views.append(memoryview(bytearray(len(views[0]))))
                chunk = views[i][:n]
                if pool is None:  # in turn: this chunk's hashes, then the next read
                    whole.update(chunk)
                    part = zlib.crc32(chunk, part)
                    pending = None
                else:  # the next read and this chunk's CRC32 beside its SHA-256
                    pending = pool.submit(read, views[1 - i], offset + n)
                    part_done = pool.submit(zlib.crc32, chunk, part)
                    whole.update(chunk)
                    part = part_done.result()
                    i = 1 - i
                offset += n
                if offset % part_size == 0 or offset == size:
                    part_crcs.append(part)
                    part = 0
                n = read(views[i], offset) if pending is None else pending.result()
        finally:
            if pool is not None:
                pool.shutdown()
        if offset < size and offset % part_size:
            part_crcs.append(part)
        return cls.from_hasher(whole), part_crcs, offset

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        # Imported here: ``promote publish`` hashes its file before pydantic is imported
        # (promotion/publish_ahead.py), and this module is all that needs.
        from pydantic_core import PydanticCustomError, core_schema

        def validate(value: str) -> Digest:
            if not _DIGEST_RE.fullmatch(value):
                raise PydanticCustomError(
                    "digest",
                    "expected 'sha256:' followed by 64 lowercase hex characters, got {value!r}",
                    {"value": value[:80]},
                )
            return cls(value)

        return core_schema.no_info_after_validator_function(
            validate,
            core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )
