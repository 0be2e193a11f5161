"""The demo behind `make demo`: the product as its users run it, on this machine.

It starts SeaweedFS (S3) and a Prefect server in the background, runs `promote setup`, serves the
deployments (`promote serve`) and the CI webhook receiver (`promote webhook serve`), publishes the
example artifact with real evidence, and sends a signed webhook as CI would. The pipeline run
promotes dev → staging and pauses at prod for approval: the demo prints the Prefect UI page where
the approval form waits, then approves through the CLI after a short countdown
(DEMO_INTERACTIVE=1 waits for a person to approve in the UI instead). It ends with
`promote status`, `promote history`, `promote metrics` and `promote report` (the HTML dashboard,
its path printed; DEMO_REPORT to choose it, default .demo/report.html), and stops everything it
started, Ctrl-C included.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
#: Outside the demo's temporary directory (removed at the end), so that it can still be opened.
REPORT = Path(os.environ.get("DEMO_REPORT", REPO / ".demo" / "report.html")).resolve()

from promotion.local_s3 import LocalS3  # noqa: E402
from promotion.signing import standard_webhooks_key, standard_webhooks_signature  # noqa: E402
from scripts.build_example_artifact import build  # noqa: E402

BIN = Path(sys.executable).parent
PROMOTE = str(BIN / "promote")
EVIDENCE = REPO / "examples" / "evidence"
INTERACTIVE = os.environ.get("DEMO_INTERACTIVE", "") not in ("", "0")
COUNTDOWN = int(os.environ.get("DEMO_COUNTDOWN", "5"))


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def promote(env: dict[str, str], *args: str, capture: bool = False) -> str:
    print(f"$ promote {' '.join(shlex.quote(a) for a in args)}", flush=True)
    # Its own session, as the background servers have: Ctrl-C reaches only the demo, which then
    # kills this child (subprocess.run does on the interrupt). A child hit by Ctrl-C while its
    # interpreter starts would print Python's own traceback.
    r = subprocess.run(
        [PROMOTE, *args],
        env=env,
        text=True,
        stdout=subprocess.PIPE if capture else None,
        start_new_session=True,
    )
    if r.returncode != 0:
        raise SystemExit(f"demo: 'promote {args[0]}' exited {r.returncode}")
    if capture:
        print(r.stdout, end="", flush=True)
        return r.stdout.strip()
    return ""


@contextmanager
def background(
    name: str, args: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process in its own process group, stopped (group and all) on exit."""
    with log.open("ab") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def wait_http(url: str, what: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"demo: {what} exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)  # polling a readiness probe, with a deadline
    raise SystemExit(f"demo: {what} did not answer at {url} within {timeout:.0f}s; see {log}")


def api_get(api: str, path: str) -> Any:
    r = httpx.get(f"{api}{path}", timeout=10)
    r.raise_for_status()
    return r.json()


def api_post(api: str, path: str, body: dict[str, Any]) -> Any:
    r = httpx.post(f"{api}{path}", json=body, timeout=10)
    r.raise_for_status()
    return r.json()


def watch_until_paused(api: str, run_id: str, timeout: float = 150) -> str:
    """Print each stage as it finishes; return the id of the run that waits for approval.

    A run of a deployment (as here: the webhook started it) suspends itself: that is the pipeline
    run, and no process is left waiting. A stage run that pauses is the in-process fallback.
    """
    deadline = time.monotonic() + timeout
    shown: set[str] = set()
    while time.monotonic() < deadline:
        run = api_get(api, f"/flow_runs/{run_id}")
        if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            raise SystemExit(
                f"demo: the pipeline ended before pausing: {run['state_name']}: {run['state']['message']}"
            )
        if run["state_type"] == "PAUSED" and run["state"]["state_details"].get("run_input_keyset"):
            print(f"   {run['name']}: {run['state_name']}", flush=True)
            return run_id
        children = api_post(
            api,
            "/flow_runs/filter",
            {"flow_runs": {"parent_flow_run_id": {"any_": [run_id]}}, "sort": "EXPECTED_START_TIME_ASC"},
        )
        for child in children:
            key = f"{child['id']}:{child['state_type']}"
            if key not in shown and child["state_type"] in ("COMPLETED", "FAILED", "PAUSED"):
                shown.add(key)
                print(f"   {child['name']}: {child['state_name']}", flush=True)
            if child["state_type"] == "PAUSED":
                return str(child["id"])
        time.sleep(1)  # polling the API for progress, with a deadline
    raise SystemExit("demo: the pipeline did not reach the approval in time")


def wait_finished(api: str, run_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run: dict[str, Any] = api_get(api, f"/flow_runs/{run_id}")
        if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return run
        time.sleep(1)  # polling the API, with a deadline
    raise SystemExit("demo: the pipeline did not finish in time")


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    started = time.monotonic()
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="promotion-demo-")))
        logs = tmp / "logs"
        logs.mkdir()
        s3 = stack.enter_context(LocalS3(bucket="promotion", log_path=str(logs / "seaweedfs.log")))
        s3.client().create_bucket(Bucket="hello-releases")  # the environments' deploy target
        say(f"SeaweedFS S3 is up at {s3.endpoint_url}")

        prefect_port, hook_port = free_port(), free_port()
        api = f"http://127.0.0.1:{prefect_port}/api"
        secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
        env = {
            **os.environ,
            **s3.env(),
            "PROMOTION_CONFIG": str(REPO / "promotion.yaml"),
            "PREFECT_HOME": str(tmp / "prefect"),
            "PREFECT_API_URL": api,
            "PREFECT_UI_API_URL": api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_RUNNER_POLL_FREQUENCY": "2",
            "PROMOTION_WEBHOOK_SECRET": secret,
        }
        for var in (
            "PROMOTION_S3_PREFIX",
            "PROMOTION_GITHUB_WEBHOOK_SECRET",
            "PROMOTION_GITLAB_WEBHOOK_TOKEN",
        ):
            env.pop(var, None)

        say("Starting a Prefect server (SQLite) in the background (~20 s on 2 cores)")
        server_log = logs / "prefect-server.log"
        server = stack.enter_context(
            background(
                "prefect server",
                [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
                env,
                server_log,
            )
        )
        wait_http(f"{api}/health", "the Prefect server", server, server_log)
        print(f"Prefect UI: http://127.0.0.1:{prefect_port}/", flush=True)

        say("One-time setup: bucket check, crash-detection automation, block types")
        promote(env, "setup")

        say("Serving the deployments (pipeline, rollback, nightly sweep) and the CI webhook receiver")
        serve_log, hook_log = logs / "serve.log", logs / "webhook.log"
        stack.enter_context(background("promote serve", [PROMOTE, "serve"], env, serve_log))
        hook = stack.enter_context(
            background(
                "webhook receiver",
                [PROMOTE, "webhook", "serve", "--host", "127.0.0.1", "--port", str(hook_port)],
                env,
                hook_log,
            )
        )
        wait_http(f"http://127.0.0.1:{hook_port}/healthz", "the webhook receiver", hook, hook_log)
        wait_deployment(api, "promote-pipeline", "pipeline")

        say("CI builds the artifact and publishes it with its evidence")
        artifact = build(tmp / "hello-1.0.0.tar.gz")
        digest = promote(
            env,
            "publish", str(artifact), "--service", "hello", "--version", "1.0.0",
            "--evidence", f"junit={EVIDENCE / 'junit.xml'}",
            "--evidence", f"coverage={EVIDENCE / 'coverage.xml'}",
            "--evidence", f"sarif={EVIDENCE / 'bandit.sarif'}",
            "--commit", "4f3c2a1e9b8d7c6f5a4b3c2d1e0f9a8b7c6d5e4f", "--commit-author", "dana",
            "--build-url", "https://ci.example.com/hello/builds/42", "--builder", "demo-ci", "--as", "ci-bot",
            capture=True,
        )  # fmt: skip

        say("CI calls the webhook, signed (Standard Webhooks), to start the promotion")
        body = json.dumps(
            {"service": "hello", "digest": digest, "version": "1.0.0", "requested_by": "dana"}
        ).encode()
        msg_id, ts = f"msg_{uuid.uuid4().hex}", int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": standard_webhooks_signature(standard_webhooks_key(secret), msg_id, ts, body),
        }
        answer = httpx.post(f"http://127.0.0.1:{hook_port}/hooks/standard", content=body, headers=headers)
        print(f"POST /hooks/standard -> {answer.status_code} {answer.text}", flush=True)
        if answer.status_code != 202:
            raise SystemExit("demo: the webhook did not accept the delivery")
        run_id = answer.json()["flow_run_id"]
        again = httpx.post(f"http://127.0.0.1:{hook_port}/hooks/standard", content=body, headers=headers)
        same = again.status_code == 202 and again.json()["flow_run_id"] == run_id
        print(f"the same delivery again -> {again.status_code}, {'same run' if same else 'ANOTHER RUN'}")

        say("The pipeline runs: gates, deploy, verification, stage by stage")
        stage = watch_until_paused(api, run_id)
        url = f"http://127.0.0.1:{prefect_port}/runs/flow-run/{stage}"
        say("prod needs an approval: the form waits in the Prefect UI")
        print(f"   {url}", flush=True)
        if stage == run_id:
            print("   the pipeline run is suspended: no process waits for the answer", flush=True)
        promote(env, "pending")
        if INTERACTIVE:
            print("   open it, choose 'approve', type alice (bob or carol), and submit.", flush=True)
        else:
            for n in range(COUNTDOWN, 0, -1):
                print(
                    f"   approving from the CLI as alice in {n}s (DEMO_INTERACTIVE=1 to do it in the UI)",
                    flush=True,
                )
                time.sleep(1)  # a countdown for the person watching, not synchronisation
            promote(env, "approve", stage, "--as", "alice", "--reason", "demo: reviewed the gate report")
        final = wait_finished(api, run_id, timeout=3600 if INTERACTIVE else 120)
        print(f"pipeline run: {final['state_name']}: {final['state']['message']}", flush=True)

        say("Where everything is now")
        promote(env, "status")
        say("The ledger")
        promote(env, "history", "hello")
        promote(env, "ledger", "verify")
        say("Delivery metrics (DORA), from the ledger alone")
        promote(env, "metrics", "--service", "hello")
        say("The delivery dashboard: one HTML file to open in a browser")
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        promote(env, "report", "--service", "hello", "-o", str(REPORT))
        print(f"report written: {REPORT}", flush=True)
        say(f"Done in {time.monotonic() - started:.0f}s; stopping everything the demo started")
        if final["state_type"] != "COMPLETED":
            return 1
    return 0


def wait_deployment(api: str, flow: str, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.get(f"{api}/deployments/name/{flow}/{name}", timeout=5)
        if r.status_code == 200:
            return
        time.sleep(0.5)  # polling the API, with a deadline
    raise SystemExit(f"demo: deployment {flow}/{name} was not registered; see the serve log")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: everything the demo started has been stopped", file=sys.stderr)
        sys.exit(130)
