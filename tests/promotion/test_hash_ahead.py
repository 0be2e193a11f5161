"""The hash pass started ahead (``promote publish`` starts it before its own start-up is done).

What is promised (promotion/hash_ahead.py): the publish uses that one read instead of hashing the
file again, and checks everything it checked before: a file written to, or replaced, after the
pass started is refused and nothing is stored. Against the real SeaweedFS (fixture ``store``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from promotion import store as store_mod
from promotion.digest import Digest, HashingStopped
from promotion.errors import FileChangedDuringPublish
from promotion.hash_ahead import HashAhead
from promotion.models import Provenance
from promotion.store import ArtifactStore

PROV = Provenance(commit="abc123", build_url="https://ci.example/1", published_by="ci-bot")
MiB = 1024 * 1024
SIZE = store_mod.MULTIPART_THRESHOLD + 3 * MiB


def big_file(path: Path, size: int = SIZE) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def bytes_read_by_this_process() -> int:
    """``rchar`` of /proc/self/io: every byte read through read syscalls, page-cache hits too."""
    with open("/proc/self/io") as f:
        counters = dict(line.split(": ") for line in f.read().splitlines())
    return int(counters["rchar"])


def test_the_publish_uses_the_pass_started_ahead_and_reads_the_file_once_more(
    store: ArtifactStore, tmp_path: Path
) -> None:
    path = big_file(tmp_path / "app.bin")
    ahead = HashAhead.start(path)
    assert ahead is not None
    try:
        digest, parts, read = ahead.result()
        assert (digest, read) == (Digest.of_bytes(path.read_bytes()), SIZE)
        before = bytes_read_by_this_process()
        result = store.publish(path, service="api", version="1.0", provenance=PROV, hashed=ahead)
        read_by_publish = bytes_read_by_this_process() - before
    finally:
        ahead.close()
    assert result.digest == digest and result.uploaded_bytes == SIZE
    # The upload's read, not a second hash pass too (that would be 2 x SIZE).
    assert SIZE <= read_by_publish < SIZE + 2 * MiB, read_by_publish
    body = store.s3.get(store.blob_key(digest))
    assert body is not None and hashlib.sha256(body).hexdigest() == digest.hex
    assert len(parts) == 2  # 16 MiB + 3 MiB parts, each sent with its own SHA-256


@pytest.mark.parametrize("how", ["rewritten in place", "replaced by a rename"])
def test_a_file_changed_after_the_pass_started_is_refused_and_nothing_is_stored(
    store: ArtifactStore, tmp_path: Path, how: str
) -> None:
    path = big_file(tmp_path / "app.bin")
    ahead = HashAhead.start(path)
    assert ahead is not None
    try:
        ahead.result()
        if how == "rewritten in place":
            with path.open("r+b") as f:  # same inode, new bytes: its change time moves on
                f.write(os.urandom(MiB))
        else:
            new = big_file(tmp_path / "app.bin.new")
            os.replace(new, path)
        with pytest.raises(FileChangedDuringPublish):
            store.publish(path, service="api", version="1.0", provenance=PROV, hashed=ahead)
    finally:
        ahead.close()
    assert list(store.s3.list_keys(store.s3.key(""))) == []


def test_small_files_and_what_cannot_be_opened_get_no_pass(tmp_path: Path) -> None:
    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(store_mod.MULTIPART_THRESHOLD))
    assert HashAhead.start(small) is None  # one PUT, read once, by the store itself
    assert HashAhead.start(tmp_path / "missing.bin") is None
    assert HashAhead.start(tmp_path) is None  # a directory
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert HashAhead.start(fifo) is None  # refused without waiting for a writer


def test_close_stops_a_pass_still_running_and_closes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    with path.open("wb") as f:
        f.truncate(2 * 1024 * MiB)  # sparse: 2 GiB to hash (over a second here), no disk used
    ahead = HashAhead.start(path)
    assert ahead is not None
    fd = ahead.fd
    ahead.close()  # at most one 16 MiB chunk later
    assert ahead.fd == -1
    with pytest.raises(OSError):
        os.fstat(fd)
    with pytest.raises(HashingStopped):
        ahead.result()
    ahead.close()  # twice is harmless


def test_promote_publish_of_a_large_file_prints_its_digest_and_refuses_an_unknown_service(
    config_file: Path, tmp_path: Path
) -> None:
    """The CLI as a user runs it: the pass started ahead ends in the right digest, and a refused
    publish (unknown service) stops the pass and exits 2 with one line."""
    path = big_file(tmp_path / "app.bin")
    promote = [sys.executable, "-m", "promotion.cli", "-c", str(config_file), "publish", str(path)]
    ok = subprocess.run([*promote, "--service", "api"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == str(Digest.of_bytes(path.read_bytes()))
    bad = subprocess.run([*promote, "--service", "nope"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("UnknownService:") and len(bad.stderr.strip().splitlines()) == 1
