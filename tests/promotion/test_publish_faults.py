"""Publish under S3 faults, through the real reverse proxy in front of the session's SeaweedFS.

What is promised: a publish either completes or fails with one line and exit 1; a re-run
converges; a lost response never turns a first publish into "already published" nor duplicates a
``published`` ledger event; a file modified between the hash pass and the upload pass is refused
and nothing is stored under its name; memory stays bounded whatever the file size.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from promotion import store as store_mod
from promotion.cli import exit_code_for
from promotion.config import Pipeline
from promotion.digest import Digest
from promotion.errors import FileChangedDuringPublish, PromotionError
from promotion.local_s3 import LocalS3
from promotion.models import Provenance
from promotion.store import ArtifactStore, parse_evidence
from tests.conftest import PIPELINE_TEMPLATE
from tests.faultproxy import FaultProxy, Rule, proxied_pipeline

PROMOTE = str(Path(sys.executable).with_name("promote"))
PROV = Provenance(commit="abc123", build_url="https://ci.example/1", published_by="ci-bot")
MiB = 1024 * 1024
ONE_LINE_ERROR = re.compile(r"^[A-Z][A-Za-z]+: \S.*\n?$")
JUNIT = Path(__file__).resolve().parents[2] / "examples" / "evidence" / "junit.xml"


@pytest.fixture
def proxy(s3_server: LocalS3) -> Iterator[FaultProxy]:
    with FaultProxy(s3_server.endpoint_url) as p:
        yield p


@pytest.fixture
def proxied(s3_server: LocalS3, prefix: str, proxy: FaultProxy) -> Pipeline:
    return proxied_pipeline(s3_server, prefix, proxy)


def config_for(tmp_path: Path, endpoint: str, s3_server: LocalS3, prefix: str, name: str) -> Path:
    path = tmp_path / name
    path.write_text(PIPELINE_TEMPLATE.format(endpoint=endpoint, bucket=s3_server.bucket, prefix=prefix))
    return path


def promote(cfg: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMOTE, "-c", str(cfg), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def published_events(store: ArtifactStore, service: str) -> Counter[Digest]:
    return Counter(r.digest for r in store.ledger.records(service) if r.event == "published")


def random_file(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        left = size
        while left:
            f.write(os.urandom(min(left, 4 * MiB)))
            left -= min(left, 4 * MiB)
    return path


# -- the proxy's faults, one by one ---------------------------------------------------------------


@pytest.mark.parametrize("action", ["slowdown", "reset", "delay", "drop_response", "status"])
def test_each_fault_on_an_upload_part_is_retried_and_the_blob_is_intact(
    action: str, tmp_path: Path, proxy: FaultProxy, proxied: Pipeline, store: ArtifactStore
) -> None:
    rule = proxy.add(Rule("PUT", r"/blobs/sha256/[0-9a-f]{64}\?.*partNumber=2", action, times=2, delay_s=0.3))
    f = random_file(tmp_path / "big.bin", store_mod.MULTIPART_THRESHOLD + MiB)
    result = ArtifactStore(proxied).publish(f, service="api", version="1", provenance=PROV)
    tries = 1 if action == "delay" else 2  # a delayed request is answered: nothing to retry
    assert rule.hits == tries and proxy.stats[action] == tries
    assert store.verify_full(result.digest).method == "full"
    if action in ("slowdown", "status"):
        assert sum(1 for m, p, st in proxy.log if m == "PUT" and "partNumber=2" in p and st == 503) == 2


def test_a_lost_response_to_complete_multipart_upload_is_not_a_failure(
    tmp_path: Path, proxy: FaultProxy, proxied: Pipeline, store: ArtifactStore
) -> None:
    # The upload is completed, its answer lost; botocore's retry finds the upload gone (or the
    # key taken): the key holds our digest's bytes, so the publish goes on.
    rule = proxy.add(Rule("POST", r"/blobs/sha256/[0-9a-f]{64}\?uploadId=", "drop_response"))
    f = random_file(tmp_path / "big.bin", store_mod.MULTIPART_THRESHOLD + MiB)
    result = ArtifactStore(proxied).publish(f, service="api", version="1", provenance=PROV)
    assert rule.hits == 1 and not result.already_published and result.uploaded_bytes == f.stat().st_size
    assert store.verify_full(result.digest).method == "full"
    assert store.verify_cheap(result.digest, result.record.s3_checksum).method == "checksum"


def test_hold_then_reset_fails_the_request_in_one_line(
    tmp_path: Path, proxy: FaultProxy, proxied: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMOTION_S3_MAX_ATTEMPTS", "1")  # a setting, read when the client is made
    rule = proxy.add(Rule("PUT", r"/blobs/", "hold", then="reset"))
    outcome: list[PromotionError] = []

    def run() -> None:
        try:
            ArtifactStore(proxied).publish(
                random_file(tmp_path / "a", 10), service="api", version="1", provenance=PROV
            )
        except PromotionError as exc:
            outcome.append(exc)

    t = threading.Thread(target=run)
    t.start()
    rule.wait_arrived(30)
    rule.release()
    t.join(60)
    assert len(outcome) == 1 and exit_code_for(outcome[0]) == 1 and "\n" not in str(outcome[0]), outcome


# -- a lost response -------------------------------------------------------------------------------


def test_lost_response_on_the_record_put_is_still_a_first_publish(
    tmp_path: Path, s3_server: LocalS3, prefix: str, proxy: FaultProxy, store: ArtifactStore
) -> None:
    # The record PUT lands, its response is dropped; botocore retries and meets our own record.
    rule = proxy.add(Rule("PUT", r"/artifacts/api/sha256/[0-9a-f]{64}\.json", "drop_response"))
    cfg = config_for(tmp_path, proxy.url, s3_server, prefix, "proxied.yaml")
    f = random_file(tmp_path / "a.bin", 100_000)
    r = promote(cfg, "publish", str(f), "--service", "api", "--version", "1", "--evidence", f"junit={JUNIT}")
    assert r.returncode == 0, r.stderr
    assert rule.hits == 1
    assert "already published" not in r.stderr and r.stderr.startswith("published: api 1 ")
    digest = Digest(r.stdout.strip())
    assert published_events(store, "api") == {digest: 1}
    direct = config_for(tmp_path, s3_server.endpoint_url, s3_server, prefix, "direct.yaml")
    v = promote(direct, "ledger", "verify")
    assert v.returncode == 0, v.stdout + v.stderr


def test_lost_response_on_the_ledger_put_writes_one_published_event(
    tmp_path: Path, proxy: FaultProxy, proxied: Pipeline, store: ArtifactStore
) -> None:
    rule = proxy.add(Rule("PUT", r"/ledger/api/0+1\.json", "drop_response"))
    f = random_file(tmp_path / "a.bin", 50_000)
    result = ArtifactStore(proxied).publish(f, service="api", version="1", provenance=PROV)
    assert rule.hits == 1 and not result.already_published
    assert published_events(store, "api") == {result.digest: 1}
    assert store.ledger.verify("api").ok


def test_a_publish_that_died_after_its_ledger_event_converges_without_a_second_one(
    tmp_path: Path, proxy: FaultProxy, proxied: Pipeline, store: ArtifactStore
) -> None:
    # Every try of the record PUT fails: the publish fails after its ledger event landed.
    f = random_file(tmp_path / "a.bin", 50_000)
    hex_ = Digest.of_bytes(f.read_bytes()).hex
    rule = proxy.add(Rule("PUT", rf"/artifacts/api/sha256/{hex_}\.json", "status", status=503, times=-1))
    with pytest.raises(PromotionError) as exc:
        ArtifactStore(proxied).publish(f, service="api", version="1", provenance=PROV)
    assert exit_code_for(exc.value) == 1
    other = random_file(tmp_path / "b.bin", 10_000)
    ArtifactStore(proxied).publish(other, service="api", version="2", provenance=PROV)  # in between
    proxy.rules.remove(rule)
    again = ArtifactStore(proxied).publish(f, service="api", version="1", provenance=PROV)
    assert not again.already_published
    assert published_events(store, "api")[again.digest] == 1
    assert store.ledger.verify("api").ok


# -- a file that changes during publish ------------------------------------------------------------


def test_a_file_modified_between_the_hash_pass_and_the_upload_is_refused(
    tmp_path: Path, s3_server: LocalS3, prefix: str, proxy: FaultProxy, store: ArtifactStore
) -> None:
    size = store_mod.MULTIPART_THRESHOLD + 3 * MiB
    f = random_file(tmp_path / "big.bin", size)
    first_digest = Digest.of_bytes(f.read_bytes())
    # Hold the CreateMultipartUpload: pass 1 (the hash) is done, pass 2 has not read a byte yet.
    rule = proxy.add(Rule("POST", r"/blobs/sha256/[0-9a-f]{64}\?uploads", "hold"))
    cfg = config_for(tmp_path, proxy.url, s3_server, prefix, "proxied.yaml")
    victim = subprocess.Popen(
        [PROMOTE, "-c", str(cfg), "publish", str(f), "--service", "api"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        rule.wait_arrived(60)
        with f.open("r+b") as w:  # one byte in the second part, size unchanged
            w.seek(store_mod.PART_SIZE + 5)
            b = w.read(1)
            w.seek(store_mod.PART_SIZE + 5)
            w.write(bytes([b[0] ^ 0xFF]))
        rule.release()
        out, err = victim.communicate(timeout=120)
    finally:
        rule.release()
        if victim.poll() is None:
            victim.kill()
    assert victim.returncode == 1, err
    assert ONE_LINE_ERROR.match(err) and err.startswith("FileChangedDuringPublish: "), err
    assert out == ""
    assert store.s3.head(store.blob_key(first_digest)) is None
    assert store.find_record("api", first_digest) is None
    assert store.ledger.records("api") == []


def test_a_file_that_grows_while_it_is_hashed_is_refused(
    tmp_path: Path, proxy: FaultProxy, proxied: Pipeline, store: ArtifactStore
) -> None:
    size = store_mod.MULTIPART_THRESHOLD + MiB
    f = random_file(tmp_path / "big.bin", size)
    first_digest = Digest.of_bytes(f.read_bytes())
    rule = proxy.add(Rule("POST", r"\?uploads", "hold"))
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            ArtifactStore(proxied).publish(f, service="api", version="1", provenance=PROV)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    t = threading.Thread(target=run)
    t.start()
    rule.wait_arrived(60)
    with f.open("ab") as w:
        w.write(b"appended")
    rule.release()
    t.join(120)
    assert len(outcome) == 1 and isinstance(outcome[0], FileChangedDuringPublish), outcome
    assert "its size changed" in str(outcome[0])
    assert store.s3.head(store.blob_key(first_digest)) is None


# -- random faults ---------------------------------------------------------------------------------


def test_thirty_publishes_under_twenty_percent_random_faults_converge(
    tmp_path: Path,
    s3_server: LocalS3,
    prefix: str,
    proxy: FaultProxy,
    proxied: Pipeline,
    store: ArtifactStore,
) -> None:
    rng = random.Random(7)
    cfg = config_for(tmp_path, proxy.url, s3_server, prefix, "proxied.yaml")
    ev_other = random_file(tmp_path / "notes.bin", 2_000)
    jobs = []
    for i in range(30):
        big = i % 4 == 0  # 8 multipart files
        size = store_mod.MULTIPART_THRESHOLD + rng.randrange(1, 2 * MiB) if big else rng.randrange(0, 300_000)
        f = random_file(tmp_path / f"f{i}.bin", size)
        service = "api" if i % 2 else "web"
        jobs.append((i, f, service, i % 3 == 0))  # every third through the CLI
    proxy.random_faults(rate=0.2, seed=1234)

    def publish(i: int, f: Path, service: str, cli: bool) -> tuple[bool, str]:
        if cli:
            r = promote(
                cfg, "publish", str(f), "--service", service, "--version", str(i),
                "--evidence", f"junit={JUNIT}", "--evidence", f"other={ev_other}",
            )  # fmt: skip
            if r.returncode == 0:
                return True, r.stdout.strip()
            assert r.returncode == 1 and ONE_LINE_ERROR.match(r.stderr), (r.returncode, r.stderr)
            assert "Traceback" not in r.stderr
            return False, r.stderr
        ev = parse_evidence([f"junit={JUNIT}", f"other={ev_other}"])
        try:
            res = ArtifactStore(proxied).publish(
                f, service=service, version=str(i), provenance=PROV, evidence=ev
            )
        except PromotionError as exc:
            assert exit_code_for(exc) == 1 and "\n" not in str(exc), str(exc)
            return False, f"{type(exc).__name__}: {exc}"
        return True, str(res.digest)

    failed = []
    for job in jobs:
        ok, _ = publish(*job)
        if not ok:
            failed.append(job)
    faults = sum(proxy.stats.values())
    assert faults > 50 and set(proxy.stats) == {"slowdown", "reset", "drop_response", "delay"}, proxy.stats
    # A re-run of each failed one, faults still on, converges within a few tries.
    for job in failed:
        for _ in range(5):
            if publish(*job)[0]:
                break
        else:
            pytest.fail(f"publish {job} did not converge")
    proxy.random_faults(rate=0)

    expected = {Digest.of_bytes(f.read_bytes()): (service, str(i)) for i, f, service, _ in jobs}
    for service in ("api", "web"):
        events = published_events(store, service)
        mine = {d for d, (s, _) in expected.items() if s == service}
        assert set(events) == mine and all(n == 1 for n in events.values()), events
        assert store.ledger.verify(service).ok
        for d in mine:
            assert store.record(service, d).version == expected[d][1]
    blobs = list(store.s3.list_keys(store.s3.key("blobs", "sha256") + "/"))
    assert len(blobs) >= len(expected)
    for key in blobs:
        assert store.verify_full(Digest("sha256:" + key.rsplit("/", 1)[1])).method == "full"
    print(f"faults injected: {dict(proxy.stats)}; failed first time: {len(failed)}")


# -- memory ----------------------------------------------------------------------------------------

#: ``promote publish`` of a 300 MiB file: the old design (whole file in memory) peaked at ~330 MiB;
#: boto3 ``upload_file`` of 256 MiB peaks at ~80 MiB; streaming stays near the CLI's own footprint.
RSS_BOUND_MIB = 160


#: The measured process is the child of a small launcher: Linux counts the RSS a child had before
#: exec (a fork of pytest, hundreds of MiB by then) in its ``ru_maxrss``.
LAUNCHER = """
import os, subprocess, sys
p = subprocess.Popen(sys.argv[1:])
_, status, ru = os.wait4(p.pid, 0)
print(os.waitstatus_to_exitcode(status), ru.ru_maxrss, file=sys.stderr)
"""


def test_publish_of_a_large_file_stays_in_bounded_memory(tmp_path: Path, config_file: Path) -> None:
    f = random_file(tmp_path / "large.bin", 300 * MiB)
    cmd = [PROMOTE, "-c", str(config_file), "publish", str(f), "--service", "api"]
    r = subprocess.run(
        [sys.executable, "-S", "-c", LAUNCHER, *cmd], capture_output=True, text=True, timeout=300
    )
    code, maxrss_kib = (int(x) for x in r.stderr.strip().splitlines()[-1].split())
    assert code == 0, r.stderr
    peak_mib = maxrss_kib / 1024  # KiB on Linux
    assert peak_mib < RSS_BOUND_MIB, f"peak RSS {peak_mib:.0f} MiB for a 300 MiB file"
    assert r.stdout.strip() == str(Digest.of_stream(f.open("rb")))
