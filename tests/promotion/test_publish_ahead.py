"""The upload that ``promote`` starts before its CLI is imported (promotion/publish_ahead.py).

What is promised: it changes when the parts are sent, never what is stored or what is decided.
The store adopts it only when it goes where the validated pipeline says, under the digest's key,
for the file as it was hashed; every other case (a refused publish, another store, a part that
failed) aborts it, leaves no incomplete upload behind, and stores exactly what a publish without
it stores. The argument and config reading it does by itself agrees with the CLI's.

Against the real SeaweedFS (fixtures ``s3_server`` / ``store``), through the fault proxy where the
requests are counted or a fault is needed, and with real ``promote`` processes.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer

from promotion import cli
from promotion import store as store_mod
from promotion.config import load_pipeline
from promotion.digest import Digest
from promotion.local_s3 import LocalS3
from promotion.models import Provenance
from promotion.publish_ahead import (
    PUBLISH_FLAGS,
    PUBLISH_VALUE_OPTIONS,
    PublishAhead,
    StoreTarget,
    publish_args,
    speculative_target,
    start,
    target_of,
)
from promotion.settings import settings
from promotion.store import ArtifactStore
from tests.faultproxy import FaultProxy, Rule, proxied_pipeline
from tests.promotion.test_publish_faults import config_for, random_file

PROMOTE = str(Path(sys.executable).with_name("promote"))
PROV = Provenance(commit="abc123", build_url="https://ci.example/1", published_by="ci-bot")
MiB = 1024 * 1024
#: Three parts: two whole, one short.
SIZE = 2 * store_mod.PART_SIZE + 3 * MiB
ONE_LINE_ERROR = re.compile(r"^[A-Z][A-Za-z]+: \S.*\n?$")


@pytest.fixture
def proxy(s3_server: LocalS3) -> Iterator[FaultProxy]:
    with FaultProxy(s3_server.endpoint_url) as p:
        yield p


def big_file(path: Path) -> Path:
    return random_file(path, SIZE)


def config_at(tmp_path: Path, endpoint: str, s3_server: LocalS3, prefix: str) -> Path:
    return config_for(tmp_path, endpoint, s3_server, prefix, "p.yaml")


def blob_requests(proxy: FaultProxy) -> list[tuple[str, str]]:
    """(method, what) of every request the proxy forwarded for a blob key, in order."""
    out = []
    for method, path, _status in list(proxy.log):
        if "/blobs/sha256/" not in path:
            continue
        if "?uploads" in path:
            what = "create"
        elif "partNumber=" in path:
            what = "part"
        elif "uploadId=" in path:
            what = "abort" if method == "DELETE" else "complete"
        else:
            what = "object"
        out.append((method, what))
    return out


def incomplete_uploads(s3_server: LocalS3, prefix: str) -> list[str]:
    """The keys of the multipart uploads under ``prefix`` that were neither completed nor aborted."""
    listed = s3_server.client().list_multipart_uploads(Bucket=s3_server.bucket, Prefix=prefix)
    return [u.get("Key", "?") for u in listed.get("Uploads", [])]


# -- the arguments and the config, read without the CLI --------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["publish", "f.bin", "--service", "api"], (None, "f.bin")),
        (["-c", "p.yaml", "publish", "--service=api", "f.bin", "--json"], ("p.yaml", "f.bin")),
        (["--config=p.yaml", "publish", "-sapi", "-e", "junit=x.xml", "f.bin"], ("p.yaml", "f.bin")),
        (["publish", "--service", "api", "--follow-symlinks", "--as", "bot", "f.bin"], (None, "f.bin")),
        (["publish", "--service", "api", "--", "-odd.bin"], (None, "-odd.bin")),
        (["publish", "--service", "publish", "f.bin"], (None, "f.bin")),
    ],
)
def test_a_publish_is_recognised_from_its_arguments(
    argv: list[str], expected: tuple[str | None, str]
) -> None:
    assert publish_args(argv) == (expected[0], Path(expected[1]))


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["status", "api"],
        ["publish"],
        ["publish", "--help"],
        ["publish", "a.bin", "b.bin"],
        ["publish", "--service"],
        ["publish", "--service", "api", "f.bin", "--version"],
        ["publish", "--no-such-option", "f.bin"],
        ["-x", "publish", "f.bin"],
        ["--install-completion", "publish", "f.bin"],
        ["publish", "-Xvalue", "f.bin"],
    ],
)
def test_anything_else_is_left_to_the_cli(argv: list[str]) -> None:
    assert publish_args(argv) is None


def test_the_options_it_knows_are_the_publish_commands_own() -> None:
    """If publish gains an option, this module must learn whether it takes a value."""
    command = typer.main.get_command(cli.app)
    assert isinstance(command, typer.core.TyperGroup)
    publish = command.commands["publish"]
    takes_value: set[str] = set()
    flags: set[str] = set()
    for param in publish.params:
        if param.param_type_name != "option":
            continue
        names = {*param.opts, *param.secondary_opts}
        (flags if getattr(param, "is_flag", False) else takes_value).update(names)
    flags.discard("--help")
    assert takes_value == PUBLISH_VALUE_OPTIONS
    assert flags == PUBLISH_FLAGS
    root = {n for p in command.params for n in (*p.opts, *p.secondary_opts)}
    assert root - {"--help", "--install-completion", "--show-completion"} == {"--config", "-c"}


STORES = {
    "plain": ("store:\n  endpoint_url: http://127.0.0.1:9000\n  bucket: bkt\n", {}),
    "slash and prefix": (
        "store:\n  endpoint_url: http://127.0.0.1:9000/\n  bucket: bkt\n  prefix: /a/b\n"
        "  region: eu-west-1\n",
        {},
    ),
    "aws": ("store:\n  bucket: bkt\n  prefix: p/\n", {}),
    "env overrides": (
        "store:\n  endpoint_url: http://127.0.0.1:9000\n  bucket: bkt\n",
        {
            "PROMOTION_S3_ENDPOINT_URL": "http://127.0.0.1:9999",
            "PROMOTION_S3_BUCKET": "other-bkt",
            "PROMOTION_S3_PREFIX": "x",
            "PROMOTION_S3_REGION": "ap-south-1",
            "PROMOTION_S3_MAX_ATTEMPTS": "3",
        },
    ),
}


@pytest.mark.parametrize("case", list(STORES))
@pytest.mark.parametrize("named_by", ["--config", "PROMOTION_CONFIG"])
def test_the_store_read_ahead_is_the_store_the_cli_validates(
    case: str, named_by: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text, env = STORES[case]
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(text + "services:\n  - name: api\nenvironments:\n  - name: dev\n")
    for k in [k for k in os.environ if k.upper().startswith("PROMOTION_")]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    if named_by == "PROMOTION_CONFIG":
        monkeypatch.setenv("PROMOTION_CONFIG", str(cfg))
    ahead = speculative_target(str(cfg) if named_by == "--config" else None, os.environ)
    validated = target_of(
        load_pipeline(str(cfg) if named_by == "--config" else None).store, settings().s3_max_attempts
    )
    assert ahead is not None and ahead == validated


@pytest.mark.parametrize(
    ("text", "env"),
    [
        ("store:\n  bucket: bkt\n  credentials_block: promotion-s3-credentials/ci\n", {}),
        ("store:\n  bucket: bkt\n", {"promotion_s3_bucket": "lower-case-is-read-by-pydantic-settings"}),
        ("store: [not, a, mapping]\n", {}),
        ("store:\n  bucket: bkt\n", {"PROMOTION_S3_MAX_ATTEMPTS": "many"}),
        ("{unclosed", {}),
    ],
)
def test_a_store_it_cannot_read_plainly_gets_no_upload_ahead(
    text: str, env: dict[str, str], tmp_path: Path
) -> None:
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(text)
    assert speculative_target(str(cfg), env) is None
    assert speculative_target(str(tmp_path / "missing.yaml"), {}) is None


def test_a_validated_store_with_its_own_credentials_is_never_a_target(config_file: Path) -> None:
    store = load_pipeline(str(config_file)).store.model_copy(update={"credentials_block": "ci"})
    assert target_of(store, 5) is None


# -- in one process, against the real server ---------------------------------------------------------


def test_the_store_adopts_the_upload_started_ahead_and_sends_nothing_twice(
    tmp_path: Path, s3_server: LocalS3, prefix: str, proxy: FaultProxy
) -> None:
    path = big_file(tmp_path / "app.bin")
    cfg = config_at(tmp_path, proxy.url, s3_server, prefix)
    ahead = start(["-c", str(cfg), "publish", str(path), "--service", "api"])
    assert ahead is not None
    store = ArtifactStore(proxied_pipeline(s3_server, prefix, proxy))
    seen: list[int] = []
    try:
        result = store.publish(
            path,
            service="api",
            version="1",
            provenance=PROV,
            hashed=ahead.hashed,
            ahead=ahead,
            progress=seen.append,
        )
        assert ahead.adopted
        assert store.s3.client is ahead.client  # one client, made ahead, not a second one
    finally:
        ahead.close()
    digest = Digest.of_bytes(path.read_bytes())
    assert result.digest == digest and result.uploaded_bytes == SIZE and sum(seen) == SIZE
    requests = blob_requests(proxy)
    assert [w for _, w in requests].count("create") == 1
    assert [w for _, w in requests].count("part") == 3
    assert [w for _, w in requests].count("complete") == 1
    assert "abort" not in [w for _, w in requests]
    body = store.s3.get(store.blob_key(digest))
    assert body is not None and hashlib.sha256(body).hexdigest() == digest.hex
    assert incomplete_uploads(s3_server, prefix) == []


def test_an_upload_ahead_to_another_store_is_aborted_and_the_store_uploads_itself(
    tmp_path: Path, s3_server: LocalS3, prefix: str, proxy: FaultProxy, store: ArtifactStore
) -> None:
    path = big_file(tmp_path / "app.bin")
    other = f"{prefix}elsewhere/"
    ahead = start(["-c", str(config_at(tmp_path, proxy.url, s3_server, other)), "publish", str(path)])
    assert ahead is not None
    ahead.started.wait(60)
    try:
        result = store.publish(
            path, service="api", version="1", provenance=PROV, hashed=ahead.hashed, ahead=ahead
        )
        assert not ahead.adopted
    finally:
        ahead.close()
    assert result.uploaded_bytes == SIZE
    body = store.s3.get(store.blob_key(result.digest))
    assert body is not None and hashlib.sha256(body).hexdigest() == result.digest.hex
    # The parts sent ahead, under the other prefix, were aborted: nothing is left there.
    assert [w for _, w in blob_requests(proxy)][-1] == "abort"
    assert incomplete_uploads(s3_server, other) == []
    assert s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix=other).get("KeyCount") == 0


def test_a_part_that_failed_ahead_is_sent_again_by_the_store(
    tmp_path: Path, s3_server: LocalS3, prefix: str, proxy: FaultProxy
) -> None:
    path = big_file(tmp_path / "app.bin")
    # A 400 is not retried by botocore: the part sent ahead fails for good, once.
    proxy.add(Rule("PUT", r"/blobs/sha256/[0-9a-f]{64}\?\S*partNumber=2\b", "status", status=400))
    ahead = start(["-c", str(config_at(tmp_path, proxy.url, s3_server, prefix)), "publish", str(path)])
    assert ahead is not None
    store = ArtifactStore(proxied_pipeline(s3_server, prefix, proxy))
    try:
        result = store.publish(
            path, service="api", version="1", provenance=PROV, hashed=ahead.hashed, ahead=ahead
        )
    finally:
        ahead.close()
    whats = [w for _, w in blob_requests(proxy)]
    assert whats.count("create") == 2 and whats.count("abort") == 1 and whats.count("complete") == 1, (
        proxy.log
    )
    body = store.s3.get(store.blob_key(result.digest))
    assert body is not None and hashlib.sha256(body).hexdigest() == result.digest.hex
    assert incomplete_uploads(s3_server, prefix) == []
    assert [r.event for r in store.ledger.records("api")] == ["published"]


# -- whole processes ---------------------------------------------------------------------------------


def test_a_promote_publish_process_sends_the_parts_before_its_cli_checks_the_blob(
    tmp_path: Path, s3_server: LocalS3, prefix: str, proxy: FaultProxy, store: ArtifactStore
) -> None:
    path = big_file(tmp_path / "app.bin")
    cfg = config_at(tmp_path, proxy.url, s3_server, prefix)
    r = subprocess.run(
        [PROMOTE, "-c", str(cfg), "publish", str(path), "--service", "api"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    digest = Digest.of_bytes(path.read_bytes())
    assert r.stdout.strip() == str(digest)
    whats = [w for _, w in blob_requests(proxy)]
    # The executable's HEAD and CreateMultipartUpload come first; the CLI's own HEAD of the blob
    # (its "already there?") comes after the upload began: it adopted that upload, not a new one.
    assert whats[:2] == ["object", "create"], whats
    assert whats.count("create") == 1 and whats.count("object") == 2 and "abort" not in whats
    assert whats[-1] == "complete"
    record = store.find_record("api", digest)
    assert record is not None and record.size == SIZE
    assert incomplete_uploads(s3_server, prefix) == []


@pytest.mark.parametrize("refusal", ["unknown service", "invalid evidence", "not its stack"])
def test_a_refused_publish_aborts_what_it_sent_ahead_and_stores_nothing(
    refusal: str, tmp_path: Path, s3_server: LocalS3, prefix: str, proxy: FaultProxy, store: ArtifactStore
) -> None:
    path = big_file(tmp_path / "app.bin")
    bad = tmp_path / "junit.xml"
    bad.write_bytes(os.urandom(512))
    extra = {
        "unknown service": ["--service", "nope"],
        "invalid evidence": ["--service", "api", "--evidence", f"junit={bad}"],
        "not its stack": ["--service", "api", "--stack", "wheel"],
    }[refusal]
    cfg = config_at(tmp_path, proxy.url, s3_server, prefix)
    # Slow parts: the refusal comes while parts sent ahead are still in flight.
    proxy.add(Rule("PUT", r"partNumber=", "delay", delay_s=0.5, times=-1))
    r = subprocess.run(
        [PROMOTE, "-c", str(cfg), "publish", str(path), *extra],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 2, r.stderr
    assert ONE_LINE_ERROR.match(r.stderr), r.stderr
    digest = Digest.of_bytes(path.read_bytes())
    whats = [w for _, w in blob_requests(proxy)]
    assert "create" in whats and whats[-1] == "abort" and "complete" not in whats, whats
    assert incomplete_uploads(s3_server, prefix) == []
    assert store.s3.head(store.blob_key(digest)) is None
    assert store.find_record("api", digest) is None
    assert store.ledger.records("api") == []


def test_a_small_file_or_another_command_starts_nothing_ahead(tmp_path: Path, config_file: Path) -> None:
    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(1024))
    assert start(["-c", str(config_file), "publish", str(small), "--service", "api"]) is None
    assert start(["-c", str(config_file), "status", "api"]) is None
    assert start(["-c", str(config_file), "publish", str(tmp_path / "missing.bin")]) is None


def test_a_store_target_names_the_blob_key_the_store_uses(store: ArtifactStore) -> None:
    target = target_of(store.pipeline.store, settings().s3_max_attempts)
    assert isinstance(target, StoreTarget)
    digest = Digest.of_bytes(b"x")
    assert target.blob_key(digest) == store.blob_key(digest)


def test_close_without_adoption_leaves_no_upload_and_closes_the_file(
    tmp_path: Path, s3_server: LocalS3, prefix: str, config_file: Path
) -> None:
    path = big_file(tmp_path / "app.bin")
    ahead = start(["-c", str(config_file), "publish", str(path)])
    assert isinstance(ahead, PublishAhead)
    ahead.started.wait(60)
    assert ahead.upload_id is not None
    fd = ahead.hashed.fd
    ahead.close()
    assert incomplete_uploads(s3_server, prefix) == []
    with pytest.raises(OSError):
        os.fstat(fd)
