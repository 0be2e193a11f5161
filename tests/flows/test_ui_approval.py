"""The Prefect UI's resume form, driven by a real browser (headless Chromium), classic and v2 UIs.

A person approving a promotion opens the paused stage run in the Prefect UI, reads the description
above the form, chooses approve or reject and types their name. These tests do exactly that against
the session's real Prefect server and SeaweedFS, and check the outcome through Prefect's API and the
ledger, not only the page.

The session's server (``prefect_test_harness``) is started by Prefect with its UI turned off, so the
UI here is Prefect's own UI application (``create_ui_app``) served in a process of its own with
``PREFECT_UI_API_URL`` pointing at the session's API: the same bundle and settings endpoint a
``prefect server start`` serves, configured as a UI served apart from its API is.

Chromium is the Debian package (``.ci/run`` installs it); Playwright is only the driver and never
downloads a browser (``playwright install`` is not used).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import httpx
import pytest

from promotion.approval import Decision, Tally
from promotion.config import parse_pipeline
from promotion.digest import Digest
from promotion.gates import GateResult
from promotion.local_s3 import LocalS3
from promotion.models import ArtifactRecord, EnvState, Provenance
from promotion.report import approval_description
from tests.browser import artifact_path, chromium
from tests.flows.harness import Run, Setup, wait_for_paused
from tests.flows.test_suspended_approval import Served, wait_final, wait_suspended

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

# An ordinary laptop window: the form's Decision control must show in it without scrolling.
VIEWPORT = {"width": 1280, "height": 800}

# dev, then prod with four gates and an approval: the gates' lines are what sits above the form.
PIPELINE = """
store: {{endpoint_url: "{endpoint}", bucket: {bucket}, prefix: "{prefix}"}}
services: [{{name: api}}]
environments:
  - name: dev
    gates: [{{kind: tests, min_pass_rate: 1.0}}]
  - name: prod
    gates:
      - {{kind: tests, min_pass_rate: 1.0}}
      - {{kind: coverage, min_line_rate: 0.8}}
      - {{kind: scan, max_findings: {{error: 0}}}}
      - {{kind: policy, require_provenance: [commit, build_url]}}
    approval: {{approvers: [alice, bob, carol], min_approvals: 1, timeout: 600s}}
"""

# Prefect's UI application alone, on the port given, for the API named in PREFECT_UI_API_URL.
UI_SERVER = """
import sys
import uvicorn
from prefect.server.api.server import create_ui_app
uvicorn.run(create_ui_app(ephemeral=False), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 60, fail: bool = True) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` at the deadline
    (or return None, with ``fail=False``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)  # polling for a condition, with a deadline
    if not fail:
        return None
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ui_url(prefect_api: str) -> Iterator[str]:
    """Base URL of the Prefect UI (classic at ``/``, v2 at ``/v2/``) for the session's server."""
    port = _free_port()
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_UI_API_URL": prefect_api}
    proc = subprocess.Popen([sys.executable, "-c", UI_SERVER, str(port)], env=env)
    base = f"http://127.0.0.1:{port}"
    try:

        def settings() -> dict[str, Any] | None:
            assert proc.poll() is None, f"the UI server exited with {proc.returncode}"
            try:
                r = httpx.get(f"{base}/ui-settings", timeout=2)
            except httpx.TransportError:
                return None
            return dict(r.json()) if r.status_code == 200 else None

        ui_settings = wait_until(settings, "the UI server to answer /ui-settings", timeout=60)
        # The page must talk to the server the flows run against, or the form reaches nobody.
        assert ui_settings["api_url"] == prefect_api
        assert {"v1", "v2"} <= set(ui_settings["available_uis"])
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    context.set_default_timeout(30_000)
    p = context.new_page()
    try:
        yield p
    finally:
        context.close()


@pytest.fixture
def ui_setup(prefect_api: str, s3_server: LocalS3, prefix: str, tmp_path: Path) -> Setup:
    cfg = tmp_path / "promotion.yaml"
    cfg.write_text(PIPELINE.format(endpoint=s3_server.endpoint_url, bucket=s3_server.bucket, prefix=prefix))
    return Setup(cfg)


def approvals(s: Setup) -> list[tuple[str, str, bool]]:
    return [
        (r.actor, r.details["decision"], r.details["counted"])
        for r in s.store.ledger.records("api")
        if r.event == "approval"
    ]


def state_of(run_id: str) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(UUID(run_id)).state


def paused_again(run_id: str, s: Setup, answers: int) -> bool:
    """The run waits for the next answer: ``answers`` are in the ledger and its new form is stored.

    The ledger record is written after the run left PAUSED and before it pauses again, so a PAUSED
    state seen once the record is there is the new pause.
    """
    from prefect.client.orchestration import get_client

    from flows.approval import form_ready

    if len(approvals(s)) < answers:
        return False
    with get_client(sync_client=True) as client:
        return form_ready(client, client.read_flow_run(UUID(run_id)))


def assert_form_above_the_fold(page: Page, container: Any, decision: Any, shot: Path) -> None:
    """The whole description and the Decision control show in the window with nothing scrolled.

    The classic UI scrolls the description inside a box of its own, the v2 UI scrolls the dialog:
    the report link (the description's first line) and the control are checked whole in view,
    which an element clipped by a scrolled box is not. A screenshot is kept as a test artifact
    (tests/browser.artifact_path).
    """
    from playwright.sync_api import expect

    decision.wait_for(state="visible")
    last_gate = container.get_by_text("policy: provenance has commit")
    last_line = container.get_by_text("May approve")
    scrolled = page.evaluate(
        "() => window.scrollY + [...document.querySelectorAll('*')].reduce((n, e) => n + e.scrollTop, 0)"
    )
    page.screenshot(path=str(shot))  # before the checks: it shows what failed too
    assert scrolled == 0, "something scrolled before the check"
    for element in (report_link_of(container), last_gate, last_line, decision):
        expect(element).to_be_in_viewport(ratio=1)


def report_link_of(container: Any) -> Any:
    return container.get_by_role("link", name="stage report")


def report_link(container: Any) -> str:
    """Where the description's stage report link leads, resolved by the browser."""
    return str(report_link_of(container).evaluate("a => a.href"))


def test_classic_ui_refused_answer_then_approval(
    ui_setup: Setup, ui_url: str, page: Page, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    from flows.pipeline import promote_pipeline

    s = ui_setup
    d = s.publish(tmp_path)  # commit author: dana
    run = Run(promote_pipeline, service="api", digest=str(d), requested_by="erin", config=str(s.config))
    paused = wait_for_paused(run)

    def open_form() -> Any:
        # A deep link without /v2 stays on the classic UI.
        page.goto(f"{ui_url}/runs/flow-run/{paused}")
        page.get_by_role("button", name="Resume").click()
        card = page.locator(".p-modal__card").filter(has_text="Resume Flow Run")
        # The card opens before the form's schema is loaded; the fields come a moment later.
        card.locator(".p-select-button__control").first.wait_for(state="visible")
        return card

    def answer(card: Any, decision: str, approver: str, reason: str) -> None:
        control = card.locator(".p-select-button__control").first
        control.press("ArrowDown")  # a click alone may not open the select when headless
        page.locator(".p-select-option", has_text=decision).click()
        fields = card.locator("textarea")
        fields.nth(0).fill(approver)
        fields.nth(1).fill(reason)
        card.get_by_role("button", name="Submit").click()

    card = open_form()
    assert_form_above_the_fold(
        page, card, card.locator(".p-select-button__control").first, artifact_path("classic-form.png")
    )
    assert "May approve" in card.inner_text()
    report = report_link(card)
    assert report == f"{ui_url}/artifacts/key/promotion-api-prod"

    # dana, the commit author, is no approver: refused, recorded as not counted, the run waits on.
    answer(card, "approve", "dana", "my own change")
    wait_until(lambda: paused_again(paused, s, 1), "the run to wait again after the refused answer")
    assert approvals(s) == [("dana", "approve", False)]
    refused = next(r for r in s.store.ledger.records("api") if r.event == "approval")
    assert "'dana' is not an allowed approver" in refused.details["why"]
    assert state_of(paused).is_paused()

    card = open_form()
    assert "So far refused: dana." in card.inner_text()  # the next approver sees what was refused
    answer(card, "approve", "alice", "checked the gates")
    state = run.join()
    assert state.is_completed(), state.message
    assert state_of(paused).is_completed()
    assert approvals(s) == [("dana", "approve", False), ("alice", "approve", True)]
    last = s.store.ledger.records("api")[-1]
    assert (last.event, last.environment, last.digest) == ("promoted", "prod", d)
    assert s.store.ledger.state("api").environments["prod"].digest == d
    # The description's link opens the stage report, written now that the stage ended.
    page.goto(report)
    expect(page.get_by_text("api → prod: promoted").first).to_be_visible()


def test_v2_ui_rejection_stops_the_promotion(
    ui_setup: Setup, ui_url: str, page: Page, tmp_path: Path, prefect_api: str, s3_server: LocalS3
) -> None:
    """The product's main path: a run of the deployment, served by ``promote serve``, suspended
    (no process) while the form waits; the answer resumes it and it re-enters to record it."""

    s = ui_setup
    d = s.publish(tmp_path)
    served = Served(
        s.config, {**os.environ, "PREFECT_API_URL": prefect_api, **s3_server.env()}, tmp_path / "serve.log"
    )
    served.start()
    try:
        paused = served.start_run("api", d)
        wait_suspended(paused)
        _v2_reject(s, ui_url, page, tmp_path, paused)
    finally:
        served.stop()


def _v2_reject(s: Setup, ui_url: str, page: Page, tmp_path: Path, paused: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{ui_url}/v2/runs/flow-run/{paused}")
    page.get_by_role("button", name="Open menu").click()
    page.get_by_role("menuitem", name="Resume").click()
    dialog = page.get_by_role("dialog")
    decision = dialog.get_by_role("button", name="Select Decision")
    assert_form_above_the_fold(page, dialog, decision, artifact_path("v2-form.png"))
    assert "May approve" in dialog.inner_text()
    report = report_link(dialog)
    assert report == f"{ui_url}/v2/artifacts/key/promotion-api-prod"

    def submit(dialog: Any, decision: Any) -> None:
        decision.click()
        page.get_by_role("option", name="reject").click()
        fields = dialog.locator("textarea")
        fields.nth(0).fill("bob")
        fields.nth(1).fill("release freeze")
        dialog.get_by_role("button", name="Resume").click()

    submit(dialog, decision)
    # The test server is SQLite: under load it can refuse the resume's write ("database is
    # locked", a documented limit; production runs PostgreSQL) and the run stays suspended with
    # its form. A person would submit again; so does the test, once, through the same form.
    left = wait_until(
        lambda: state_of(paused).name != "Suspended" or None, "the resume", timeout=20, fail=False
    )
    if left is None:
        print("the server refused the first resume; submitting the form again")
        page.goto(f"{ui_url}/v2/runs/flow-run/{paused}")
        page.get_by_role("button", name="Open menu").click()
        page.get_by_role("menuitem", name="Resume").click()
        dialog = page.get_by_role("dialog")
        submit(dialog, dialog.get_by_role("button", name="Select Decision"))

    state = wait_final(paused).state
    assert state.is_failed()
    assert state.message == (
        "stopped at prod: ApprovalRejected: promotion to prod rejected by bob: release freeze"
    )
    assert approvals(s) == [("bob", "reject", True)]
    assert s.store.ledger.records("api")[-1].event == "rejected"
    assert "prod" not in s.store.ledger.state("api").environments
    page.goto(report)
    expect(page.get_by_text("api → prod: rejected").first).to_be_visible()


# --- the description alone (no browser) -------------------------------------------------------


def _description(decisions: list[tuple[Decision, bool, str]]) -> str:
    pipeline = parse_pipeline(PIPELINE.format(endpoint="http://127.0.0.1:9", bucket="bucket", prefix="p/"))
    prod = pipeline.environments[1]
    assert prod.approval is not None
    digest = Digest("sha256:" + "ab" * 32)
    artifact = ArtifactRecord(
        service="api",
        digest=digest,
        size=1,
        media_type="application/octet-stream",
        version="1.4.0",
        created_at=dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
        provenance=Provenance(
            commit="c0ffee", commit_author="dana", build_url="https://ci/1", published_by="ci"
        ),
    )
    current = EnvState(
        digest=Digest("sha256:" + "cd" * 32), version="1.3.9", since=dt.datetime(2026, 11, 30, tzinfo=dt.UTC),
        by="alice", seq=7,
    )  # fmt: skip
    long_reasons = [
        "line coverage 50.0% (5/10) is below the minimum 80.0% of the lines measured by the report"
    ] * 9
    gates = [
        GateResult(gate="tests", kind="tests", passed=True, measured={"pass_rate": 1.0},
                   thresholds={"min_pass_rate": 1.0}, reasons=["12 of 12 executed tests passed (100.0%)"]),
        GateResult(gate="coverage", kind="coverage", passed=False, measured={"line_rate": 0.5},
                   thresholds={"min_line_rate": 0.8}, reasons=long_reasons),
    ]  # fmt: skip
    tally = Tally(policy=prod.approval, commit_author="dana", requested_by="erin")
    for decision, accepted, _ in decisions:
        if accepted:
            tally.add(decision)
    return approval_description(artifact, prod, current, gates, tally, decisions)


def test_description_is_a_few_short_lines_without_a_table() -> None:
    from flows._report import artifact_key

    text = _description([])
    lines = text.splitlines()
    assert len(lines) == 4, text  # what changes and the report link, one line per gate (2), who may approve
    assert "|" not in text  # no table
    assert all(len(line) < 200 for line in lines), text
    assert lines[0] == (
        "**prod**: 1.3.9 (`sha256:cdcdcdcdcdcd`, since 2026-11-30) → **api 1.4.0** (`sha256:abababababab`),"
        f" commit c0ffee · [stage report](../../artifacts/key/{artifact_key('promotion', 'api', 'prod')})"
    )
    assert lines[1] == "- **pass** tests: 12 of 12 executed tests passed (100.0%)"
    # a long reason: its first clause, cut, and how many more the stage report has
    assert lines[2].startswith("- **FAIL** coverage: line coverage 50.0% (5/10) is below")
    assert lines[2].endswith("… (+8 more)")
    assert lines[3] == "- **May approve**: 1 of alice, bob, carol, not dana (author) nor erin (requester)."


def test_description_says_who_approved_and_who_was_refused() -> None:
    refused = "'dana' is not an allowed approver (allowed: alice, bob, carol)"
    text = _description(
        [
            (Decision(decision="approve", approver="dana", reason=""), False, refused),
            (Decision(decision="approve", approver="dana", reason="again"), False, refused),
            (Decision(decision="approve", approver="alice", reason="ok"), True, "accepted"),
        ]
    )
    assert text.endswith("nor erin (requester). So far approved: alice; refused: dana.")
