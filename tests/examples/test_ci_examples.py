"""The CI examples: valid YAML that uses real paths, and a webhook sender the receiver accepts."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from tests.promotion.test_webhook import Live, deployment, keys, live  # noqa: F401 - fixtures

REPO = Path(__file__).resolve().parents[2]
SENDER = REPO / "examples" / "ci" / "send-webhook.sh"


def test_workflows_parse_and_use_files_that_exist() -> None:
    gh = yaml.safe_load((REPO / "examples" / "ci" / "github-actions.yml").read_text())
    steps = gh["jobs"]["build"]["steps"]
    runs = "\n".join(s.get("run", "") for s in steps)
    gl = yaml.safe_load((REPO / "examples" / "ci" / "gitlab-ci.yml").read_text())
    scripts = "\n".join(line for job in ("test", "release") for line in gl[job]["script"])
    for text in (runs, scripts):
        for path in (
            "examples/ci/send-webhook.sh",
            "scripts/build_example_artifact.py",
            "examples/hello/tests",
        ):
            assert path in text
            assert (REPO / path).exists()
        assert "promote publish" in text and "--evidence junit=" in text


@pytest.mark.skipif(
    not all(shutil.which(t) for t in ("bash", "openssl", "xxd", "curl", "base64")),
    reason="send-webhook.sh needs bash, openssl, xxd, curl and base64",
)
def test_send_webhook_sh_is_accepted_and_idempotent(live: Live) -> None:  # noqa: F811
    env = {
        **os.environ,
        "PROMOTION_WEBHOOK_URL": live.url,
        "PROMOTION_WEBHOOK_SECRET": live.keys.standard,
        "PROMOTION_COMMIT": "c0ffee",
        "PROMOTION_REQUESTED_BY": 'dana "the releaser"',  # quotes survive the JSON
        "PROMOTION_DELIVERY_ID": f"gh-{uuid.uuid4().hex}",
    }
    first = subprocess.run(
        ["bash", str(SENDER), "api", str(live.digest), "1.2.3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert first.returncode == 0, first.stderr
    assert '"flow_run_id"' in first.stdout
    again = subprocess.run(
        ["bash", str(SENDER), "api", str(live.digest), "1.2.3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0 and again.stdout == first.stdout  # the same delivery: the same run

    bad = subprocess.run(
        ["bash", str(SENDER), "api", "latest"], env=env, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "is not a digest" in bad.stderr
    wrong = subprocess.run(
        ["bash", str(SENDER), "api", str(live.digest)],
        env={**env, "PROMOTION_WEBHOOK_SECRET": "whsec_" + "QUJD" * 8, "PROMOTION_DELIVERY_ID": "x1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert wrong.returncode != 0 and "401" in wrong.stderr + wrong.stdout
