"""Approvers are told: `promote setup`'s automations send approval notifications through a Prefect
notification block, here to a real HTTP server on 127.0.0.1 standing in for the chat service.

The Prefect server renders the message and calls the block itself (its actions service), so the
messages arrive asynchronously, seconds after the events: every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.flows.harness import Run, Setup, promotion_events, resume, wait_for_paused

#: Part of the webhook URL, as a chat service's token would be: it must never leak.
TOKEN = f"T0KEN{uuid.uuid4().hex}"


class Inbox:
    """An HTTP server that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.changed = threading.Condition()
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.end_headers()
                with inbox.changed:
                    inbox.messages.append((self.path, json.loads(body)))
                    inbox.changed.notify_all()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, *needles: str, timeout: float = 45) -> str:
        """The first message whose text contains every needle (waits on a condition, with a deadline)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for _, body in self.messages:
                    if all(n in body["text"] for n in needles):
                        return str(body["text"])
                left = deadline - time.monotonic()
                if left <= 0:
                    texts = [b["text"][:120] for _, b in self.messages]
                    raise AssertionError(f"no notification with {needles}; got {texts}")
                self.changed.wait(left)


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    box = Inbox()
    yield box
    box.server.shutdown()


def promote(api: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "promotion.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PREFECT_API_URL": api},
        timeout=180,
    )


def automations_of(pipeline: Any) -> dict[str, int]:
    from prefect.client.orchestration import get_client

    from flows.setup import APPROVAL_EVENTS, notification_automation_name

    with get_client(sync_client=True) as client:
        return {
            kind: len(client.read_automations_by_name(notification_automation_name(kind, pipeline)))
            for kind in APPROVAL_EVENTS
        }


def with_notifications(s: Setup, block: str, events: str = "") -> Setup:
    text = s.config.read_text().split("notifications:")[0]
    extra = f", events: [{events}]" if events else ""
    s.config.write_text(text + f'notifications:\n  approvals: {{block: "{block}"{extra}}}\n')
    return Setup(s.config)


def test_approvers_are_told_when_an_approval_is_requested_decided_and_timed_out(
    make_setup: Callable[..., Setup], tmp_path: Path, prefect_api: str, inbox: Inbox
) -> None:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.types import SecretDict

    from flows.pipeline import promote_pipeline
    from flows.setup import ensure_notification_automations

    block = f"approvers-{uuid.uuid4().hex[:8]}"
    CustomWebhookNotificationBlock(
        name="approvers",
        url=f"http://127.0.0.1:{inbox.port}/hooks/{{{{token}}}}",
        json_data={"text": "{{subject}}\n{{body}}"},
        secrets=SecretDict({"token": TOKEN}),
    ).save(block)
    s = with_notifications(make_setup(timeout="120s"), f"custom-webhook/{block}")
    cfg = str(s.config)
    try:
        # A block that does not exist is refused in one line, naming it.
        missing = with_notifications(Setup(s.config), "custom-webhook/nope")
        r = promote(prefect_api, "-c", cfg, "setup")
        assert r.returncode == 2, r.stdout + r.stderr
        assert r.stderr.strip().count("\n") == 0, r.stderr
        assert "ConfigError:" in r.stderr and "no custom-webhook block named 'nope'" in r.stderr
        assert automations_of(missing.pipeline) == {"requested": 0, "decided": 0, "timed_out": 0}

        # Twice: one automation per kind, and nothing says the webhook's URL or token.
        s = with_notifications(s, f"custom-webhook/{block}")
        for _ in range(2):
            r = promote(prefect_api, "-c", cfg, "setup")
            assert r.returncode == 0, r.stderr
            assert f"custom-webhook/{block} (3 automations" in r.stdout
            assert TOKEN not in r.stdout + r.stderr and str(inbox.port) not in r.stdout + r.stderr
        assert automations_of(s.pipeline) == {"requested": 1, "decided": 1, "timed_out": 1}

        # A promotion waits at prod: the approvers hear what, what changes, and where to answer.
        ui = prefect_api.removesuffix("/api")
        d = s.publish(tmp_path)
        run = Run(promote_pipeline, service="api", digest=str(d), config=cfg)
        stage = wait_for_paused(run)
        requested = inbox.wait_for("Approval requested", str(d))
        assert "api 1.0" in requested and "-> prod" in requested
        assert f"{ui}/runs/flow-run/{stage}" in requested
        assert "prod runs nothing now -> will run 1.0" in requested
        assert "1 of alice, bob, carol" in requested
        assert inbox.messages[0][0] == f"/hooks/{TOKEN}"  # the block filled its secret in

        # A stranger's answer is refused (and everyone is told why); then alice approves.
        first_round = _pause_key(stage)
        resume(stage, "approve", "mallory", "let me")
        refused = inbox.wait_for("Answer refused", str(d))
        assert "mallory answered approve (let me): refused: 'mallory' is not an allowed approver" in refused
        _wait_paused_again(run, stage, first_round)
        resume(stage, "approve", "alice", "looks good")
        approved = inbox.wait_for("Approved: api 1.0 -> prod", str(d))
        assert "alice answered approve (looks good): approved by alice" in approved
        assert f"{ui}/runs/flow-run/{stage}" in approved
        assert run.join().is_completed()

        # Nobody answers the next build within 4 s: they are told it timed out and nothing moved.
        s.config.write_text(s.config.read_text().replace("timeout: 120s", "timeout: 4s"))
        s = Setup(s.config)
        d2 = s.publish(tmp_path)
        run2 = Run(promote_pipeline, service="api", digest=str(d2), config=cfg)
        # The stage run that waited, from its request event (it may time out before a poll sees it).
        (asked,) = [
            e
            for e in promotion_events(prefect_api, d2, {"promotion.approval.requested"})
            if e["event"] == "promotion.approval.requested"
        ]
        stage2 = asked["payload"]["flow_run_id"]
        timed_out = inbox.wait_for("Approval timed out", str(d2))
        assert "approval timed out after 4s" in timed_out and "prod keeps what it runs (1.0" in timed_out
        assert f"{ui}/runs/flow-run/{stage2}" in timed_out
        assert not run2.join().is_completed()

        # The token is nowhere the product writes: events, the ledger.
        events = promotion_events(
            prefect_api, d, {"promotion.approval.requested", "promotion.approval.decided"}
        )
        assert TOKEN not in json.dumps(events)
        assert TOKEN not in json.dumps([r.model_dump(mode="json") for r in s.store.ledger.records("api")])

        # The pipeline file changed: setup brings the automations in line with it.
        s = with_notifications(s, f"custom-webhook/{block}", events="requested")
        r = promote(prefect_api, "-c", cfg, "setup")
        assert r.returncode == 0, r.stderr
        assert automations_of(s.pipeline) == {"requested": 1, "decided": 0, "timed_out": 0}
    finally:
        # Other tests of the session promote service api too: leave no automation pointing here.
        s.config.write_text(s.config.read_text().split("notifications:")[0])
        ensure_notification_automations(Setup(s.config).pipeline, cfg)


def _pause_key(run_id: str) -> str | None:
    from uuid import UUID

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(run_id)).state
    return state.state_details.pause_key if state else None


def _wait_paused_again(run: Run, run_id: str, old_key: str | None, timeout: float = 60) -> None:
    """Until the stage run is paused under a new pause key (the next round), its form stored."""
    from uuid import UUID

    from prefect.client.orchestration import get_client

    from flows.approval import form_ready

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            current = client.read_flow_run(UUID(run_id))
            assert current.state is not None
            key = current.state.state_details.pause_key
            if current.state.is_paused() and key != old_key and form_ready(client, current):
                return
            assert run.thread.is_alive(), f"run ended: {run.state} {run.error}"
            time.sleep(0.1)  # polling the API for a condition, with a deadline
    raise AssertionError("the run did not pause again")
