"""The delivery dashboard (issue 11 item 2): a seeded ledger in a real S3 server (SeaweedFS) ->
``promote report``'s HTML file, rendered offline by headless Chromium (tests/browser.py), and
what a person sees on it asserted. The full-page screenshot is kept as a test artifact,
``test-artifacts/report.png`` (tests/browser.artifact_path)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from promotion.dashboard.html import render
from promotion.dashboard.model import gather
from promotion.ledger import Ledger
from promotion.local_s3 import LocalS3
from promotion.store import ArtifactStore
from tests.browser import artifact_path, chromium
from tests.conftest import PIPELINE_TEMPLATE
from tests.faultproxy import FaultProxy, Rule
from tests.promotion.test_metrics import D, H, Seeder, dg, promote

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Dialog, Page, Route

NOW = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
SINCE = NOW - 28 * D  # four weeks
B = NOW - 20 * D  # in the second week
HOSTILE = "<script>alert(1)</script>"
ENVS = ["dev", "staging", "prod"]


def gate(name: str, passed: bool, *reasons: str) -> dict[str, Any]:
    return {
        "gate": name,
        "kind": name,
        "passed": passed,
        "measured": {},
        "thresholds": {},
        "reasons": list(reasons),
    }


def seed_report(ledger: Ledger, t0: dt.datetime) -> None:
    """api: A to staging then (approved by alice) to prod, C refused by its coverage gate, D to
    prod 8 days after A, Z refused with a hostile reason; web: nothing. ``t0`` plays B."""
    s = Seeder(ledger)
    ledger.append("api", "published", dg("A"), actor="ci", version="1.0", at=t0 - D)
    ledger.append(
        "api", "promoted", dg("A"), actor="ci", environment="staging", version="1.0",
        gates=[gate("tests", True)], at=t0,
    )  # fmt: skip
    ledger.append(
        "api", "approval", dg("A"), actor="alice", environment="prod", version="1.0", reason="looks good",
        details={"decision": "approve", "counted": True, "why": ""}, at=t0 + H,
    )  # fmt: skip
    ledger.append(
        "api", "promoted", dg("A"), actor="ci", environment="prod", version="1.0",
        reason="gates passed, approved by alice", gates=[gate("tests", True), gate("coverage", True)],
        details={"commit_time": (t0 - 10 * H).isoformat(), "unplanned": False,
                 "approvals": [{"approver": "alice", "decision": "approve", "reason": "", "counted": True}]},
        at=t0 + 2 * H,
    )  # fmt: skip
    ledger.append(
        "api", "rejected", dg("C"), actor="ci", environment="prod", version="1.1",
        reason="gate failed: coverage",
        gates=[gate("tests", True), gate("coverage", False, "line rate 0.50 < 0.80")],
        at=t0 + 3 * D,
    )  # fmt: skip
    s.promoted("D", t0 + 8 * D, commit_time=t0 + 8 * D - 4 * H)
    ledger.append(
        "api", "rejected", dg("Z"), actor="ci", environment="prod", version="1.3", reason=HOSTILE,
        gates=[gate("scan", False, HOSTILE)], at=t0 + 9 * D,
    )  # fmt: skip


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


class Opened:
    """A page opened from a file with every request other than the file's refused and counted,
    and every dialog (an ``alert`` a script would raise) recorded."""

    def __init__(self, page: Page, path: Path) -> None:
        self.page, self.url = page, path.resolve().as_uri()
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        page.route("**", self._route)
        page.on("dialog", self._dialog)
        page.goto(self.url)

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def _route(self, route: Route) -> None:
        if route.request.url == self.url:
            route.continue_()
        else:
            self.requests.append(route.request.url)
            route.abort()

    def text(self, selector: str) -> str:
        return self.page.locator(selector).inner_text()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, offline=True)
    context.set_default_timeout(30_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def test_report_shows_what_happened(store: ArtifactStore, page: Page, tmp_path: Path) -> None:
    seed_report(store.ledger, B)
    report = gather(store.ledger, ["api", "web"], ENVS, "prod", SINCE, NOW)
    path = tmp_path / "report.html"
    path.write_text(render(report), encoding="utf-8")
    seen = Opened(page, path)
    shot = artifact_path("report.png")
    page.screenshot(path=str(shot), full_page=True)  # before the checks: it shows what failed too

    api = "section[data-service='api']"
    assert seen.text(f"{api} h2") == "api"
    assert seen.text(f"{api} .summary") == "2 deployment(s) to prod in 28 days"
    figures = seen.text(f"{api} table.figures")
    assert "change lead time p50\t8h" in figures  # median of 12h (A) and 4h (D)
    assert "change fail rate\t0.0%" in figures
    # the promotion of A to prod: its approver and when, and its gates
    prod_rows = page.locator(f"{api} table.timeline[data-environment='prod'] tr")
    promoted = prod_rows.filter(has_text="1.0").inner_text()
    assert "alice approved 2026-11-10 01:00Z" in promoted and "2026-11-10 02:00Z" in promoted
    assert "tests pass" in promoted and "coverage pass" in promoted
    refused = prod_rows.filter(has_text="1.1").inner_text()
    assert "rejected" in refused and "coverage FAIL: line rate 0.50 < 0.80" in refused
    # the hostile reason is text on the page; no script element came of it and none ran
    hostile = prod_rows.filter(has_text="1.3").inner_text()
    assert f"scan FAIL: {HOSTILE}" in hostile and hostile.rstrip().endswith(HOSTILE)
    assert page.locator("script").count() == 0 and seen.dialogs == []
    # the current state with its age
    current = seen.text(f"{api} table.current")
    assert "prod\t-\t" in current and "\t12d\t" in current  # D, promoted 12 days before NOW
    assert "staging\t1.0\t" in current and "\t20d\t" in current
    # charts: a bar per week, a lead-time point per week that had a deployment
    assert page.locator(f"{api} [data-chart='deployments'] rect.bar").count() == 4
    heights = page.locator(f"{api} [data-chart='deployments'] rect.bar").evaluate_all(
        "bars => bars.map(b => Number(b.getAttribute('height')))"
    )
    assert [h > 0 for h in heights] == [False, True, True, False]
    assert page.locator(f"{api} [data-chart='lead-time'] circle.point").count() == 2
    assert page.locator(f"{api} [data-chart='fail-rate'] circle.point").count() == 2  # weeks 2 and 3
    assert page.locator(f"{api} [data-chart='deployments'] svg").is_visible()
    # a service with nothing in the window
    web = "section[data-service='web']"
    assert seen.text(f"{web} .summary") == "no deployments to prod in 28 days"
    assert page.locator(f"{web} svg").count() == 0
    assert "no build deployed anywhere yet" in seen.text(web)
    assert seen.requests == []  # nothing but the file itself was asked for


def test_hostile_service_name_is_escaped(store: ArtifactStore) -> None:
    """Every value from the ledger is escaped, the service name and actors too (by the model's
    own renderer, not a browser: the markup itself must hold no tag of theirs)."""
    name = "<img src=x onerror=alert(1)>"
    store.ledger.append(name, "promoted", dg("A"), actor=HOSTILE, environment="prod", at=B)
    page = render(gather(store.ledger, [name], ENVS, "prod", SINCE, NOW))
    assert "<img" not in page and "<script" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_cli_report(config_file: Path, store: ArtifactStore, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    seed_report(store.ledger, now - 20 * D)
    out = tmp_path / "out" / "delivery.html"
    out.parent.mkdir()
    r = promote("-c", str(config_file), "report", "--since", "30d", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == str(out)
    assert r.stdout.splitlines()[1].startswith("2 service(s), 2 deployment(s) to prod since ")
    page = out.read_text(encoding="utf-8")
    assert "<h2>api</h2>" in page and "alice approved" in page and "&lt;script&gt;" in page
    assert [p.name for p in out.parent.iterdir()] == ["delivery.html"]  # no partial file left
    only = promote("-c", str(config_file), "report", "-s", "web", "-o", str(out))
    assert only.returncode == 0 and "no deployments to prod in 90 days" in out.read_text()
    assert "<h2>api</h2>" not in out.read_text()
    bad = promote("-c", str(config_file), "report", "--since", "a month", "-o", str(out))
    assert bad.returncode == 2 and bad.stderr.startswith("UsageError: --since: "), bad.stderr
    nowhere = tmp_path / "missing" / "r.html"
    unwritable = promote("-c", str(config_file), "report", "-o", str(nowhere))
    assert unwritable.returncode == 2, unwritable.stderr
    assert unwritable.stderr.startswith(f"UsageError: -o {nowhere}: cannot write the report (")
    assert len(unwritable.stderr.splitlines()) == 1 and not nowhere.parent.exists()


def test_cli_report_env(config_file: Path, store: ArtifactStore, tmp_path: Path) -> None:
    """``--env staging``: the figures, charts and summary are staging's, not prod's.

    Staging: A (no commit time), S1 (hotfix, 6h after its commit), S2 (2h): 3 deployments in 30
    days (0.10/day), lead time p50 4h (median of 6h and 2h), A failed (the hotfix followed it):
    1/3, rework 1/3. Prod (seed_report) would be 2 deployments, 8h, 0.0% and 0.0%.
    """
    now = dt.datetime.now(dt.UTC)
    t0 = now - 20 * D
    seed_report(store.ledger, t0)
    s = Seeder(store.ledger)
    s.promoted("S1", t0 + 4 * D, env="staging", commit_time=t0 + 4 * D - 6 * H, unplanned=True)
    s.promoted("S2", t0 + 6 * D, env="staging", commit_time=t0 + 6 * D - 2 * H)
    out = tmp_path / "staging.html"
    r = promote(
        "-c", str(config_file), "report", "--env", "staging", "--since", "30d", "-s", "api", "-o", str(out)
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1].startswith("1 service(s), 3 deployment(s) to staging since ")
    page = out.read_text(encoding="utf-8")
    assert "DORA figures for staging</p>" in page
    assert "<p class=summary>3 deployment(s) to staging in 30 days</p>" in page
    for name, figure, band in (
        ("deployment frequency", "0.10/day", "medium"),
        ("change lead time p50", "4h", "elite"),
        ("change fail rate", "33.3%", "low"),
        ("rework rate", "33.3%", "-"),
    ):
        assert f"<tr><td>{name}</td><td class=figure>{figure}</td><td>{band}</td></tr>" in page, name
    assert "Deployments per week to staging" in page
    assert "to prod" not in page  # prod's summary and chart are not shown (its figures: the loop)
    # the timelines stay per environment (what was promoted where), prod's included
    assert 'data-environment="staging"' in page and 'data-environment="prod"' in page
    unknown = promote("-c", str(config_file), "report", "--env", "qa", "-o", str(out))
    assert unknown.returncode == 2 and unknown.stderr.startswith("UnknownEnvironment: "), unknown.stderr
    assert len(unknown.stderr.splitlines()) == 1


def test_an_s3_outage_is_one_line_and_leaves_no_report(
    s3_server: LocalS3, prefix: str, store: ArtifactStore, tmp_path: Path
) -> None:
    """A ledger that cannot be read (503 through the real fault proxy, after botocore's retries)
    is an infrastructure error, exit 1 in one line: never figures of zero, never a report file."""
    seed_report(store.ledger, dt.datetime.now(dt.UTC) - 20 * D)
    out = tmp_path / "report.html"
    with FaultProxy(s3_server.endpoint_url) as proxy:
        cfg = tmp_path / "proxied.yaml"
        cfg.write_text(PIPELINE_TEMPLATE.format(endpoint=proxy.url, bucket=s3_server.bucket, prefix=prefix))
        proxy.rules.append(Rule("GET", r"/ledger/api/", "status", status=503, times=-1))
        runs = {
            "metrics": promote("-c", str(cfg), "metrics", "--json"),
            "report": promote("-c", str(cfg), "report", "-o", str(out)),
        }
    for command, r in runs.items():
        assert r.returncode == 1, (command, r.stdout, r.stderr)
        assert r.stdout == "" and len(r.stderr.splitlines()) == 1, (command, r.stderr)
        assert r.stderr.startswith("StoreUnavailable: GET s3://"), (command, r.stderr)
    assert list(tmp_path.glob("*.html")) == [] and list(tmp_path.glob(".*partial")) == []


def test_weeks_do_not_count_a_boundary_twice(store: ArtifactStore) -> None:
    Seeder(store.ledger).promoted("W", SINCE + 7 * D, commit_time=SINCE + 7 * D - H)
    (api,) = gather(store.ledger, ["api"], ENVS, "prod", SINCE, NOW).services
    assert [w.deployments for w in api.weeks] == [1, 0, 0, 0]
    assert api.metrics.deployments == 1
