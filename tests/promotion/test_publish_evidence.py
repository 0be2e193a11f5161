"""Evidence is checked at publish, before anything reaches the bucket (the CLI as a subprocess).

Every refusal is checked the same way: exit 2, one ``EvidenceError: --evidence ...`` line, and no
object at all under the test's prefix, neither the evidence nor the artifact nor a record.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from promotion.config import load_pipeline
from promotion.digest import Digest
from promotion.evidence import MAX_EVIDENCE_BYTES
from promotion.models import Provenance
from promotion.store import ArtifactStore, parse_evidence

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "evidence"
PROV = Provenance(commit="c0ffee", commit_author="dana", build_url="https://ci/1", published_by="ci")


class Run:
    def __init__(self, returncode: int, stdout: str, stderr: str, max_rss_mib: float) -> None:
        self.returncode, self.stdout, self.stderr, self.max_rss_mib = returncode, stdout, stderr, max_rss_mib


# The CLI's main(), as `python -m promotion.cli` runs it, writing its own peak RSS (VmHWM) at
# exit. getrusage/wait4 ru_maxrss would count the pytest image the child was forked from too
# (Linux carries the pre-exec high-water mark over).
CLI_WITH_PEAK_RSS = """
import atexit, os, sys
def peak():
    with open("/proc/self/status") as f:
        kib = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
    with open(os.environ["PEAK_RSS_FILE"], "w") as out:
        out.write(kib)
atexit.register(peak)
sys.argv[0] = "promote"
from promotion.cli import main
main()
"""


def promote(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Run:
    """The CLI in ``cwd``, with its exit code, output and own peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        peak_file = Path(tmp) / "peak"
        try:
            r = subprocess.run(
                [sys.executable, "-c", CLI_WITH_PEAK_RSS, *args],
                cwd=cwd,
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                env={
                    **os.environ,
                    "PROMOTION_S3_MAX_ATTEMPTS": "2",
                    "PEAK_RSS_FILE": str(peak_file),
                    **(env or {}),
                },
                timeout=120,  # an open blocked on a FIFO fails the test instead of hanging it
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"promote {' '.join(args)} did not finish in 120 s")
        return Run(r.returncode, r.stdout, r.stderr, int(peak_file.read_text()) / 1024)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A CI checkout as a pull request could shape it: the artifact and a reports/ folder."""
    root = tmp_path / "checkout"
    (root / "reports").mkdir(parents=True)
    (root / "app.bin").write_bytes(os.urandom(20_000))
    return root


@pytest.fixture
def bucket_store(config_file: Path) -> ArtifactStore:
    return ArtifactStore(load_pipeline(config_file))


def publish(
    config_file: Path, checkout: Path, *evidence: str, follow: bool = False, env: dict[str, str] | None = None
) -> Run:
    args = ["-c", str(config_file), "publish", "app.bin", "--service", "api", "--version", "1"]
    for spec in evidence:
        args += ["--evidence", spec]
    return promote(*args, *(["--follow-symlinks"] if follow else []), cwd=checkout, env=env)


def assert_refused(r: Run, *words: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("EvidenceError: --evidence "), r.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert r.stdout == ""


def assert_bucket_untouched(store: ArtifactStore) -> None:
    assert list(store.s3.list_keys(store.s3.key(""))) == []


def test_symlink_to_etc_passwd_is_refused_and_nothing_is_uploaded(
    config_file: Path, checkout: Path, bucket_store: ArtifactStore
) -> None:
    (checkout / "reports" / "junit.xml").symlink_to("/etc/passwd")
    r = publish(config_file, checkout, "junit=reports/junit.xml")
    assert_refused(r, "junit=reports/junit.xml", "reports/junit.xml is a symbolic link", "/etc/passwd")
    assert "root:" not in r.stderr
    assert_bucket_untouched(bucket_store)


@pytest.mark.parametrize("follow", [False, True])
def test_symlink_to_planted_aws_credentials_is_refused(
    config_file: Path, checkout: Path, tmp_path: Path, bucket_store: ArtifactStore, follow: bool
) -> None:
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    secret = "FAKE" + secrets.token_hex(16)
    (home / ".aws" / "credentials").write_text(
        f"[default]\naws_access_key_id = AKIAFAKE\naws_secret_access_key = {secret}\n"
    )
    (checkout / "reports" / "creds.txt").symlink_to(home / ".aws" / "credentials")
    # "other" is not parsed: only the symlink rule stands between the secret and the bucket.
    r = publish(config_file, checkout, "other=reports/creds.txt", follow=follow, env={"HOME": str(home)})
    if follow:
        assert_refused(r, "other=reports/creds.txt", "outside the current directory", str(home / ".aws"))
    else:
        assert_refused(r, "other=reports/creds.txt", "is a symbolic link", "--follow-symlinks")
    assert secret not in r.stderr
    assert_bucket_untouched(bucket_store)


def test_a_symlinked_directory_inside_the_checkout_is_refused(
    config_file: Path, checkout: Path, tmp_path: Path, bucket_store: ArtifactStore
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "junit.xml").write_bytes((EXAMPLES / "junit.xml").read_bytes())
    (checkout / "linked").symlink_to(outside, target_is_directory=True)
    r = publish(config_file, checkout, "junit=linked/junit.xml")
    assert_refused(r, "linked (in linked/junit.xml) is a symbolic link")
    r = publish(config_file, checkout, "junit=linked/junit.xml", follow=True)
    assert_refused(r, "outside the current directory")
    assert_bucket_untouched(bucket_store)


def test_follow_symlinks_accepts_a_target_inside_the_checkout(
    config_file: Path, checkout: Path, bucket_store: ArtifactStore
) -> None:
    (checkout / "build").mkdir()
    report = (EXAMPLES / "junit.xml").read_bytes()
    (checkout / "build" / "junit.xml").write_bytes(report)
    (checkout / "reports" / "junit.xml").symlink_to("../build/junit.xml")
    refused = publish(config_file, checkout, "junit=reports/junit.xml")
    assert_refused(refused, "is a symbolic link (to ../build/junit.xml)")
    assert_bucket_untouched(bucket_store)

    r = publish(config_file, checkout, "junit=reports/junit.xml", follow=True)
    assert r.returncode == 0, r.stderr
    digest = Digest.of_bytes((checkout / "app.bin").read_bytes())
    record = bucket_store.record("api", digest)
    assert [(e.kind, e.filename, e.digest) for e in record.evidence] == [
        ("junit", "junit.xml", Digest.of_bytes(report))
    ]


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("junit", "not a JUnit XML report"),
        ("coverage", "not a coverage report"),
        ("sarif", "not a SARIF log"),
        ("perf", "not a performance report"),
    ],
)
def test_random_bytes_are_refused_for_every_parsed_kind(
    config_file: Path, checkout: Path, bucket_store: ArtifactStore, kind: str, name: str
) -> None:
    (checkout / "reports" / "r.bin").write_bytes(os.urandom(4096))
    r = publish(config_file, checkout, f"{kind}=reports/r.bin")
    assert_refused(r, f"--evidence {kind}=reports/r.bin: {name}: ")
    assert_bucket_untouched(bucket_store)


def test_a_report_above_the_size_limit_is_refused_naming_the_limit(
    config_file: Path, checkout: Path, bucket_store: ArtifactStore
) -> None:
    big = checkout / "reports" / "junit.xml"
    with big.open("wb") as f:
        f.truncate(60 * 1024 * 1024)  # sparse: 60 MiB by size, no disk or time spent writing it
    r = publish(config_file, checkout, "junit=reports/junit.xml")
    assert_refused(r, f"the file is {60 * 1024 * 1024} bytes", str(MAX_EVIDENCE_BYTES), "32 MiB")
    assert_bucket_untouched(bucket_store)


XXE = b"""<?xml version="1.0"?>
<!DOCTYPE testsuite [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<testsuite><testcase name="&xxe;"/></testsuite>"""
LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n<!ENTITY lol "lol">\n'
    + b"".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">\n'.encode()
        for i in range(1, 10)
    )
    + b']>\n<testsuite name="&lol9;"/>'
)
DEEP = b"<testsuites>" + b"<testsuite>" * 5000 + b"</testsuite>" * 5000 + b"</testsuites>"


@pytest.mark.parametrize(
    ("kind", "report", "words"),
    [
        ("junit", XXE, "declares the entity 'xxe'"),
        ("junit", LAUGHS, "declares the entity 'lol'"),
        ("coverage", XXE.replace(b"testsuite", b"coverage"), "declares the entity 'xxe'"),
        ("junit", DEEP, "nested more than 128 levels"),
    ],
    ids=["xxe", "billion-laughs", "xxe-coverage", "too-deep"],
)
def test_hostile_xml_is_refused_at_publish_with_bounded_memory(
    config_file: Path, checkout: Path, bucket_store: ArtifactStore, kind: str, report: bytes, words: str
) -> None:
    (checkout / "reports" / "r.xml").write_bytes(report)
    r = publish(config_file, checkout, f"{kind}=reports/r.xml")
    assert_refused(r, words)
    assert "root:" not in r.stderr
    # The interpreter and its imports alone take ~60 MiB; an expanded billion laughs takes GiBs.
    assert r.max_rss_mib < 150, r.max_rss_mib
    assert_bucket_untouched(bucket_store)


def test_a_fifo_is_refused_without_blocking(
    config_file: Path, checkout: Path, bucket_store: ArtifactStore
) -> None:
    os.mkfifo(checkout / "reports" / "junit.xml")  # nobody writes: a blocking open would hang
    r = publish(config_file, checkout, "junit=reports/junit.xml")
    assert_refused(r, "reports/junit.xml is a named pipe (FIFO)")
    assert_bucket_untouched(bucket_store)


@pytest.mark.parametrize("path", ["reports", "/dev/null"])
def test_directories_and_devices_are_refused(
    config_file: Path, checkout: Path, bucket_store: ArtifactStore, path: str
) -> None:
    r = publish(config_file, checkout, f"other={path}")
    assert_refused(r, "a directory" if path == "reports" else "a device", "evidence must be a regular file")
    assert_bucket_untouched(bucket_store)


def test_the_bytes_validated_are_the_bytes_uploaded(store: ArtifactStore, tmp_path: Path) -> None:
    """A report rewritten after the check (a racing job, a swapped file) changes nothing stored."""
    report = tmp_path / "junit.xml"
    validated = (EXAMPLES / "junit.xml").read_bytes()
    report.write_bytes(validated)
    evidence = parse_evidence([f"junit={report}"])
    report.write_bytes(b"<testsuite><testcase name='swapped'><failure/></testcase></testsuite>")
    artifact = tmp_path / "app.bin"
    artifact.write_bytes(os.urandom(1000))
    result = store.publish(artifact, service="api", version="1", provenance=PROV, evidence=evidence)
    (ref,) = result.record.evidence
    assert ref.filename == "junit.xml"
    assert store.fetch_bytes(ref.digest) == validated


def test_valid_reports_of_every_kind_are_accepted(
    config_file: Path, checkout: Path, bucket_store: ArtifactStore
) -> None:
    for name in ("junit.xml", "coverage.xml", "coverage.json", "bandit.sarif"):
        (checkout / "reports" / name).write_bytes((EXAMPLES / name).read_bytes())
    (checkout / "reports" / "k6.json").write_text(
        '{"metrics": {"http_reqs": {"count": 10}, "http_req_duration": {"p(95)": 12.5}}}'
    )
    r = publish(
        config_file, checkout, "junit=reports/junit.xml", "coverage=reports/coverage.xml",
        "coverage=reports/coverage.json", "sarif=reports/bandit.sarif", "perf=reports/k6.json",
        "other=app.bin",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    digest = Digest.of_bytes((checkout / "app.bin").read_bytes())
    kinds = [e.kind for e in bucket_store.record("api", digest).evidence]
    assert kinds == ["junit", "coverage", "coverage", "sarif", "perf", "other"]
