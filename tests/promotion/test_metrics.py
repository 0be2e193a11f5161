"""DORA metrics from the ledger (issue 11 item 1): seeded ledgers in a real S3 server (SeaweedFS),
figures computed by hand, the window read without the whole ledger, and the CLI."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from promotion.ci_context import parse_commit_time
from promotion.digest import Digest
from promotion.errors import UsageError
from promotion.ledger import Ledger
from promotion.metrics import bands
from promotion.metrics.dora import compute, percentile
from promotion.metrics.reading import measure, records_since
from promotion.store import ArtifactStore

NOW = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
SINCE = NOW - dt.timedelta(days=30)
B = NOW - dt.timedelta(days=20)
H = dt.timedelta(hours=1)
D = dt.timedelta(days=1)


def dg(name: str) -> Digest:
    return Digest.of_bytes(name.encode())


class Seeder:
    """Appends records with chosen times to a real ledger."""

    def __init__(self, ledger: Ledger, service: str = "api") -> None:
        self.ledger, self.service = ledger, service

    def promoted(
        self,
        name: str,
        at: dt.datetime,
        *,
        env: str = "prod",
        commit_time: dt.datetime | None = None,
        unplanned: bool = False,
    ) -> None:
        details: dict[str, Any] = {"unplanned": unplanned}
        if commit_time is not None:
            details["commit_time"] = commit_time.isoformat()
        self.ledger.append(
            self.service, "promoted", dg(name), actor="ci", environment=env, details=details, at=at
        )

    def rolled_back(self, to: str, frm: str, at: dt.datetime, reason: str, env: str = "prod") -> None:
        self.ledger.append(
            self.service,
            "rolled_back",
            dg(to),
            actor="ops",
            environment=env,
            reason=reason,
            details={"from": str(dg(frm))},
            at=at,
        )

    def flagged(self, name: str, at: dt.datetime, check: str) -> None:
        self.ledger.append(
            self.service, "flagged", dg(name), actor="sweep", reason=check, details={"check": check}, at=at
        )


def seed_main(s: Seeder) -> None:
    """The hand-computed ledger of the module docstring of test_seeded_figures."""
    s.promoted("old", NOW - dt.timedelta(days=40), commit_time=NOW - dt.timedelta(days=41))  # outside
    s.ledger.append("api", "published", dg("A"), actor="ci", at=B - D)
    s.promoted("A", B, commit_time=B - 10 * H)
    s.rolled_back("old", "A", B + 2 * H, "verification failed: http: HTTP 500")
    s.promoted("A1", B + D, commit_time=B + D - 2 * H)
    s.promoted("X", B + D + H, env="staging", commit_time=B)  # another environment
    s.promoted("C", B + 2 * D, commit_time=B + 2 * D - 30 * H)
    s.promoted("Dx", B + 2 * D + 3 * H, commit_time=B + 2 * D + 2 * H, unplanned=True)
    s.rolled_back("C", "Dx", B + 3 * D, "manual: errors in the logs")
    s.rolled_back("Dx", "C", B + 3 * D + H, "it was the database, not Dx")  # a rollback of a rollback
    s.promoted("E", B + 4 * D)  # no commit time
    s.flagged("E", B + 4 * D + 5 * H, "gate_failed")  # a scan attested later fails prod's gate
    # F's commit time is after its deployment: the CI's clock was ahead (counted 0, flagged skewed).
    s.promoted("F", B + 5 * D, commit_time=B + 5 * D + H)
    s.flagged("F", B + 6 * D, "expired")  # expired evidence is not a failed deployment
    s.flagged("F", B + 6 * D + H, "corrupted")  # nor the stored blob rotting: not a failed change


def test_seeded_figures(store: ArtifactStore) -> None:
    """Deployments to prod in the window: A, A1, C, Dx, E, F (6; "old" is before it, X is staging).

    Failed: A (verification, recovered after 2h), C (hotfix Dx followed it, 3h), Dx (rolled back,
    21h; the rollback of that rollback adds no failure), E (flagged: a gate fails on evidence
    attested later; replaced by F a day later: 24h); not F (flagged expired, then corrupted).
    Lead times: A 10h, A1 2h, C 30h, Dx 1h, F 0 (skewed), E left out.
    """
    seed_main(Seeder(store.ledger))
    m = measure(store.ledger, "api", "prod", SINCE, NOW)
    assert m.deployments == 6
    assert m.deployment_frequency_per_day == pytest.approx(6 / 30)
    assert m.deployment_frequency_band == "high"  # at least weekly, not daily
    assert m.lead_time_counted == 5 and m.lead_time_missing == 1
    assert m.lead_time_p50_seconds == 2 * 3600  # median of 0, 1, 2, 10, 30 hours
    assert m.lead_time_p90_seconds == pytest.approx(22 * 3600)  # 10 + 0.6 * (30 - 10)
    assert m.lead_time_band == "elite"
    assert m.clock_skewed == 1
    assert {(f.digest, f.kind, f.recovery_seconds) for f in m.failures} == {
        (str(dg("A")), "verification", 2 * 3600),
        (str(dg("C")), "hotfix", 3 * 3600),
        (str(dg("Dx")), "rollback", 21 * 3600),
        (str(dg("E")), "flagged", 24 * 3600),
    }
    assert m.failed_deployments == 4
    assert m.change_fail_rate == pytest.approx(4 / 6)
    assert m.change_fail_rate_band == "low"
    assert m.recovery_time_p50_seconds == 12 * 3600  # median of 2, 3, 21, 24 hours
    assert m.recovery_time_p90_seconds == pytest.approx(23.1 * 3600)
    assert m.recovery_time_band == "high"
    assert m.unrecovered == 0
    assert m.unplanned_deployments == 1 and m.rework_rate == pytest.approx(1 / 6)
    assert m.rework_rate_band is None
    # the same figures from the whole ledger: the window read missed nothing
    whole = compute(store.ledger.records("api"), "api", "prod", SINCE, NOW)
    assert whole == m


def test_no_deployments_in_the_window(store: ArtifactStore) -> None:
    s = Seeder(store.ledger)
    s.promoted("old", NOW - dt.timedelta(days=40), commit_time=NOW - dt.timedelta(days=41))
    m = measure(store.ledger, "api", "prod", SINCE, NOW)
    assert (m.deployments, m.deployment_frequency_per_day, m.deployment_frequency_band) == (0, 0.0, "low")
    assert m.lead_time_p50_seconds is None and m.lead_time_band is None
    assert m.change_fail_rate is None and m.change_fail_rate_band is None
    assert m.recovery_time_p50_seconds is None and m.rework_rate is None
    empty = measure(store.ledger, "web", "prod", SINCE, NOW)  # a service with no ledger at all
    assert empty.deployments == 0 and empty.failures == []


def test_unrecovered_failure_and_skewed_recovery(store: ArtifactStore) -> None:
    s = Seeder(store.ledger)
    s.promoted("A", B, commit_time=B - H)
    # The rollback's machine is 10 minutes behind: its record says before the deployment.
    s.rolled_back("old", "A", B - dt.timedelta(minutes=10), "manual")
    s.promoted("G", B + D, commit_time=B + D - H)
    s.flagged("G", B + 2 * D, "gate_failed")  # still running: not recovered yet
    m = measure(store.ledger, "api", "prod", SINCE, NOW)
    assert [(f.kind, f.recovery_seconds, f.clock_skewed) for f in m.failures] == [
        ("rollback", 0.0, True),
        ("flagged", None, False),
    ]
    assert m.unrecovered == 1 and m.recovery_time_p50_seconds == 0.0 and m.clock_skewed == 1
    assert m.change_fail_rate == 1.0


def test_window_read_is_bounded_and_tolerates_skew(store: ArtifactStore) -> None:
    s = Seeder(store.ledger)
    for i in range(150):  # an old history the window read must not pay for
        s.promoted(f"h{i}", NOW - dt.timedelta(days=200) + i * H, env="dev")
    s.promoted("in1", SINCE + dt.timedelta(minutes=10))
    # written by a machine whose clock is 20 minutes behind: before the window by its own time
    s.ledger.append("api", "flagged", dg("z"), actor="sweep", at=SINCE - dt.timedelta(minutes=20))
    s.promoted("in2", SINCE + dt.timedelta(minutes=5))
    window = records_since(store.ledger, "api", SINCE)
    assert [r.digest for r in window.records] == [dg("in1"), dg("z"), dg("in2")]
    assert window.read <= 3 + 32  # the tip, then one first batch: not the 150 records before
    assert measure(store.ledger, "api", "prod", SINCE, NOW).deployments == 2


def test_bands() -> None:
    assert bands.frequency_band(2.0) == "elite" and bands.frequency_band(1.0) == "high"
    assert bands.frequency_band(1 / 7) == "high" and bands.frequency_band(1 / 8) == "medium"
    assert bands.frequency_band(1 / 30) == "medium" and bands.frequency_band(1 / 31) == "low"
    assert bands.lead_time_band(23 * H) == "elite" and bands.lead_time_band(7 * D) == "high"
    assert bands.lead_time_band(30 * D) == "medium" and bands.lead_time_band(31 * D) == "low"
    assert bands.recovery_band(59 * dt.timedelta(minutes=1)) == "elite"
    assert bands.recovery_band(23 * H) == "high" and bands.recovery_band(D) == "low"
    # nearest 2024 cluster value: elite 5 %, high 20 %, medium 10 %, low 40 %
    assert [bands.fail_rate_band(r) for r in (0.0, 0.074, 0.076, 0.14, 0.16, 0.30, 0.31, 1.0)] == [
        "elite", "elite", "medium", "medium", "high", "high", "low", "low",
    ]  # fmt: skip
    assert percentile([], 0.5) is None and percentile([5.0], 0.9) == 5.0


def test_commit_time_parsing() -> None:
    assert parse_commit_time("2026-11-30T14:03:00+01:00") == dt.datetime(2026, 11, 30, 13, 3, tzinfo=dt.UTC)
    assert parse_commit_time("2026-11-30T13:03:00Z").tzinfo is not None
    with pytest.raises(UsageError, match="not an ISO 8601 time"):
        parse_commit_time("yesterday")
    with pytest.raises(UsageError, match="no UTC offset"):
        parse_commit_time("2026-11-30T13:03:00")


# --- the CLI ---------------------------------------------------------------------------------------


def promote(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "promotion.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PROMOTION_S3_MAX_ATTEMPTS": "2", **env},
        timeout=120,
        cwd=cwd,
    )


def test_cli_metrics(config_file: Path, store: ArtifactStore) -> None:
    now = dt.datetime.now(dt.UTC)
    s = Seeder(store.ledger)
    s.promoted("old", now - 20 * D, commit_time=now - 21 * D)
    s.promoted("A", now - 3 * D, commit_time=now - 3 * D - 2 * H)
    s.promoted("B", now - 2 * D, commit_time=now - 2 * D - 4 * H, unplanned=True)
    r = promote("-c", str(config_file), "metrics", "--service", "api", "--since", "7d", "--json")
    assert r.returncode == 0, r.stderr
    (m,) = json.loads(r.stdout)
    assert (m["service"], m["environment"], m["deployments"]) == ("api", "prod", 2)
    assert m["lead_time_p50_seconds"] == pytest.approx(3 * 3600, abs=1)
    assert m["change_fail_rate"] == 0.5 and m["failures"][0]["kind"] == "hotfix"
    assert m["rework_rate"] == 0.5
    text = promote("-c", str(config_file), "metrics", "--since", "7d")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith("api / prod: 2 deployment(s) in 7 days")
    assert any(line.split()[:5] == ["change", "lead", "time", "p50", "3h"] for line in lines), text.stdout
    assert any("rework rate" in line and "no DORA band" in line for line in lines)
    assert any(line.startswith("web / prod: 0 deployment(s)") for line in lines)
    bad = promote("-c", str(config_file), "metrics", "--since", "a month")
    assert bad.returncode == 2 and bad.stderr.startswith("UsageError: --since: ")
    assert "Traceback" not in bad.stderr
    env = promote("-c", str(config_file), "metrics", "--env", "qa")
    assert env.returncode == 2 and env.stderr.startswith("UnknownEnvironment: "), env.stderr
    empty = promote("-c", str(config_file), "metrics", "--since", "0s")
    assert empty.returncode == 2, empty.stderr
    assert empty.stderr == "UsageError: --since: '0s' is an empty window\n"
    nobody = promote("-c", str(config_file), "metrics", "--service", "nope")
    assert nobody.returncode == 2 and nobody.stderr.startswith("UnknownService: "), nobody.stderr
    assert len(nobody.stderr.splitlines()) == 1


def test_publish_commit_time(config_file: Path, store: ArtifactStore, tmp_path: Path) -> None:
    f = tmp_path / "a.bin"
    f.write_bytes(os.urandom(1000))
    bad = promote("-c", str(config_file), "publish", str(f), "-s", "api", "--commit-time", "last tuesday")
    assert bad.returncode == 2 and bad.stderr.startswith("UsageError: --commit-time: "), bad.stderr
    assert store.ledger.records("api") == []  # nothing reached the bucket
    ok = promote(
        "-c", str(config_file), "publish", str(f), "-s", "api", "--commit-time", "2026-11-30T14:03:00+01:00"
    )
    assert ok.returncode == 0, ok.stderr
    rec = store.record("api", Digest(ok.stdout.strip()))
    assert rec.provenance.commit_time == dt.datetime(2026, 11, 30, 13, 3, tzinfo=dt.UTC)
    # GitLab's variable, then a git checkout's last commit, are the defaults
    g = tmp_path / "b.bin"
    g.write_bytes(os.urandom(1000))
    gl = promote(
        "-c", str(config_file), "publish", str(g), "-s", "api", CI_COMMIT_TIMESTAMP="2026-11-29T08:00:00Z"
    )
    assert gl.returncode == 0, gl.stderr
    got = store.record("api", Digest(gl.stdout.strip())).provenance.commit_time
    assert got == dt.datetime(2026, 11, 29, 8, tzinfo=dt.UTC)
    repo = tmp_path / "checkout"
    repo.mkdir()
    stamp = "2026-11-28T10:00:00+02:00"
    git_env = {**os.environ, "GIT_COMMITTER_DATE": stamp, "GIT_AUTHOR_DATE": stamp}
    ident = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    for cmd in (["init", "-q"], [*ident, "commit", "-q", "--allow-empty", "-m", "x"]):
        subprocess.run(["git", *cmd], cwd=repo, check=True, env=git_env)
    h = tmp_path / "c.bin"
    h.write_bytes(os.urandom(1000))
    gitted = promote("-c", str(config_file), "publish", str(h), "-s", "api", cwd=repo)
    assert gitted.returncode == 0, gitted.stderr
    got = store.record("api", Digest(gitted.stdout.strip())).provenance.commit_time
    assert got == dt.datetime(2026, 11, 28, 8, tzinfo=dt.UTC)


def test_webhook_unplanned_field() -> None:
    from promotion.errors import PayloadInvalid
    from promotion.webhook.events import parse_build_published
    from promotion.webhook.trigger import RunRequest

    digest = str(dg("A"))
    intent = parse_build_published({"service": "api", "digest": digest, "unplanned": True})
    assert intent.unplanned is True
    assert parse_build_published({"service": "api", "digest": digest}).unplanned is False
    with pytest.raises(PayloadInvalid, match="unplanned"):
        parse_build_published({"service": "api", "digest": digest, "unplanned": "yes"})
    req = RunRequest("github", "d1", "api", dg("A"), None, None, unplanned=True)
    assert req.parameters["unplanned"] is True
    planned = RunRequest("github", "d1", "api", dg("A"), None, None)
    assert "unplanned" not in planned.parameters  # a planned delivery's parameters are unchanged
