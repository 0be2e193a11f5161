"""The one S3 access layer (issue 9 item 5): listing, HEAD with the checksum, one "not found".

On the real SeaweedFS, and through the fault proxy where S3's other ways of saying "not found"
(a bare 404 without a body) must be produced on the real HTTP stack.
"""

from __future__ import annotations

import base64
import hashlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import ClientError

from promotion.digest import Digest
from promotion.errors import BucketNotFound
from promotion.ledger import Ledger
from promotion.local_s3 import LocalS3
from promotion.s3 import S3, is_not_found
from promotion.store import ArtifactStore
from tests.conftest import make_pipeline
from tests.faultproxy import FaultProxy, Rule, proxied_pipeline

#: More than one page of ListObjectsV2 (1000 keys or common prefixes at most per page).
MANY = 1005


def _put_many(s3: S3, keys: list[str]) -> None:
    # Small objects on threads: the point is the number of keys, not their bytes.
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda k: s3.put(k, k.encode()), keys))


def test_list_objects_and_folders_page_past_1000_keys(s3_server: LocalS3, prefix: str) -> None:
    direct = S3(make_pipeline(s3_server.endpoint_url, s3_server.bucket, prefix).store)
    root = direct.key("many") + "/"
    keys = [f"{root}{i:05d}/obj" for i in range(MANY)]
    _put_many(direct, keys)
    direct.put(direct.key("outside"), b"not under the prefix")
    # Listed through the proxy, whose log shows each ListObjectsV2 request.
    with FaultProxy(s3_server.endpoint_url) as proxy:
        s3 = S3(proxied_pipeline(s3_server, prefix, proxy).store)

        listed = list(s3.list_objects(root))
        lists = [p for m, p, _ in proxy.log if m == "GET" and "list-type=2" in p]
        assert len(lists) == 2, lists  # 1000 + 5: it really went page by page
        assert [o.key for o in listed] == keys
        assert all(o.size == len(o.key.encode()) and o.etag and o.last_modified for o in listed)
        assert list(s3.list_keys(root)) == keys

        after = list(s3.list_keys(root, start_after=keys[499]))
        assert after == keys[500:]

        proxy.log.clear()
        assert s3.list_folders(root) == {f"{i:05d}" for i in range(MANY)}
        lists = [p for m, p, _ in proxy.log if m == "GET" and "list-type=2" in p]
        assert len(lists) == 2 and all("delimiter=%2F" in p for p in lists), lists
        assert s3.list_folders(s3.key("nothing-here") + "/") == set()


def test_head_returns_the_servers_sha256_checksum(s3: S3) -> None:
    body = b"content-addressed bytes" * 1000
    key = s3.key("blob")
    etag = s3.put(key, body, metadata={"sha256": hashlib.sha256(body).hexdigest()})
    head = s3.head(key)
    assert head is not None
    assert head.checksum_sha256 == base64.b64encode(hashlib.sha256(body).digest()).decode()
    assert Digest("sha256:" + base64.b64decode(head.checksum_sha256).hex()) == Digest.of_bytes(body)
    assert (head.size, head.etag) == (len(body), etag)
    assert head.metadata == {"sha256": hashlib.sha256(body).hexdigest()}
    (listed,) = s3.list_objects(key)
    assert (listed.size, listed.etag) == (head.size, head.etag)


def test_missing_key_is_none_for_get_head_stream_and_a_no_op_for_delete(s3: S3) -> None:
    key = s3.key("never-written")
    assert s3.get(key) is None  # SeaweedFS: NoSuchKey
    assert s3.get_with_etag(key) is None
    assert s3.stream(key, 1024) is None
    assert s3.head(key) is None  # a bare 404: HEAD has no body
    s3.delete(key)  # 204
    assert list(s3.list_keys(key)) == []


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE"])
def test_a_bare_404_means_not_found_for_every_operation(method: str, s3_server: LocalS3, prefix: str) -> None:
    """The answer without a body (code "404"), as HEAD always gives and proxies may: the same
    path as NoSuchKey, for GET and streaming GET too (stream() once matched "NoSuchKey" in the
    message and raised on this), and "already gone" for DELETE (AWS answers a conditional DELETE
    of a missing key 404)."""
    with FaultProxy(s3_server.endpoint_url) as proxy:
        s3 = S3(proxied_pipeline(s3_server, prefix, proxy).store)
        key = s3.key("there")
        etag = s3.put(key, b"bytes")
        proxy.add(Rule(method, r"/there$", "status", status=404, times=-1))
        if method == "GET":
            assert s3.get(key) is None
            assert s3.get_with_etag(key) is None
            assert s3.stream(key, 1024) is None
        elif method == "HEAD":
            assert s3.head(key) is None
        else:
            s3.delete(key, if_match=etag)
            s3.delete(key)
        proxy.rules.clear()
        still = s3.get(key)
    # Nothing the client did changed the object: the proxy answered, the server never saw it.
    assert still == b"bytes"


def test_a_missing_bucket_is_bucket_not_found_never_a_missing_key(s3_server: LocalS3, prefix: str) -> None:
    s3 = S3(make_pipeline(s3_server.endpoint_url, "no-such-bucket-here", prefix).store)
    key = s3.key("k")
    for op in (lambda: s3.get(key), lambda: s3.stream(key, 1024), lambda: s3.delete(key)):
        with pytest.raises(BucketNotFound, match="'no-such-bucket-here' does not exist"):
            op()
    with pytest.raises(BucketNotFound):
        list(s3.list_objects(key))
    # HEAD bucket answers a bare 404 (no body to say NoSuchBucket in).
    with pytest.raises(BucketNotFound):
        s3.check_bucket()
    S3(make_pipeline(s3_server.endpoint_url, s3_server.bucket, prefix).store).check_bucket()


def _client_error(code: str, status: int) -> ClientError:
    # The parsed answer botocore raises with, as it parses it from the wire (only what is read).
    response: Any = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "Op")


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("NoSuchKey", 404, True),
        ("404", 404, True),
        ("NotFound", 404, True),
        ("", 404, True),
        ("NoSuchBucket", 404, False),
        ("AccessDenied", 403, False),
        ("PreconditionFailed", 412, False),
        ("InternalError", 500, False),
    ],
)
def test_is_not_found_is_the_one_test(code: str, status: int, expected: bool) -> None:
    assert is_not_found(_client_error(code, status)) is expected


def test_the_ledger_and_the_store_own_their_layouts(store: ArtifactStore) -> None:
    led: Ledger = store.ledger
    d = Digest.of_bytes(b"x")
    for _ in range(3):
        led.append("api", "published", d, actor="ci")
    led.append("web", "published", d, actor="ci")
    assert led.services() == {"api", "web"}
    raw = led.read_range_raw("api", 0, 4)
    assert [s for s, _ in raw] == [1, 2, 3, 4] and raw[3][1] is None  # 4 was never written
    assert [Digest.of_bytes(b) for _, b in raw[:2] if b] == [r.prev for r in led.read_range("api", 2, 3)]
    assert store.blob_key(d).startswith(store.blob_prefix())
    assert store.artifact_services() == set()
