"""The CLI as users run it: a subprocess, real exit codes, real stdout/stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from promotion.config import load_pipeline
from promotion.digest import Digest
from promotion.local_s3 import LocalS3
from promotion.store import ArtifactStore
from tests.conftest import PIPELINE_TEMPLATE
from tests.faultproxy import FaultProxy, Rule


def promote(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "promotion.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PROMOTION_S3_MAX_ATTEMPTS": "2", **(env or {})},
        timeout=120,
    )


def assert_one_line_error(r: subprocess.CompletedProcess[str], cls: str, code: int) -> None:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith(f"{cls}: "), r.stderr


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    p = tmp_path / "app.tar.gz"
    p.write_bytes(os.urandom(50_000))
    return p


def test_publish_prints_the_digest_then_status_and_history(
    config_file: Path, artifact: Path, tmp_path: Path
) -> None:
    junit = tmp_path / "junit.xml"
    junit.write_text("<testsuite tests='1'/>")
    r = promote(
        "-c", str(config_file), "publish", str(artifact), "--service", "api", "--version", "1.2.3",
        "--evidence", f"junit={junit}", "--commit", "deadbeef", "--build-url", "https://ci/9",
        "--as", "ci-bot",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    digest = Digest.of_bytes(artifact.read_bytes())
    assert r.stdout == f"{digest}\n"
    assert "published: api 1.2.3" in r.stderr

    again = promote("-c", str(config_file), "publish", str(artifact), "-s", "api", "--version", "1.2.3",
                    "-e", f"junit={junit}", "--commit", "deadbeef",
                    "--build-url", "https://ci/9")  # fmt: skip
    assert again.returncode == 0 and again.stdout == f"{digest}\n"
    assert "already published" in again.stderr and "0 bytes uploaded" in again.stderr

    st = promote("-c", str(config_file), "status", "--json")
    assert st.returncode == 0, st.stderr
    rows = json.loads(st.stdout)
    latest = [r for r in rows if r["service"] == "api" and r["environment"] == "(latest published)"]
    assert latest[0]["digest"] == digest and latest[0]["version"] == "1.2.3" and latest[0]["by"] == "ci-bot"
    assert {r["environment"] for r in rows if r["service"] == "api"} == {
        "dev", "staging", "prod", "(latest published)"
    }  # fmt: skip

    table = promote("-c", str(config_file), "status", "--service", "api")
    assert table.returncode == 0 and digest in table.stdout

    hist = promote("-c", str(config_file), "history", "api", "--json")
    events = json.loads(hist.stdout)
    assert [(e["seq"], e["event"], e["digest"], e["actor"]) for e in events] == [
        (1, "published", digest, "ci-bot")
    ]
    assert promote("-c", str(config_file), "history", "api").returncode == 0

    ver = promote("-c", str(config_file), "ledger", "verify")
    assert ver.returncode == 0 and "ok      api: 1 records" in ver.stdout

    chk = promote("-c", str(config_file), "verify", digest, "--full")
    assert chk.returncode == 0 and "every byte re-hashed" in chk.stdout


def test_ledger_verify_exits_1_naming_the_record(config_file: Path, artifact: Path) -> None:
    pipeline = load_pipeline(config_file)
    store = ArtifactStore(pipeline)
    for v in ("1", "2", "3"):
        store.ledger.append(
            "api", "promoted", Digest.of_bytes(v.encode()), actor="x", environment="dev", version=v
        )
    store.s3.delete(store.ledger._key("api", 2))
    r = promote("-c", str(config_file), "ledger", "verify", "api")
    assert r.returncode == 1
    assert "BROKEN  api" in r.stdout and "record 2 is missing (deleted)" in r.stdout
    assert_one_line_error(r, "LedgerCorrupt", 1)
    j = promote("-c", str(config_file), "ledger", "verify", "--json")
    assert j.returncode == 1
    by_service = {x["service"]: x for x in json.loads(j.stdout)}
    assert by_service["api"]["ok"] is False and by_service["web"]["ok"] is True


@pytest.mark.parametrize(
    ("args", "cls"),
    [
        (["publish", "{artifact}", "--service", "nope"], "UnknownService"),
        (["publish", "/nonexistent.bin", "--service", "api"], "UsageError"),
        (["publish", "{artifact}", "--service", "api", "--evidence", "junit"], "EvidenceError"),
        (["verify", "sha256:1234"], "InvalidDigest"),
        (["history", "api", "--env", "qa"], "UnknownEnvironment"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    config_file: Path, artifact: Path, args: list[str], cls: str
) -> None:
    r = promote("-c", str(config_file), *[a.format(artifact=artifact) for a in args])
    assert_one_line_error(r, cls, 2)


def test_usage_errors_exit_2(config_file: Path, artifact: Path) -> None:
    r = promote("-c", str(config_file), "publish", str(artifact))  # --service missing
    assert r.returncode == 2 and "--service" in r.stderr and "Traceback" not in r.stderr
    assert promote("frobnicate").returncode == 2


def test_config_validate(tmp_path: Path) -> None:
    good = Path(__file__).resolve().parents[2] / "promotion.yaml"
    r = promote("config", "validate", str(good))
    assert r.returncode == 0 and "dev → staging → prod" in r.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "store: {bucket: artifacts}\nservices: [{name: api}]\n"
        "environments: [{name: dev, gates: [{kind: x}]}]\n"
    )
    r = promote("config", "validate", str(bad))
    assert r.returncode == 2
    assert r.stderr.startswith(f"ConfigError: {bad}: environments[0](dev).gates[0]: unknown gate kind 'x'")
    r = promote("-c", str(tmp_path / "none.yaml"), "status")
    assert_one_line_error(r, "ConfigError", 2)


def test_unreachable_server_exits_1_with_one_line(tmp_path: Path, artifact: Path) -> None:
    cfg = tmp_path / "p.yaml"
    cfg.write_text(PIPELINE_TEMPLATE.format(endpoint="http://127.0.0.1:9", bucket="promotion", prefix="x"))
    for args in (
        ["status"],
        ["publish", str(artifact), "-s", "api"],
        ["ledger", "verify"],
        ["history", "api"],
    ):
        r = promote("-c", str(cfg), *args)
        assert_one_line_error(r, "StoreUnreachable", 1)
        assert "cannot reach the S3 endpoint http://127.0.0.1:9/" in r.stderr


def test_a_failed_publish_loses_nothing_and_can_be_rerun(
    s3_server: LocalS3, prefix: str, tmp_path: Path, artifact: Path
) -> None:
    with FaultProxy(s3_server.endpoint_url) as proxy:
        cfg = tmp_path / "p.yaml"
        cfg.write_text(PIPELINE_TEMPLATE.format(endpoint=proxy.url, bucket=s3_server.bucket, prefix=prefix))
        proxy.rules.append(Rule("PUT", r"/ledger/", "status", status=503, times=-1))
        r = promote("-c", str(cfg), "publish", str(artifact), "-s", "api", "--version", "1")
        # A 503 after botocore's retries: an infrastructure error (StoreError's StoreUnavailable).
        assert_one_line_error(r, "StoreUnavailable", 1)
        store = ArtifactStore(load_pipeline(cfg))
        digest = Digest.of_bytes(artifact.read_bytes())
        assert store.find_record("api", digest) is None  # no half-published artifact
        assert store.ledger.records("api") == []
        proxy.rules.clear()
        r = promote("-c", str(cfg), "publish", str(artifact), "-s", "api", "--version", "1")
        assert r.returncode == 0 and r.stdout == f"{digest}\n"
        assert len(store.ledger.records("api")) == 1


def test_s3_commands_do_not_import_prefect(config_file: Path, artifact: Path) -> None:
    digest = str(Digest.of_bytes(artifact.read_bytes()))
    code = (
        "import sys\n"
        "from promotion.cli import main\n"
        f"for args in (['publish', {str(artifact)!r}, '-s', 'api', '--version', '1'],\n"
        f"             ['verify', {digest!r}], ['plan', 'api', {digest!r}],\n"
        "             ['status'], ['history', 'api'], ['ledger', 'verify'], ['config', 'validate'],\n"
        "             ['pending'], ['metrics'], ['metrics', '--json', '-s', 'api'],\n"
        f"             ['report', '-o', {str(config_file.parent / 'report.html')!r}],\n"
        f"             ['attest', 'api', {digest!r}, '-e', 'other=' + {str(artifact)!r}]):\n"
        "    try:\n"
        f"        main(['-c', {str(config_file)!r}, *args])\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, (args, e.code)\n"
        "print('prefect' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "False"
