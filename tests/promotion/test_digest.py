from __future__ import annotations

import hashlib
import io
import os
import threading
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from promotion.digest import Digest, HashingStopped
from promotion.errors import InvalidDigest

HELLO = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"


def test_valid_digest_round_trips() -> None:
    d = Digest(HELLO)
    assert d == HELLO
    assert d.hex == HELLO[7:]
    assert d.short == HELLO[:19]
    assert Digest.of_bytes(b"hello") == d


@pytest.mark.parametrize(
    "bad",
    [
        "latest",
        "v1.2.3",
        HELLO.upper(),
        HELLO[7:],  # no algorithm
        "sha512:" + HELLO[7:],
        HELLO[:-1],
        HELLO + "0",
        "sha256:" + "g" * 64,
        " " + HELLO,
        "",
    ],
)
def test_malformed_digests_are_refused_with_the_expected_form(bad: str) -> None:
    with pytest.raises(InvalidDigest) as exc:
        Digest(bad)
    assert "expected 'sha256:' followed by 64 lowercase hex characters" in str(exc.value)
    assert repr(bad)[:20] in str(exc.value)


def test_non_string_is_refused() -> None:
    with pytest.raises(InvalidDigest):
        Digest(123)


def test_stream_hash_matches_hashlib_across_chunk_boundaries() -> None:
    data = bytes(range(256)) * 40_000  # 10 MB, not a multiple of the chunk size
    expected = "sha256:" + hashlib.sha256(data).hexdigest()
    assert Digest.of_stream(io.BytesIO(data), chunk_size=1_000_003) == expected
    assert Digest.of_chunks([data[:7], data[7:]]) == expected


def test_pydantic_field_validation() -> None:
    class M(BaseModel):
        d: Digest

    assert isinstance(M.model_validate({"d": HELLO}).d, Digest)
    assert M.model_validate({"d": HELLO}).model_dump(mode="json") == {"d": HELLO}
    with pytest.raises(ValidationError, match="64 lowercase hex"):
        M.model_validate({"d": "sha256:abc"})


class SetAfter(threading.Event):
    """An event that reads as set from its ``n + 1``-th check on: the pass over parts then
    switches from in turn to overlapped after ``n`` chunks, whatever the timing."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.checks = 0
        self.n = n

    def is_set(self) -> bool:
        self.checks += 1
        return self.checks > self.n


OVERLAP_MODES: dict[str, Callable[[], bool | threading.Event]] = {
    "overlapped": lambda: True,
    "in-turn": lambda: False,
    "switches-after-one-chunk": lambda: SetAfter(1),
    "switches-after-two-chunks": lambda: SetAfter(2),
}


@pytest.mark.parametrize("mode", list(OVERLAP_MODES))
@pytest.mark.parametrize(
    ("size", "part_size", "shrink_to"),
    [
        (40 * 2**20 + 12_345, 16 * 2**20, None),  # parts of 16 MiB, a short last one
        (32 * 2**20, 16 * 2**20, None),  # exactly two parts
        (20 * 2**20, 7 * 2**20, None),  # parts smaller than a read
        (40 * 2**20, 16 * 2**20, 17 * 2**20 + 5),  # the file shrank: the pass says how far it read
    ],
)
def test_the_pass_over_parts_gives_the_whole_digest_and_each_parts_crc32(
    tmp_path: Path, mode: str, size: int, part_size: int, shrink_to: int | None
) -> None:
    overlap = OVERLAP_MODES[mode]()
    data = os.urandom(shrink_to if shrink_to is not None else size)
    path = tmp_path / "artifact.bin"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        digest, crcs, read = Digest.of_file_parts(fd, size, part_size, overlap=overlap)
    finally:
        os.close(fd)
    assert read == len(data)
    assert digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert crcs == [zlib.crc32(data[o : o + part_size]) for o in range(0, len(data), part_size)]


@pytest.mark.parametrize("mode", list(OVERLAP_MODES))
def test_the_pass_over_parts_stops_when_asked(tmp_path: Path, mode: str) -> None:
    overlap = OVERLAP_MODES[mode]()
    path = tmp_path / "artifact.bin"
    path.write_bytes(b"\0" * (20 * 2**20))
    stop = SetAfter(1)  # asked after the first chunk: overlapped, its threads are running then
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(HashingStopped, match=f"stopped after {16 * 2**20} of {20 * 2**20} bytes"):
            Digest.of_file_parts(fd, 20 * 2**20, 16 * 2**20, stop, overlap=overlap)
    finally:
        os.close(fd)
