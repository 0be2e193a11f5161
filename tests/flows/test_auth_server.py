"""The product against a Prefect server that requires basic auth (issue 8, item 10).

One real Prefect server of this module's own, started with ``PREFECT_SERVER_API_AUTH_STRING``
(tests/prefect_auth.py), and the session's SeaweedFS. Every product command runs as a user runs
it, in a subprocess given the credential in ``PREFECT_API_AUTH_STRING``: ``promote setup``,
``promote run``, ``promote serve``, ``promote webhook serve``, ``promote approve``. The test
process talks to the server with raw HTTP (so that what is, or is not, sent is explicit) and
with Prefect's own client given the credential.

What basic auth protects is checked at the door: a resume of a paused approval without the
credential (or with a wrong one) is refused with 401 and the run stays paused; the same answer
through the CLI with the credential goes through and the promotion completes.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from promotion.digest import Digest
from promotion.local_s3 import LocalS3
from tests.flows import harness
from tests.prefect_auth import AUTH, auth_prefect_server, basic_auth, free_port

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"auth-server-test-secret-0123456789").decode()
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
#: The webhook receiver's configuration, added to the flow tests' pipeline (harness.PIPELINE).
WEBHOOKS = "webhooks: {sources: {standard: {secret_env: PROMOTION_TEST_WEBHOOK_SECRET}}}\n"


@pytest.fixture(scope="module")
def auth_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with auth_prefect_server(tmp_path_factory.mktemp("prefect-auth-server")) as url:
        yield url


@dataclass
class Product:
    """The product installed against the authenticated server: a pipeline file and an env."""

    api: str
    setup: harness.Setup
    env: dict[str, str]

    def args(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "promotion.cli", "-c", str(self.setup.config), *args]

    def promote(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.args(*args), capture_output=True, text=True, env=self.env, timeout=180)

    def start(self, log: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            return subprocess.Popen(
                self.args(*args), env=env or self.env, stdout=out, stderr=subprocess.STDOUT
            )

    def env_with_credential_in_url(self) -> dict[str, str]:
        """The other way Prefect's client takes the credential: ``http://user:password@host/api``."""
        env = {k: v for k, v in self.env.items() if k != "PREFECT_API_AUTH_STRING"}
        env["PREFECT_API_URL"] = self.api.replace("http://", f"http://{AUTH}@", 1)
        return env

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(f"{self.api}{path}", auth=basic_auth(), timeout=10, **kw)

    def post(self, path: str, body: Any) -> httpx.Response:
        return httpx.post(f"{self.api}{path}", json=body, auth=basic_auth(), timeout=10)

    def state(self, flow_run_id: str) -> str:
        r = self.get(f"/flow_runs/{flow_run_id}")
        r.raise_for_status()
        return str(r.json()["state"]["type"])

    def final_state(self, flow_run_id: str) -> str | None:
        now = self.state(flow_run_id)
        return now if now in FINAL else None

    def has_event(self, digest: Digest, name: str) -> bool:
        """Whether the server stored the promotion event ``name`` about ``digest`` (stored async)."""
        body = {"filter": {"any_resource": {"id": [f"promotion.digest.{digest}"]}}, "limit": 50}
        r = self.post("/events/filter", body)
        r.raise_for_status()
        return name in {e["event"] for e in r.json()["events"]}

    def ledger_digest(self, environment: str) -> Digest | None:
        env = self.setup.store.ledger.state("api").environments.get(environment)
        return env.digest if env else None


@pytest.fixture
def product(auth_api: str, s3_server: LocalS3, prefix: str, tmp_path: Path) -> Product:
    cfg = tmp_path / "promotion.yaml"
    cfg.write_text(
        harness.PIPELINE.format(
            endpoint=s3_server.endpoint_url,
            bucket=s3_server.bucket,
            prefix=prefix,
            min_approvals=1,
            timeout="300s",
        )
        + WEBHOOKS
    )
    env = {
        **os.environ,
        "PREFECT_API_URL": auth_api,
        "PREFECT_API_AUTH_STRING": AUTH,
        # The clients' own home: no profile of this machine, nor the session server's settings.
        "PREFECT_HOME": str(tmp_path / "prefect-client"),
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",  # promote serve picks scheduled runs up within ~1 s
        "PROMOTION_TEST_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    env.pop("PROMOTION_CONFIG", None)
    return Product(auth_api, harness.Setup(cfg), env)


def wait_until(
    what: str,
    check: Callable[[], Any],
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> Any:
    """Poll ``check`` until it returns something truthy, with a deadline; fail if ``proc`` ends."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            shown = log.read_text()[-3000:] if log else ""
            raise AssertionError(f"{what}: the process ended with {proc.returncode}\n{shown}")
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.3)  # polling for a condition, with a deadline


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Ctrl-C, as an operator stops promote serve; kill -9 only if it does not stop."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_setup_and_run_with_the_credential(product: Product, tmp_path: Path) -> None:
    r = product.promote("setup")
    assert r.returncode == 0, r.stderr
    assert "ok automation" in r.stdout and "ok block types registered" in r.stdout
    automations = product.post("/automations/filter", {}).json()
    assert any(a["name"].startswith("promotion: ") for a in automations)

    d = product.setup.publish(tmp_path)
    r = product.promote("run", "api", str(d), "--to", "dev", "--as", "erin")
    assert r.returncode == 0, r.stderr
    assert f"promoted {d.short} to dev" in r.stdout
    assert product.ledger_digest("dev") == d
    # Events go over Prefect's websocket, which must carry the credential too (else dropped).
    wait_until(
        "the promoted event is stored", functools.partial(product.has_event, d, "promotion.promoted"), 30
    )


def test_serve_and_the_webhook_receiver_with_the_credential(product: Product, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    by_client, by_webhook = product.setup.publish(tmp_path), product.setup.publish(tmp_path)
    serve_log, hook_log = tmp_path / "serve.log", tmp_path / "webhook.log"
    serve = product.start(serve_log, "serve")
    hook_port = free_port()
    # The receiver is given the credential inside PREFECT_API_URL: the UI link it answers CI with
    # is built from that URL and must not carry the credential along.
    hook = product.start(
        hook_log,
        *("webhook", "serve", "--host", "127.0.0.1", "--port", str(hook_port)),
        env=product.env_with_credential_in_url(),
    )
    try:
        deployment = wait_until(
            "promote serve registers its deployments",
            lambda: (
                (r := product.get("/deployments/name/promote-pipeline/pipeline")).status_code == 200
                and r.json()
            ),
            timeout=60,
            proc=serve,
            log=serve_log,
        )
        # Prefect's own client, given the credential, as an operator's script would start a run.
        with temporary_settings(updates={PREFECT_API_URL: product.api, PREFECT_API_AUTH_STRING: AUTH}):
            with get_client(sync_client=True) as client:
                started = client.create_flow_run_from_deployment(
                    deployment["id"], parameters={"service": "api", "digest": str(by_client), "to": "dev"}
                )

        hook_url = f"http://127.0.0.1:{hook_port}"

        def healthy() -> bool:
            try:
                return httpx.get(f"{hook_url}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until("promote webhook serve answers", healthy, timeout=60, proc=hook, log=hook_log)
        body = json.dumps({"service": "api", "digest": str(by_webhook), "to": "dev"}).encode()
        msg_id, ts = f"msg_{uuid.uuid4().hex}", int(time.time())
        key = base64.b64decode(WEBHOOK_SECRET.removeprefix("whsec_"))
        mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        }
        answer = httpx.post(f"{hook_url}/hooks/standard", content=body, headers=headers, timeout=60)
        assert answer.status_code == 202, answer.text
        from_hook = answer.json()["flow_run_id"]
        ui = product.api.removesuffix("/api")
        assert answer.json()["flow_run_url"] == f"{ui}/runs/flow-run/{from_hook}"
        run = product.get(f"/flow_runs/{from_hook}")
        assert run.status_code == 200, run.text  # the run exists on the authenticated server
        assert run.json()["deployment_id"] == deployment["id"]
        assert run.json()["parameters"]["digest"] == str(by_webhook)

        for run_id in (str(started.id), from_hook):
            final = wait_until(
                f"served run {run_id} ends",
                functools.partial(product.final_state, run_id),
                timeout=90,
                proc=serve,
                log=serve_log,
            )
            assert final == "COMPLETED", serve_log.read_text()[-3000:]
    finally:
        stop(hook)
        stop(serve)
    assert product.ledger_digest("dev") in (by_client, by_webhook)
    dev = [
        r
        for r in product.setup.store.ledger.records("api")
        if r.event == "promoted" and r.environment == "dev"
    ]
    assert {r.digest for r in dev} == {by_client, by_webhook}
    for d in (by_client, by_webhook):
        wait_until(f"events of {d.short}", functools.partial(product.has_event, d, "promotion.promoted"), 30)
    assert AUTH.partition(":")[2] not in serve_log.read_text() + hook_log.read_text()  # no secret logged


def test_a_resume_without_the_credential_is_refused(product: Product, tmp_path: Path) -> None:
    d = product.setup.publish(tmp_path)
    run_log = tmp_path / "run.log"
    run = product.start(run_log, "run", "api", str(d), "--as", "erin")
    try:

        def paused() -> str | None:
            # Only this test's promotion waits for a person on this module's server.
            body = {"flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}}}
            found = product.post("/flow_runs/filter", body).json()
            return str(found[0]["id"]) if found else None

        stage = wait_until("the prod stage pauses for approval", paused, timeout=90, proc=run, log=run_log)
        wait_until(
            "approval requested", functools.partial(product.has_event, d, "promotion.approval.requested"), 30
        )
        answer = {"run_input": {"decision": "approve", "approver": "alice", "reason": "no credential"}}
        for auth in (None, basic_auth("admin:wrong")):
            refused = httpx.post(
                f"{product.api}/flow_runs/{stage}/resume", json=answer, auth=auth, timeout=10
            )
            assert refused.status_code == 401, refused.text
        assert product.state(stage) == "PAUSED"
        # Nor can anyone without it forge the events that automations act on, nor read the run.
        assert httpx.post(f"{product.api}/events", json=[], timeout=10).status_code == 401
        assert httpx.get(f"{product.api}/flow_runs/{stage}", timeout=10).status_code == 401
        assert run.poll() is None

        ok = product.promote("approve", stage, "--as", "alice", "--reason", "with the credential")
        assert ok.returncode == 0, ok.stderr
        assert run.wait(timeout=90) == 0, run_log.read_text()[-3000:]
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert product.ledger_digest("prod") == d
    approvals = [r for r in product.setup.store.ledger.records("api") if r.event == "approval"]
    assert [(r.actor, r.reason) for r in approvals] == [("alice", "with the credential")]


def test_ui_links_never_carry_the_credential() -> None:
    """``promote pending``'s link, built from the environment without importing Prefect."""
    from promotion.prefect_api import without_credentials
    from promotion.requests import ui_link

    with_credential = {"PREFECT_API_URL": f"http://{AUTH}@prefect.internal:4200/api"}
    assert ui_link("r1", with_credential) == "http://prefect.internal:4200/runs/flow-run/r1"
    ui = {"PREFECT_UI_URL": f"https://{AUTH}@[::1]:8443/ui", **with_credential}
    assert ui_link("r1", ui) == "https://[::1]:8443/ui/runs/flow-run/r1"
    assert without_credentials("http://prefect:4200/api") == "http://prefect:4200/api"
