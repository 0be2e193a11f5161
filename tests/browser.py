"""Debian's Chromium (/usr/bin/chromium) through Python playwright, for the tests that look at a
page as a person would (the approval form in Prefect's UI, the delivery report). Launched by
executable path: ``playwright install`` (a browser download) is never used."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = Path("/usr/bin/chromium")
#: Where the browser tests keep their screenshots after the run (the issue asks for them as test
#: artifacts; a test's tmp_path is gone with the next run): ``test-artifacts/`` at the repository
#: root (git-ignored), or PROMOTION_TEST_ARTIFACTS.
ARTIFACTS = Path(
    os.environ.get("PROMOTION_TEST_ARTIFACTS") or Path(__file__).resolve().parent.parent / "test-artifacts"
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium; skipped off CI when the package is missing, a failure on CI."""
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing in CI: .ci/run installs the Debian package chromium")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (the CI installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def artifact_path(name: str) -> Path:
    """A path under :data:`ARTIFACTS` for a file a test keeps (e.g. ``report.png``); printed, so
    ``pytest -s`` says where it is."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    print(f"kept: {path}")
    return path
