"""A file rewritten between the read of its stack and the hash of its bytes is refused.

What is promised: the metadata recorded for a digest (stack, name, version) are read from the
bytes stored under it. ``publish`` is ``inspect`` (the file's state, then its stack) followed by
``publish_inspected`` (the hash and upload, refused if the file's state changed since), so the
window between the two steps is exercised here deterministically, without threads or sleeps.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from promotion import store as store_mod
from promotion.digest import Digest
from promotion.errors import FileChangedDuringPublish
from promotion.models import Provenance
from promotion.store import ArtifactStore

PROV = Provenance(commit="abc123", build_url="https://ci.example/1", published_by="ci-bot")


def chart_bytes(version: str, padding: int = 0) -> bytes:
    """A Helm chart as ``helm package`` writes it (Chart.yaml first), with ``padding`` random
    (incompressible) bytes in a file of the chart."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (
            ("web/Chart.yaml", f"apiVersion: v2\nname: web\nversion: {version}\n".encode()),
            ("web/files/data.bin", os.urandom(padding)),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def later_mtime(path: Path, than_ns: int) -> None:
    # File times tick with the kernel's clock (milliseconds), not with each write: a rewrite this
    # soon after the first write may keep its mtime. A writer a moment later would not; say so.
    os.utime(path, ns=(than_ns, than_ns + 1_000_000_000))


def assert_nothing_stored(store: ArtifactStore) -> None:
    assert list(store.s3.list_keys(store.s3.key(""))) == []


@pytest.mark.parametrize("how", ["rewritten in place", "replaced by a rename"])
def test_a_chart_rewritten_after_its_version_was_read_is_refused(
    store: ArtifactStore, tmp_path: Path, how: str
) -> None:
    path = tmp_path / "web.tgz"
    path.write_bytes(chart_bytes("1.0.0"))
    inspected = store.inspect(path)
    assert (inspected.own.stack, inspected.own.name, inspected.own.version) == ("helm", "web", "1.0.0")
    if how == "rewritten in place":
        with path.open("r+b") as f:  # same inode
            f.write(chart_bytes("2.0.0"))
            f.truncate()
        later_mtime(path, inspected.state[1])
    else:
        new = tmp_path / "web.tgz.new"
        new.write_bytes(chart_bytes("2.0.0"))
        os.replace(new, path)  # another inode; times may even equal the first file's
    with pytest.raises(FileChangedDuringPublish, match="after its stack and version were read"):
        store.publish_inspected(inspected, service="api", version=None, provenance=PROV)
    assert_nothing_stored(store)
    # Published again once the writer is done: the record says what the stored bytes say.
    result = store.publish(path, service="api", version=None, provenance=PROV)
    assert result.digest == Digest.of_bytes(path.read_bytes())
    assert (result.record.stack, result.record.version) == ("helm", "2.0.0")


def test_a_large_file_rewritten_to_bytes_already_stored_is_refused_before_any_upload(
    store: ArtifactStore, tmp_path: Path
) -> None:
    # The multipart path, and the case nothing downstream would catch: the new bytes' blob exists,
    # so no upload would fail; only the state taken before the stack was read tells them apart.
    first = chart_bytes("1.0.0", padding=store_mod.MULTIPART_THRESHOLD + 1024)
    second = chart_bytes("2.0.0", padding=store_mod.MULTIPART_THRESHOLD + 1024)
    assert len(first) > store_mod.MULTIPART_THRESHOLD
    stored_second = tmp_path / "second.tgz"
    stored_second.write_bytes(second)
    blob, _ = store.put_blob(stored_second)
    keys_before = sorted(store.s3.list_keys(store.s3.key("")))
    path = tmp_path / "web.tgz"
    path.write_bytes(first)
    inspected = store.inspect(path)
    assert inspected.own.version == "1.0.0"
    with path.open("r+b") as f:
        f.write(second)
        f.truncate()
    later_mtime(path, inspected.state[1])
    with pytest.raises(FileChangedDuringPublish, match="after its stack and version were read"):
        store.publish_inspected(inspected, service="api", version=None, provenance=PROV)
    assert sorted(store.s3.list_keys(store.s3.key(""))) == keys_before
    assert store.find_record("api", blob.digest) is None
    assert store.ledger.records("api") == []


def test_an_unchanged_file_publishes_through_both_steps(store: ArtifactStore, tmp_path: Path) -> None:
    path = tmp_path / "web.tgz"
    path.write_bytes(chart_bytes("1.0.0"))
    inspected = store.inspect(path)
    assert path.read_bytes()  # another reader (a scanner, say) is not a writer
    result = store.publish_inspected(inspected, service="api", version="1.0.0", provenance=PROV)
    assert result.digest == Digest.of_bytes(path.read_bytes())
    assert (result.record.stack, result.record.name, result.record.version) == ("helm", "web", "1.0.0")
