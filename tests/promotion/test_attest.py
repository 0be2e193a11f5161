"""Evidence that arrives later: ``promote attest``, re-publish attaches, newest evidence wins, the
sweep re-evaluates. Against the real SeaweedFS server; the CLI as a subprocess."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from promotion.config import Pipeline, load_pipeline, parse_pipeline
from promotion.digest import Digest
from promotion.errors import ArtifactNotFound, UnknownService
from promotion.evaluate import evaluate_stage
from promotion.local_s3 import LocalS3
from promotion.models import EvidenceRef, Provenance
from promotion.plan import plan
from promotion.s3 import S3, make_client
from promotion.store import ArtifactStore, parse_evidence
from promotion.sweep import sweep_service
from tests.faultproxy import FaultProxy, Rule

PIPELINE = """
store: {{endpoint_url: "{endpoint}", bucket: {bucket}, prefix: "{prefix}"}}
services: [{{name: api}}, {{name: web}}]
environments:
  - name: dev
  - name: staging
    gates:
      - {{kind: tests, max_failures: 0}}
      - {{kind: scan, max_findings: {{error: 0}}}}
  - name: prod
    gates:
      - {{kind: tests, max_failures: 0, max_age: 30d}}
"""
PROV = Provenance(commit="c0ffee", build_url="https://ci/1", published_by="ci")
LATER = Provenance(commit="c0ffee", build_url="https://ci/2", builder="nightly", published_by="rescan")


def junit(path: Path, name: str, failures: int, tests: int = 3) -> Path:
    cases = "".join(
        f'<testcase classname="{name}" name="t{i}">'
        + ('<failure message="boom">boom</failure>' if i < failures else "")
        + "</testcase>"
        for i in range(tests)
    )
    path.write_text(
        f'<testsuite name="{name}" tests="{tests}" failures="{failures}" errors="0">{cases}</testsuite>'
    )
    return path


def sarif(path: Path, errors: int) -> Path:
    results = [{"ruleId": "R1", "level": "error", "message": {"text": f"finding {i}"}} for i in range(errors)]
    log = {
        "version": "2.1.0",
        "runs": [{"tool": {"driver": {"name": "scanner", "rules": [{"id": "R1"}]}}, "results": results}],
    }
    path.write_text(json.dumps(log))
    return path


def text(endpoint: str, bucket: str, prefix: str) -> str:
    return PIPELINE.format(endpoint=endpoint, bucket=bucket, prefix=prefix)


@pytest.fixture
def gated(s3_server: LocalS3, prefix: str) -> Pipeline:
    return parse_pipeline(text(s3_server.endpoint_url, s3_server.bucket, prefix))


@pytest.fixture
def gstore(gated: Pipeline) -> ArtifactStore:
    return ArtifactStore(gated)


def publish(store: ArtifactStore, tmp_path: Path, *specs: str, version: str = "1.0") -> Digest:
    blob = tmp_path / f"app-{uuid.uuid4().hex[:8]}.bin"
    blob.write_bytes(os.urandom(4096))
    ev = parse_evidence(list(specs))
    return store.publish(blob, service="api", version=version, provenance=PROV, evidence=ev).digest


def attest(
    store: ArtifactStore, digest: Digest, *specs: str, prov: Provenance = LATER
) -> tuple[EvidenceRef, ...]:
    return store.attest("api", digest, parse_evidence(list(specs)), provenance=prov).attached


def stage(store: ArtifactStore, digest: Digest, env: str = "staging") -> dict[str, object]:
    gates = evaluate_stage(
        store, store.pipeline.environment(env), store.record("api", digest), None,
        dt.datetime.now(dt.UTC), previous_env="dev",
    )  # fmt: skip
    return {r.gate: r for r in gates.results}


def test_attest_then_the_gate_reads_the_newest_evidence(gstore: ArtifactStore, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    failing = junit(tmp_path / "a" / "report.xml", "unit", failures=1)
    clean_scan = sarif(tmp_path / "scan.sarif", errors=0)
    d = publish(gstore, tmp_path, f"junit={failing}", f"sarif={clean_scan}")
    before = stage(gstore, d)
    assert not before["tests"].passed and before["scan"].passed  # type: ignore[attr-defined]
    assert {s.environment: s.action for s in plan(gstore, "api", d).stages}["staging"] == "blocked"

    passing = junit(tmp_path / "b" / "report.xml", "unit", failures=0)
    [ref] = attest(gstore, d, f"junit={passing}")
    assert ref.filename == "report.xml" and ref.digest == Digest.of_bytes(passing.read_bytes())
    after = stage(gstore, d)
    tests = after["tests"]
    assert tests.passed, tests.reasons  # type: ignore[attr-defined]
    # The result names the file it read, its bytes, when and by whom it was attached, and how.
    [read] = tests.evidence  # type: ignore[attr-defined]
    assert read["filename"] == "report.xml" and read["digest"] == str(ref.digest)
    assert read["attached_by"] == "rescan" and read["how"].startswith("attested (ledger record ")
    # promote plan reads the same evidence through the same path.
    planned = plan(gstore, "api", d)
    assert {s.environment: s.action for s in planned.stages}["staging"] == "promote"
    # The artifact record itself is untouched: records are immutable.
    stored = [e.digest for e in gstore.record("api", d).evidence]
    assert stored == [Digest.of_bytes(failing.read_bytes()), Digest.of_bytes(clean_scan.read_bytes())]


def test_same_file_name_replaces_another_name_adds(gstore: ArtifactStore, tmp_path: Path) -> None:
    unit = junit(tmp_path / "unit.xml", "unit", failures=0)
    d = publish(gstore, tmp_path, f"junit={unit}")
    (tmp_path / "run1").mkdir()
    (tmp_path / "run2").mkdir()
    attest(gstore, d, f"junit={junit(tmp_path / 'run1' / 'integration.xml', 'integ', failures=2)}")
    tests = stage(gstore, d)["tests"]
    # Added beside the unit tests: both are read, the integration failures count.
    assert not tests.passed  # type: ignore[attr-defined]
    assert sorted(e["filename"] for e in tests.evidence) == ["integration.xml", "unit.xml"]  # type: ignore[attr-defined]
    assert tests.measured["tests"] == 6  # type: ignore[attr-defined]

    attest(gstore, d, f"junit={junit(tmp_path / 'run2' / 'integration.xml', 'integ', failures=0)}")
    tests = stage(gstore, d)["tests"]
    # The second integration.xml replaced the first; unit.xml stays.
    assert tests.passed, tests.reasons  # type: ignore[attr-defined]
    assert tests.measured["tests"] == 6  # type: ignore[attr-defined]
    # The state points at the newest attestation of each (kind, file name) only.
    st = gstore.ledger.state("api")
    records = [r for r in gstore.ledger.records("api") if r.event == "attested"]
    assert st.attested[str(d)] == {"junit:integration.xml": records[-1].seq}
    assert gstore.ledger.verify("api").ok


def test_max_age_counts_from_when_each_report_was_attached(gstore: ArtifactStore, tmp_path: Path) -> None:
    unit = junit(tmp_path / "report.xml", "unit", failures=0)
    d = publish(gstore, tmp_path, f"junit={unit}")
    created = gstore.record("api", d).created_at
    (tmp_path / "fresh").mkdir()
    fresh = junit(tmp_path / "fresh" / "report.xml", "unit", failures=0, tests=4)
    blob, _ = gstore.put_blob(fresh)
    ref = EvidenceRef(kind="junit", digest=blob.digest, filename="report.xml", size=blob.size)
    # An attestation 20 days after the publish (written at that time through the ledger itself).
    gstore.ledger.append(
        "api", "attested", d, actor="rescan", at=created + dt.timedelta(days=20),
        details={"evidence": [ref.model_dump(mode="json")]},
    )  # fmt: skip
    prod = gstore.pipeline.environment("prod")
    rec = gstore.record("api", d)
    ok = evaluate_stage(gstore, prod, rec, None, created + dt.timedelta(days=31), previous_env="staging")
    assert ok.results[0].passed, ok.results[0].reasons
    late = evaluate_stage(gstore, prod, rec, None, created + dt.timedelta(days=51), previous_env="staging")
    assert late.results[0].reasons[0].startswith("evidence expired: junit attested 31d")


def test_the_same_attest_twice_records_one_event(gstore: ArtifactStore, tmp_path: Path) -> None:
    unit = junit(tmp_path / "unit.xml", "unit", failures=0)
    d = publish(gstore, tmp_path, f"junit={unit}")
    scan = sarif(tmp_path / "scan.sarif", errors=0)
    first = gstore.attest("api", d, parse_evidence([f"sarif={scan}"]), provenance=LATER)
    again = gstore.attest("api", d, parse_evidence([f"sarif={scan}"]), provenance=LATER)
    assert len(first.attached) == 1 and first.event is not None
    assert (
        again.attached == () and again.event is None and [r.filename for r in again.already] == ["scan.sarif"]
    )
    # A report already in the publish evidence is not attached again either (same kind, same bytes).
    publish_copy = gstore.attest("api", d, parse_evidence([f"junit={unit}"]), provenance=LATER)
    assert publish_copy.event is None
    assert [r.event for r in gstore.ledger.records("api")] == ["published", "attested"]
    # The attesting job's provenance is recorded, with who and when.
    rec = gstore.ledger.records("api")[-1]
    assert rec.actor == "rescan" and rec.details["build_url"] == "https://ci/2"
    assert rec.details["builder"] == "nightly" and rec.details["via"] == "attest"


def test_attest_refuses_unknown_service_and_another_services_digest(
    gstore: ArtifactStore, tmp_path: Path
) -> None:
    unit = junit(tmp_path / "unit.xml", "unit", failures=0)
    d = publish(gstore, tmp_path, f"junit={unit}")
    ev = parse_evidence([f"junit={unit}"])
    with pytest.raises(UnknownService):
        gstore.attest("nope", d, ev, provenance=LATER)
    with pytest.raises(ArtifactNotFound, match="never published for service 'web'"):
        gstore.attest("web", d, ev, provenance=LATER)
    assert gstore.ledger.records("web") == []


# --- the CLI ---------------------------------------------------------------------------------------


def promote(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "promotion.cli", *args],
        capture_output=True, text=True, cwd=cwd, timeout=120,
        env={**os.environ, "PROMOTION_S3_MAX_ATTEMPTS": "2"},
    )  # fmt: skip


def one_line(r: subprocess.CompletedProcess[str], cls: str, code: int) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"{cls}: "), r.stderr
    return r.stderr


@pytest.fixture
def cfg(tmp_path: Path, s3_server: LocalS3, prefix: str) -> Path:
    path = tmp_path / "promotion.yaml"
    path.write_text(text(s3_server.endpoint_url, s3_server.bucket, prefix))
    return path


def test_a_ci_rerun_republishes_with_a_new_report_and_it_is_attached(cfg: Path, tmp_path: Path) -> None:
    app = tmp_path / "app.tar.gz"
    app.write_bytes(os.urandom(20_000))
    (tmp_path / "run1").mkdir()
    (tmp_path / "run2").mkdir()
    flaky = junit(tmp_path / "run1" / "junit.xml", "unit", failures=1)
    first = promote("-c", str(cfg), "publish", str(app), "-s", "api", "--version", "1.0",
                    "-e", f"junit={flaky}", "--build-url", "https://ci/run/7", "--as", "ci")  # fmt: skip
    assert first.returncode == 0, first.stderr
    digest = first.stdout.strip()
    # "Re-run failed jobs": the same bytes, a fresh report, another job URL.
    fixed = junit(tmp_path / "run2" / "junit.xml", "unit", failures=0)
    rerun = promote("-c", str(cfg), "publish", str(app), "-s", "api", "--version", "1.0",
                    "-e", f"junit={fixed}", "--build-url", "https://ci/run/7/attempt/2",
                    "--as", "ci")  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout == f"{digest}\n" and "already published" in rerun.stderr
    assert f"attached: junit junit.xml ({Digest.of_bytes(fixed.read_bytes()).short}" in rerun.stderr
    store = ArtifactStore(load_pipeline(cfg))
    last = store.ledger.records("api")[-1]
    assert last.event == "attested" and last.details["via"] == "publish"
    assert last.details["build_url"] == "https://ci/run/7/attempt/2"
    assert stage(store, Digest(digest))["tests"].passed  # type: ignore[attr-defined]
    # Another version of the same bytes stays refused, naming what differs.
    other = promote("-c", str(cfg), "publish", str(app), "-s", "api", "--version", "2.0",
                    "-e", f"junit={fixed}")  # fmt: skip
    msg = one_line(other, "ArtifactConflict", 1)
    assert "version: stored '1.0', given '2.0'" in msg and "evidence" not in msg.split("(")[1].split(")")[0]
    # history shows the attestation: who, and which files.
    hist = promote("-c", str(cfg), "history", "api")
    assert hist.returncode == 0 and "attested" in hist.stdout and "junit.xml" in hist.stdout


def test_cli_attest_refusals_and_success(cfg: Path, tmp_path: Path) -> None:
    app = tmp_path / "app.bin"
    app.write_bytes(os.urandom(5000))
    assert promote("-c", str(cfg), "publish", str(app), "-s", "api", "--version", "1").returncode == 0
    digest = str(Digest.of_bytes(app.read_bytes()))
    scan = sarif(tmp_path / "scan.sarif", errors=0)
    one_line(promote("-c", str(cfg), "attest", "nope", digest, "-e", f"sarif={scan}"), "UnknownService", 2)
    msg = one_line(
        promote("-c", str(cfg), "attest", "web", digest, "-e", f"sarif={scan}"), "ArtifactNotFound", 1
    )
    assert "never published for service 'web'" in msg
    one_line(
        promote("-c", str(cfg), "attest", "api", "sha256:abc", "-e", f"sarif={scan}"), "InvalidDigest", 2
    )
    # A planted symlink (to a secret) is refused before anything is sent: exit 2, nothing recorded.
    secret = tmp_path / "credentials"
    secret.write_text("aws_secret_access_key = hunter2\n")
    (tmp_path / "link.sarif").symlink_to(secret)
    r = promote("-c", "promotion.yaml", "attest", "api", digest, "-e", "sarif=link.sarif", cwd=tmp_path)
    assert "symbolic link" in one_line(r, "EvidenceError", 2)
    one_line(
        promote("-c", str(cfg), "attest", "api", digest, "-e", "sarif=missing.sarif"), "EvidenceError", 2
    )
    store = ArtifactStore(load_pipeline(cfg))
    assert [r.event for r in store.ledger.records("api")] == ["published"]

    ok = promote("-c", str(cfg), "attest", "api", digest, "-e", f"sarif={scan}", "--as", "nightly",
                 "--build-url", "https://user:tok3n@ci/scan/1")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "attached: sarif scan.sarif" in ok.stdout and "recorded: ledger record 2 of api" in ok.stdout
    again = promote("-c", str(cfg), "attest", "api", digest, "-e", f"sarif={scan}", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["attached"] == [] and json.loads(again.stdout)["seq"] is None
    records = store.ledger.records("api")
    assert [r.event for r in records] == ["published", "attested"]
    assert records[-1].actor == "nightly" and records[-1].details["build_url"] == "https://ci/scan/1"
    assert "tok3n" not in records[-1].canonical_bytes().decode()
    st = promote("-c", str(cfg), "status", "--json")
    assert st.returncode == 0, st.stderr
    [latest] = [
        r for r in json.loads(st.stdout) if r["service"] == "api" and r["environment"] == "(latest published)"
    ]
    assert latest["attested"] == [
        {"kind": "sarif", "filename": "scan.sarif", "by": "nightly", "at": records[-1].at.isoformat()}
    ]


# --- the sweep -------------------------------------------------------------------------------------


def _deployed_in_staging(store: ArtifactStore, tmp_path: Path) -> Digest:
    d = publish(store, tmp_path, f"junit={junit(tmp_path / 'unit.xml', 'unit', 0)}",
                f"sarif={sarif(tmp_path / 'scan.sarif', 0)}")  # fmt: skip
    store.ledger.append("api", "promoted", d, actor="ci", environment="dev", version="1.0")
    store.ledger.append("api", "promoted", d, actor="ci", environment="staging", version="1.0")
    return d


def test_the_sweep_flags_a_deployed_digest_whose_attested_scan_now_fails(
    gstore: ArtifactStore, tmp_path: Path
) -> None:
    d = _deployed_in_staging(gstore, tmp_path)
    quiet = sweep_service(gstore, "api")
    assert (
        not [c for c in quiet.checks if c.outcome != "ok"]
        and str(d) not in gstore.ledger.state("api").flagged
    )
    (tmp_path / "night").mkdir()
    attest(gstore, d, f"sarif={sarif(tmp_path / 'night' / 'scan.sarif', errors=2)}")
    report = sweep_service(gstore, "api")
    [bad] = [c for c in report.checks if c.outcome == "gate_failed"]
    assert bad.flagged and bad.roles == ["runs in staging"]
    assert bad.detail.startswith(
        "evidence attested since it was promoted to staging fails: "
        "scan: 2 error findings exceed the maximum of 0"
    )
    st = gstore.ledger.state("api")
    assert st.flagged[str(d)] == bad.detail
    assert [r.event for r in gstore.ledger.records("api")].count("flagged") == 1
    # The next night does not flag it again.
    sweep_service(gstore, "api")
    assert [r.event for r in gstore.ledger.records("api")].count("flagged") == 1
    # The attested report is referenced: retention keeps it.
    assert str(Digest.of_bytes((tmp_path / "night" / "scan.sarif").read_bytes())) in report.refs.referenced


def test_the_sweep_does_not_flag_on_a_503(s3_server: LocalS3, prefix: str, tmp_path: Path) -> None:
    direct = ArtifactStore(parse_pipeline(text(s3_server.endpoint_url, s3_server.bucket, prefix)))
    d = _deployed_in_staging(direct, tmp_path)
    (tmp_path / "night").mkdir()
    bad_scan = sarif(tmp_path / "night" / "scan.sarif", errors=2)
    [ref] = attest(direct, d, f"sarif={bad_scan}")
    with FaultProxy(s3_server.endpoint_url) as proxy:
        via = parse_pipeline(text(proxy.url, s3_server.bucket, prefix))
        s3 = S3(via.store, make_client(via.store, max_attempts=2))
        proxy.rules.append(Rule("GET", f"/blobs/sha256/{ref.digest.hex}", "status", status=503, times=-1))
        report = sweep_service(ArtifactStore(via, s3), "api")
    [err] = [c for c in report.checks if c.roles == ["runs in staging"] and c.outcome == "error"]
    assert "StoreUnavailable" in err.detail and err.flag_reason is None and not err.flagged
    assert str(d) not in direct.ledger.state("api").flagged


def test_the_sweeps_expiry_counts_from_the_attestation(gstore: ArtifactStore, tmp_path: Path) -> None:
    d = publish(gstore, tmp_path, f"junit={junit(tmp_path / 'report.xml', 'unit', 0)}")
    gstore.ledger.append("api", "promoted", d, actor="ci", environment="prod", version="1.0")
    created = gstore.record("api", d).created_at
    (tmp_path / "later").mkdir()
    blob, _ = gstore.put_blob(junit(tmp_path / "later" / "report.xml", "unit", 0, tests=5))
    ref = EvidenceRef(kind="junit", digest=blob.digest, filename="report.xml", size=blob.size)
    gstore.ledger.append(
        "api", "attested", d, actor="rescan", at=created + dt.timedelta(days=20),
        details={"evidence": [ref.model_dump(mode="json")]},
    )  # fmt: skip
    fresh = sweep_service(gstore, "api", now=created + dt.timedelta(days=31), dry_run=True)
    assert [c.outcome for c in fresh.checks if str(c.digest) == str(d)][0] == "ok"
    late = sweep_service(gstore, "api", now=created + dt.timedelta(days=51), dry_run=True)
    [expired] = [c for c in late.checks if c.outcome == "expired"]
    assert expired.detail.startswith("evidence expired: junit attested 31d")
