from __future__ import annotations

import base64
import os
import zlib
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest

from promotion import store as store_mod
from promotion.digest import Digest
from promotion.errors import ArtifactConflict, ArtifactNotFound, DigestMismatch, EvidenceError
from promotion.models import Provenance
from promotion.store import ArtifactStore, parse_evidence

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

PROV = Provenance(commit="abc123", build_url="https://ci.example/1", published_by="ci-bot")


def count_requests(store: ArtifactStore) -> Counter[str]:
    """Count the HTTP requests the client sends, by operation (an observer, not a patch)."""
    seen: Counter[str] = Counter()

    def on_send(request: Any, **_: Any) -> None:
        seen[request.method] += 1

    store.s3.client.meta.events.register("before-send.s3", on_send)
    return seen


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("size", [0, 1, 1024 * 1024, store_mod.MULTIPART_THRESHOLD + 12345])
def test_publish_fetch_round_trip(store: ArtifactStore, tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    f = write(tmp_path / "a.bin", data)
    result = store.publish(f, service="api", version="1.0.0", provenance=PROV)
    assert result.digest == Digest.of_bytes(data)
    assert not result.already_published and result.uploaded_bytes == size
    assert store.fetch_bytes(result.digest) == data
    out = tmp_path / "out.bin"
    assert store.fetch_to(result.digest, out) == size
    assert out.read_bytes() == data
    rec = store.record("api", result.digest)
    assert (rec.size, rec.version, rec.provenance.commit) == (size, "1.0.0", "abc123")
    assert store.verify_full(result.digest).method == "full"
    assert store.verify_cheap(result.digest, rec.s3_checksum).method == "checksum"


def test_multipart_blob_is_stored_under_its_digest_with_part_checksums(
    store: ArtifactStore, tmp_path: Path
) -> None:
    data = os.urandom(store_mod.PART_SIZE * 2 + 1)
    result = store.publish(write(tmp_path / "big", data), service="api", version="2", provenance=PROV)
    head = store.s3.head(store.blob_key(result.digest))
    assert head is not None and head.size == len(data)
    # Each part went with the CRC32 of its bytes: S3's composite is the CRC32 of those, "-3" parts.
    p = store_mod.PART_SIZE
    part_crcs = b"".join(zlib.crc32(data[o : o + p]).to_bytes(4, "big") for o in range(0, len(data), p))
    composite = base64.b64encode(zlib.crc32(part_crcs).to_bytes(4, "big")).decode() + "-3"
    assert head.checksum_crc32 == composite == head.composite_checksum
    assert head.metadata["sha256"] == result.digest.hex
    assert result.record.s3_checksum == composite


def test_large_file_goes_straight_to_its_final_key(store: ArtifactStore, tmp_path: Path) -> None:
    """No staging key and no server-side copy: parts are uploaded under blobs/sha256/<hex>."""
    data = os.urandom(store_mod.PART_SIZE + 777)
    keys: list[str] = []

    def on_send(request: Any, **_: Any) -> None:
        assert "x-amz-copy-source" not in {k.lower() for k in request.headers}, "server-side copy"
        keys.append(request.url.split("?")[0])

    store.s3.client.meta.events.register("before-send.s3", on_send)
    result = store.publish(write(tmp_path / "big", data), service="api", version="3", provenance=PROV)
    assert result.digest == Digest.of_bytes(data)
    blob_url_end = store.blob_key(result.digest)
    written = [k for k in keys if "/blobs/" in k]
    assert written and all(k.endswith(blob_url_end) for k in written)
    assert store.fetch_bytes(result.digest) == data


def test_republish_uploads_nothing_and_writes_nothing(store: ArtifactStore, tmp_path: Path) -> None:
    f = write(tmp_path / "a.bin", os.urandom(300_000))
    ev = parse_evidence([f"junit={write(tmp_path / 'j.xml', b'<testsuite/>')}"])
    first = store.publish(f, service="api", version="1.0", provenance=PROV, evidence=ev)
    seen = count_requests(store)
    again = store.publish(f, service="api", version="1.0", provenance=PROV, evidence=ev)
    assert again.already_published and again.uploaded_bytes == 0
    assert again.record == first.record
    assert seen["PUT"] == 0 and seen["POST"] == 0, seen
    assert len(store.ledger.records("api")) == 1


def test_republish_with_other_metadata_is_a_conflict(store: ArtifactStore, tmp_path: Path) -> None:
    f = write(tmp_path / "a.bin", b"same bytes")
    store.publish(f, service="api", version="1.0", provenance=PROV)
    with pytest.raises(ArtifactConflict, match="version: stored '1.0', given '1.1'"):
        store.publish(f, service="api", version="1.1", provenance=PROV)
    assert len(store.ledger.records("api")) == 1


def test_evidence_is_stored_by_digest(store: ArtifactStore, tmp_path: Path) -> None:
    junit = write(tmp_path / "junit.xml", b"<testsuite tests='1'/>")
    cov = write(tmp_path / "coverage.json", b'{"totals": {"covered_lines": 8, "num_statements": 10}}')
    ev = parse_evidence([f"junit={junit}", f"coverage={cov}"])
    result = store.publish(
        write(tmp_path / "a", b"x"), service="api", version="1", provenance=PROV, evidence=ev
    )
    refs = {e.kind: e for e in result.record.evidence}
    assert refs["junit"].digest == Digest.of_bytes(junit.read_bytes())
    assert refs["junit"].filename == "junit.xml"
    assert store.fetch_bytes(refs["coverage"].digest) == cov.read_bytes()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("junit", "expected KIND=PATH"),
        ("bogus=x.xml", "unknown kind 'bogus'; allowed: junit, coverage, sarif, perf, other"),
        ("junit=/nonexistent/x.xml", "no such file /nonexistent/x.xml"),
    ],
)
def test_bad_evidence_is_refused_before_anything_is_sent(spec: str, message: str) -> None:
    with pytest.raises(EvidenceError, match=message):
        parse_evidence([spec])


def test_a_flipped_byte_in_the_stored_blob_is_caught(store: ArtifactStore, tmp_path: Path) -> None:
    data = os.urandom(200_000)
    result = store.publish(write(tmp_path / "a", data), service="api", version="1", provenance=PROV)
    corrupted = bytearray(data)
    corrupted[123_456] ^= 0x01
    # Replace the object behind the product's back, keeping its metadata, as bit rot or a rogue
    # writer would.
    key = store.blob_key(result.digest)
    store.s3.client.put_object(
        Bucket=store.s3.bucket, Key=key, Body=bytes(corrupted), Metadata={"sha256": result.digest.hex}
    )
    actual = str(Digest.of_bytes(bytes(corrupted)))
    with pytest.raises(DigestMismatch) as exc:
        store.verify_full(result.digest)
    assert exc.value.expected == result.digest and exc.value.actual == actual
    assert result.digest in str(exc.value) and actual in str(exc.value)
    with pytest.raises(DigestMismatch):
        store.fetch_bytes(result.digest)
    out = tmp_path / "out"
    with pytest.raises(DigestMismatch):
        store.fetch_to(result.digest, out)
    assert not out.exists() and list(tmp_path.glob(".out*")) == []
    with pytest.raises(DigestMismatch):
        store.verify_cheap(result.digest, result.record.s3_checksum)


def _multipart_put(
    store: ArtifactStore, key: str, data: bytes, digest: Digest, algorithm: Literal["CRC32", "SHA256"]
) -> None:
    """Write ``data`` under ``key`` behind the product's back, in 2 parts with ``algorithm`` checksums."""
    c, bucket, half = store.s3.client, store.s3.bucket, len(data) // 2
    up = c.create_multipart_upload(
        Bucket=bucket, Key=key, ChecksumAlgorithm=algorithm, Metadata={"sha256": digest.hex}
    )
    parts: list[CompletedPartTypeDef] = []
    for n, body in enumerate((data[:half], data[half:]), start=1):
        r = c.upload_part(
            Bucket=bucket,
            Key=key,
            UploadId=up["UploadId"],
            PartNumber=n,
            Body=body,
            ChecksumAlgorithm=algorithm,
        )
        if algorithm == "CRC32":
            parts.append({"PartNumber": n, "ETag": r["ETag"], "ChecksumCRC32": r["ChecksumCRC32"]})
        else:
            parts.append({"PartNumber": n, "ETag": r["ETag"], "ChecksumSHA256": r["ChecksumSHA256"]})
    c.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=up["UploadId"], MultipartUpload={"Parts": parts}
    )


def test_cheap_check_of_a_multipart_blob_compares_the_composite_recorded_at_publish(
    store: ArtifactStore, tmp_path: Path
) -> None:
    data = os.urandom(store_mod.PART_SIZE * 2 + 1)
    result = store.publish(write(tmp_path / "big", data), service="api", version="1", provenance=PROV)
    recorded = result.record.s3_checksum
    check = store.verify_cheap(result.digest, recorded)
    assert check.method == "checksum" and f"{recorded} as recorded" in check.detail

    # Other bytes put under the name, in parts and with the right metadata: the composite differs.
    key = store.blob_key(result.digest)
    rogue = bytearray(data)
    rogue[store_mod.PART_SIZE + 7] ^= 0x01
    _multipart_put(store, key, bytes(rogue), result.digest, "CRC32")
    with pytest.raises(DigestMismatch, match="composite checksum"):
        store.verify_cheap(result.digest, recorded)

    # A blob uploaded before parts carried CRC32s has a SHA-256 composite: checked against its own.
    _multipart_put(store, key, data, result.digest, "SHA256")
    head = store.s3.head(key)
    assert head is not None and head.checksum_crc32 is None
    legacy = head.composite_checksum
    assert legacy is not None and legacy == head.checksum_sha256 and legacy.endswith("-2")
    assert store.verify_cheap(result.digest, legacy).method == "checksum"
    with pytest.raises(DigestMismatch):
        store.verify_cheap(result.digest, recorded)


def test_unknown_digest(store: ArtifactStore) -> None:
    d = Digest.of_bytes(b"never published")
    for fn in (store.fetch_bytes, store.verify_full, store.verify_cheap):
        with pytest.raises(ArtifactNotFound, match="was never published"):
            fn(d)
    with pytest.raises(ArtifactNotFound):
        store.record("api", d)
