"""Owners are told (services[].owners): `promote setup`'s automations send incidents through an
owner's Prefect notification block, and the flows POST them, signed with Standard Webhooks, to an
owner's webhook; both received here by real HTTP servers on 127.0.0.1. Once per incident.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import pytest

from promotion import signing
from promotion.config import Owner, OwnerWebhook, Pipeline
from promotion.digest import Digest
from promotion.local_s3 import LocalS3
from promotion.store import ArtifactStore
from tests.flows.harness import EVIDENCE, Run, Setup, promotion_events, resume, wait_for_paused
from tests.flows.test_deploy_and_rollback import World as DeployWorld
from tests.flows.test_deploy_and_rollback import world  # noqa: F401 - a fixture, used by name
from tests.flows.test_notifications import Inbox, promote
from tests.flows.test_sweep_flow import pipeline_deployment  # noqa: F401 - a fixture, used by name
from tests.promotion.test_metric_alerts import with_alerts
from tests.promotion.test_metrics import NOW, Seeder
from tests.promotion.test_sweep import DAY, World, make_world

HOUR = dt.timedelta(hours=1)

#: The webhook's signing secret: it must appear nowhere the product writes.
SECRET = "whsec_" + base64.b64encode(uuid.uuid4().bytes + uuid.uuid4().bytes).decode()
SECRET_ENV = "API_ONCALL_WEBHOOK_SECRET"


class Receiver:
    """A webhook receiver that keeps every request's headers and raw body."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(204)
                self.end_headers()
                with receiver.changed:
                    receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    receiver.changed.notify_all()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/incidents"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of(self, kind: str, digest: object) -> list[tuple[dict[str, str], bytes]]:
        with self.changed:
            return [
                (h, b)
                for h, b in self.requests
                if json.loads(b)["type"] == f"promotion.incident.{kind}"
                and json.loads(b)["data"]["digest"] == str(digest)
            ]


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    box = Inbox()
    yield box
    box.server.shutdown()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def with_owners(s: Setup, owners: str) -> Setup:
    """The pipeline file with service api's owners replaced (the harness writes services on one line)."""
    line = f"services: [{{name: api, owners: [{owners}]}}]"
    s.config.write_text(re.sub(r"^services: .*$", line, s.config.read_text(), count=1, flags=re.M))
    return Setup(s.config)


def save_block(inbox: Inbox, name: str) -> str:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    block = f"{name}-{uuid.uuid4().hex[:8]}"
    CustomWebhookNotificationBlock(
        name=name, url=f"http://127.0.0.1:{inbox.port}/{name}", json_data={"text": "{{subject}}\n{{body}}"}
    ).save(block)
    return f"custom-webhook/{block}"


def ours(pipeline: Any) -> list[str]:
    from prefect.client.orchestration import get_client

    from flows.owner_notifications import _is_ours

    with get_client(sync_client=True) as client:
        return sorted(a.name for a in client.read_automations() if _is_ours(a.name, pipeline))


def test_setup_creates_owner_automations_idempotently(
    make_setup: Callable[..., Setup], prefect_api: str, inbox: Inbox, receiver: Receiver
) -> None:
    from flows.owner_notifications import ensure_owner_automations, owner_automation_name

    team, two = save_block(inbox, "team-api"), save_block(inbox, "team-two")
    webhook = f'{{name: oncall, webhook: {{url: "{receiver.url}", secret_env: {SECRET_ENV}}}}}'
    s = with_owners(
        make_setup(), f'{{name: team-api, block: "{team}"}}, {{name: two, block: "{two}"}}, {webhook}'
    )
    cfg = str(s.config)
    try:
        # A block that does not exist is refused in one line, naming the owner; nothing is created.
        missing = with_owners(s, '{name: team-api, block: "custom-webhook/nope"}')
        r = promote(prefect_api, "-c", cfg, "setup")
        assert r.returncode == 2, r.stdout + r.stderr
        assert r.stderr.strip().count("\n") == 0, r.stderr
        assert (
            "ConfigError:" in r.stderr
            and "services[api].owners[team-api].block: no custom-webhook block named 'nope'" in r.stderr
        )
        assert ours(missing.pipeline) == []

        # Twice: one automation per owner with a block (the webhook owner needs none).
        s = with_owners(s, f'{{name: team-api, block: "{team}"}}, {{name: two, block: "{two}"}}, {webhook}')
        names = sorted(owner_automation_name("api", o, s.pipeline) for o in ("team-api", "two"))
        r = promote(prefect_api, "-c", cfg, "setup")
        assert r.returncode == 0, r.stderr
        targets = (
            f"team-api (block {team}), two (block {two}), oncall (signed webhook, secret in ${SECRET_ENV})"
        )
        assert f"ok owners of api: {targets}" in r.stdout
        assert "ok owner notifications: 2 automations" in r.stdout
        assert receiver.url not in r.stdout
        first = ours(s.pipeline)
        assert first == names
        ensure_owner_automations(s.pipeline, cfg)
        assert ours(s.pipeline) == names

        # An owner removed: its automation goes.
        s = with_owners(s, f'{{name: team-api, block: "{team}"}}, {webhook}')
        ensure_owner_automations(s.pipeline, cfg)
        assert ours(s.pipeline) == [owner_automation_name("api", "team-api", s.pipeline)]
    finally:
        ensure_owner_automations(with_owners(s, "").pipeline, cfg)
    assert ours(s.pipeline) == []


def test_owners_are_told_once_signed_with_reasons_and_links(
    make_setup: Callable[..., Setup],
    tmp_path: Path,
    prefect_api: str,
    inbox: Inbox,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from prefect.client.orchestration import get_client
    from standardwebhooks.webhooks import Webhook

    from flows.owner_notifications import ensure_owner_automations
    from flows.pipeline import promote_pipeline
    from flows.rollback import rollback

    monkeypatch.setenv(SECRET_ENV, SECRET)  # the process that tells holds the secret, as promote serve would
    team = save_block(inbox, "team-api")
    webhook = f'{{name: oncall, webhook: {{url: "{receiver.url}", secret_env: {SECRET_ENV}}}}}'
    s = with_owners(make_setup(), f'{{name: team-api, block: "{team}"}}, {webhook}')
    cfg = str(s.config)
    ui = prefect_api.removesuffix("/api")
    try:
        ensure_owner_automations(s.pipeline, cfg)

        # A failed gate, and the same failure re-run: the owners hear of it once.
        bad = s.publish(tmp_path, evidence=[f"coverage={EVIDENCE / 'coverage.xml'}"])  # no JUnit report
        for _ in range(2):
            assert promote_pipeline(service="api", digest=str(bad), config=cfg, return_state=True).is_failed()
        (gate,) = receiver.of("gate_failed", bad)
        headers, body = gate
        data = json.loads(body)["data"]
        assert data["headline"] == "Gate failed: api 1.0 -> dev"
        assert data["reasons"] == ["tests: missing evidence: junit"]
        assert (
            data["run_url"].startswith(f"{ui}/runs/flow-run/") and data["stage_report"] == "promotion-api-dev"
        )
        # Signed: verifies with the shared secret, by our signing module and by the reference library.
        key = signing.standard_webhooks_key(SECRET)
        ts = int(headers["webhook-timestamp"])
        assert signing.standard_webhooks_signature_matches(
            key, headers["webhook-id"], ts, body, headers["webhook-signature"]
        )
        assert Webhook(SECRET).verify(body, headers)["data"]["kind"] == "gate_failed"
        assert not signing.standard_webhooks_signature_matches(
            key, headers["webhook-id"], ts, body + b" ", headers["webhook-signature"]
        )

        told = inbox.wait_for("Gate failed: api 1.0 -> dev", str(bad))
        assert "Why: tests: missing evidence: junit" in told
        assert f"Run: {data['run_url']}" in told and "Report: Prefect artifact promotion-api-dev" in told

        # A manual rollback: told with the reason and the rollback report.
        d1, d2 = s.publish(tmp_path), s.publish(tmp_path)
        for d in (d1, d2):
            assert promote_pipeline(
                service="api", digest=str(d), to="dev", config=cfg, return_state=True
            ).is_completed()
        st = rollback(service="api", environment="dev", reason="bad release", config=cfg, return_state=True)
        assert st.is_completed(), st.message
        (back,) = receiver.of("rolled_back", d1)
        assert json.loads(back[1])["data"]["reasons"] == [f"bad release: from {d2.short} back to {d1.short}"]
        rolled = inbox.wait_for("Rolled back: api 1.0 -> dev", str(d1))
        assert "Why: bad release" in rolled and "Report: Prefect artifact rollback-api-dev" in rolled
        # By now the block received what came before: still one message about the failed gate.
        assert sum(str(bad) in b["text"] and "Gate failed" in b["text"] for _, b in inbox.messages) == 1
        incidents = [
            e
            for e in promotion_events(prefect_api, bad, {"promotion.incident"})
            if e["event"] == "promotion.incident"
        ]
        assert len(incidents) == 1

        # The secret is nowhere the product writes: bucket (ledger included), events, logs.
        store = s.store
        for k in store.s3.list_keys(store.s3.key("")):
            assert SECRET.encode() not in (store.s3.get(k) or b""), k
        events = promotion_events(prefect_api, d1, {"promotion.incident", "promotion.rolled_back"})
        assert SECRET not in json.dumps(events) and SECRET not in json.dumps(incidents)
        with get_client(sync_client=True) as client:
            logs = client.read_logs()
        assert logs and SECRET not in json.dumps([log.message for log in logs])
        out, err = capfd.readouterr()
        assert SECRET not in out + err
    finally:
        ensure_owner_automations(with_owners(s, "").pipeline, cfg)


def test_a_failing_webhook_is_logged_and_retried_next_time(
    make_setup: Callable[..., Setup], tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.pipeline import promote_pipeline

    s = with_owners(
        make_setup(), f'{{name: oncall, webhook: {{url: "{receiver.url}", secret_env: {SECRET_ENV}}}}}'
    )
    cfg = str(s.config)
    bad = s.publish(tmp_path, evidence=[f"coverage={EVIDENCE / 'coverage.xml'}"])
    # No secret in the environment: nothing is sent, the gate's verdict stands, no marker is left.
    monkeypatch.delenv(SECRET_ENV, raising=False)
    state = promote_pipeline(service="api", digest=str(bad), config=cfg, return_state=True)
    assert state.is_failed() and "GateFailed" in str(state.message)
    assert receiver.of("gate_failed", bad) == []
    monkeypatch.setenv(SECRET_ENV, SECRET)
    assert promote_pipeline(service="api", digest=str(bad), config=cfg, return_state=True).is_failed()
    assert len(receiver.of("gate_failed", bad)) == 1


@pytest.mark.usefixtures("pipeline_deployment")  # the sweep starts pipeline runs through it
def test_drift_and_a_flagged_digest_from_the_sweep_are_told_once(
    s3_server: LocalS3,
    prefix: str,
    tmp_path: Path,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.sweep import nightly_sweep

    monkeypatch.setenv(SECRET_ENV, SECRET)
    w = make_world(s3_server, prefix, tmp_path, services=("api", "soaked"))
    owner = f'{{name: oncall, webhook: {{url: "{receiver.url}", secret_env: {SECRET_ENV}}}}}'
    text = w.config.read_text().replace("{name: api}", f"{{name: api, owners: [{owner}]}}")
    w.config.write_text(text.replace("{name: soaked}", f"{{name: soaked, owners: [{owner}]}}"))
    w = World(w.config, w.tmp, w.server, w.target)
    good = w.publish("api")
    w.promote("api", "dev", good, ago=3 * DAY)
    w.promote("api", "staging", good, ago=2 * DAY)
    w.client.put_object(
        Bucket=w.target, Key=w.copy_key("staging", "api"), Body=b"by hand"
    )  # on_drift: report
    rotten = w.publish("soaked")
    w.promote("soaked", "dev", rotten, ago=2 * DAY)
    w.corrupt_blob(rotten)

    # The drift stays (reported, not corrected): the next night's sweep finds it again, tells nobody.
    for _ in range(2):
        assert nightly_sweep(config=str(w.config), return_state=True).is_completed()
    (drift,) = receiver.of("drift", good)
    data = json.loads(drift[1])["data"]
    assert data["environment"] == "staging" and data["stage_report"] == "nightly-sweep"
    assert "found" in data["reasons"][0] and "action: report" in data["reasons"]
    (flagged,) = receiver.of("flagged", rotten)
    assert json.loads(flagged[1])["data"]["reasons"][0].startswith(f"corrupted: expected {rotten}, got ")


def test_a_rejection_by_an_approver_is_told(
    make_setup: Callable[..., Setup], tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.pipeline import promote_pipeline

    monkeypatch.setenv(SECRET_ENV, SECRET)
    s = with_owners(
        make_setup(), f'{{name: oncall, webhook: {{url: "{receiver.url}", secret_env: {SECRET_ENV}}}}}'
    )
    d = s.publish(tmp_path)
    run = Run(promote_pipeline, service="api", digest=str(d), config=str(s.config))
    resume(wait_for_paused(run), "reject", "alice", "not on a Friday")
    assert not run.join().is_completed()
    ((_, body),) = receiver.of("rejected", d)
    data = json.loads(body)["data"]
    assert data["headline"] == "Rejected: api 1.0 -> prod"
    assert (
        data["reasons"] == ["rejected by alice: not on a Friday"]
        and data["stage_report"] == "promotion-api-prod"
    )


def test_a_failed_verification_is_one_incident_with_its_rollback(
    world: DeployWorld,  # noqa: F811 - the fixture of test_deploy_and_rollback, imported above
    tmp_path: Path,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    owner = f'{{name: oncall, webhook: {{url: "{receiver.url}", secret_env: {SECRET_ENV}}}}}'
    world.config.write_text(
        world.config.read_text().replace(
            "services: [{name: api}]", f"services: [{{name: api, owners: [{owner}]}}]"
        )
    )
    w = DeployWorld(world.config, world.env, world.secret, world.target_bucket)
    good, bad = w.publish(tmp_path, "1.0"), w.publish(tmp_path, "2.0")
    assert w.promote(good).is_completed()
    w.env.health_status = 503  # the new version comes up unhealthy: verification fails, dev goes back
    assert w.promote(bad).is_failed()
    ((_, body),) = receiver.of("verification_failed", bad)
    data = json.loads(body)["data"]
    assert data["headline"] == "Verification failed: api 2.0 -> dev"
    assert data["reasons"][0].startswith("http: ") and data["reasons"][-1] == f"rolled back to {good}"
    assert receiver.of("rolled_back", good) == []  # the restore is part of this incident, not a second one


def test_owners_hear_of_metric_alerts_through_their_block(
    store: ArtifactStore, pipeline: Pipeline, prefect_api: str, inbox: Inbox
) -> None:
    from prefect import flow

    from flows.owner_notifications import ensure_owner_automations
    from flows.sweep import metric_alerts

    alerting = with_alerts(pipeline)
    team = Owner(name="team-api", block=save_block(inbox, "team-api"))
    services = [s.model_copy(update={"owners": [team]}) for s in alerting.services]
    p = alerting.model_copy(update={"services": services})

    @flow
    def night(now: dt.datetime) -> list[str]:
        return [t.kind for t in metric_alerts(p, store, now)]

    try:
        ensure_owner_automations(p, "pipe.yaml")
        s = Seeder(store.ledger)
        s.promoted("A", NOW - 10 * DAY, commit_time=NOW - 10 * DAY - HOUR)
        s.promoted("B", NOW - 9 * DAY, commit_time=NOW - 9 * DAY - HOUR)
        s.rolled_back("A", "B", NOW - 9 * DAY + HOUR, "verification failed: http: HTTP 500")
        assert night(NOW) == ["crossed"]
        crossed = inbox.wait_for("Metric crossed: api prod change_fail_rate")
        assert "change_fail_rate 50.0% (above 15.0% crosses) (DORA band: low, over 30 days)" in crossed
    finally:
        ensure_owner_automations(pipeline, "pipe.yaml")
    assert ours(p) == []


def webhook_owner(pipeline: Pipeline, receiver: Receiver, service: str = "api") -> Pipeline:
    """``pipeline`` with ``service`` owned by one webhook owner (oncall) that posts to ``receiver``."""
    oncall = Owner(name="oncall", webhook=OwnerWebhook(url=receiver.url, secret_env=SECRET_ENV))
    services = [
        s.model_copy(update={"owners": [oncall]}) if s.name == service else s for s in pipeline.services
    ]
    return pipeline.model_copy(update={"services": services})


def test_the_same_incident_met_at_once_is_told_once(
    store: ArtifactStore,
    pipeline: Pipeline,
    prefect_api: str,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Eight task runs (threads) meet one incident at the same instant, as two retries or the stage
    and the sweep could: the claim is a conditional write, so one of them tells, once."""
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.futures import PrefectFuture
    from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

    from flows import _report as report

    monkeypatch.setenv(SECRET_ENV, SECRET)
    p = webhook_owner(pipeline, receiver)
    d = Digest.of_bytes(uuid.uuid4().bytes)
    n = 8
    together = threading.Barrier(n)

    @task(cache_policy=NO_CACHE)
    def meet() -> None:
        together.wait(timeout=30)  # all eight reach the telling at once
        report.tell_owners(
            p, store.s3, "gate_failed", service="api", environment="dev", digest=d, reasons=["tests: failed"]
        )

    # A thread for each (the barrier needs all n at once), whatever the thread pool setting says.
    # The cast: Prefect's flow() is typed for TaskRunner[PrefectFuture], not for its own subclass.
    threads = cast("TaskRunner[PrefectFuture[Any]]", ThreadPoolTaskRunner(max_workers=n))

    @flow(task_runner=threads)
    def many() -> None:
        for future in [meet.submit() for _ in range(n)]:
            future.result()

    many()
    assert len(receiver.of("gate_failed", d)) == 1
    events = promotion_events(prefect_api, d, {"promotion.incident"})
    assert [e["event"] for e in events].count("promotion.incident") == 1
    # Met again later in the window: still told once.
    many()
    assert len(receiver.of("gate_failed", d)) == 1
    # Read again now: the wait above returned with the first event stored, and a duplicate from
    # the first round (stored asynchronously) has had the second round's time to show up.
    events = promotion_events(prefect_api, d, {"promotion.incident"})
    assert [e["event"] for e in events].count("promotion.incident") == 1


def test_webhook_owners_hear_of_metric_alerts_signed_once_per_transition(
    store: ArtifactStore,
    pipeline: Pipeline,
    prefect_api: str,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect import flow

    from flows.sweep import metric_alerts
    from promotion.metrics.alerts import state_key

    monkeypatch.setenv(SECRET_ENV, SECRET)
    p = webhook_owner(with_alerts(pipeline), receiver)

    @flow
    def night(now: dt.datetime) -> list[str]:
        return [t.kind for t in metric_alerts(p, store, now)]

    def metric(kind: str) -> list[tuple[dict[str, str], bytes]]:
        with receiver.changed:
            return [
                (h, b) for h, b in receiver.requests if json.loads(b)["type"] == f"promotion.metric.{kind}"
            ]

    s = Seeder(store.ledger)
    s.promoted("A", NOW - 10 * DAY, commit_time=NOW - 10 * DAY - HOUR)
    s.promoted("B", NOW - 9 * DAY, commit_time=NOW - 9 * DAY - HOUR)
    s.rolled_back("A", "B", NOW - 9 * DAY + HOUR, "verification failed: http: HTTP 500")
    # The sweep's process lacks the secret tonight: the crossing is not sent, and is not lost.
    monkeypatch.delenv(SECRET_ENV)
    assert night(NOW) == ["crossed"]
    assert metric("crossed") == []
    monkeypatch.setenv(SECRET_ENV, SECRET)
    assert night(NOW + HOUR) == []  # nothing changed, but what was unsent goes now
    assert len(metric("crossed")) == 1
    # A sweep that died after telling, before saving the alert state: the next one finds the same
    # crossing again, and sends nothing new.
    store.s3.delete(state_key(store.s3, "api"))
    assert night(NOW + DAY) == ["crossed"]
    for i in range(6):
        s.promoted(f"ok{i}", NOW + DAY + (i + 1) * HOUR, commit_time=NOW + DAY + i * HOUR)
    assert night(NOW + 2 * DAY) == ["recovered"]
    assert night(NOW + 3 * DAY) == []

    ((headers, body),) = metric("crossed")
    ((rheaders, rbody),) = metric("recovered")
    key = signing.standard_webhooks_key(SECRET)
    for h, b in ((headers, body), (rheaders, rbody)):
        ts = int(h["webhook-timestamp"])
        assert signing.standard_webhooks_signature_matches(
            key, h["webhook-id"], ts, b, h["webhook-signature"]
        )
        assert json.loads(b)["id"] == h["webhook-id"]
    assert headers["webhook-id"] != rheaders["webhook-id"]
    crossed, recovered = json.loads(body)["data"], json.loads(rbody)["data"]
    assert (
        crossed
        == {
            "service": "api",
            "environment": "prod",
            "metric": "change_fail_rate",
            "value": 0.5,
            "threshold": 0.15,
            "direction": "above",
            "band": crossed["band"],
            "summary": "change_fail_rate 50.0% (above 15.0% crosses)",
            "window_days": 30,
        }
        and crossed["band"] == "low"
    )
    assert (
        recovered["value"] == 1 / 8 and recovered["summary"] == "change_fail_rate 12.5% (above 15.0% crosses)"
    )


def test_an_approval_that_timed_out_is_told_once_whichever_writer_announces_it(
    make_setup: Callable[..., Setup], tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request past its deadline with nothing running: the deadline check closes it (the sweep's
    backstop runs the same flow) and the owners are told; the waiting run's own timeout announcing
    the same closure afterwards, as it does when the check got there first, tells nobody again."""
    from prefect import flow

    from flows import _report as report
    from flows.deadlines import close_expired_approvals
    from promotion.requests import request_details

    monkeypatch.setenv(SECRET_ENV, SECRET)
    s = with_owners(
        make_setup(), f'{{name: oncall, webhook: {{url: "{receiver.url}", secret_env: {SECRET_ENV}}}}}'
    )
    store, cfg = s.store, str(s.config)
    d = s.publish(tmp_path)
    policy = s.pipeline.environment("prod").approval
    assert policy is not None
    opened = dt.datetime.now(dt.UTC) - policy.timeout - HOUR  # its deadline passed an hour ago
    store.ledger.append(
        "api",
        "approval_requested",
        d,
        actor="erin",
        environment="prod",
        version="1.0",
        details=request_details(
            policy=policy,
            deadline=opened + policy.timeout,
            flow_run_id=str(uuid.uuid4()),  # a run the server does not know: it waits for nothing
            requested_by="erin",
            commit_author="dana",
        ),
        at=opened,
    )
    assert close_expired_approvals(config=cfg)["closed"] == [f"api prod {d}"]
    (rec,) = [r for r in store.ledger.records("api") if r.event == "rejected"]
    assert rec.details["timed_out"] is True

    @flow
    def the_waiting_run_announces_it_too() -> None:
        report.approval_timed_out(store, store.record("api", d), "prod", None, None, str(rec.reason))

    the_waiting_run_announces_it_too()
    ((headers, body),) = receiver.of("timed_out", d)
    data = json.loads(body)["data"]
    assert data["headline"] == "Approval timed out: api 1.0 -> prod"
    assert data["reasons"] == ["approval timed out after 2m: no valid decision"]
    assert data["stage_report"] == "promotion-api-prod" and data["kind"] == "timed_out"
    key = signing.standard_webhooks_key(SECRET)
    ts = int(headers["webhook-timestamp"])
    assert signing.standard_webhooks_signature_matches(
        key, headers["webhook-id"], ts, body, headers["webhook-signature"]
    )


def test_a_rejection_of_a_suspended_approval_is_told(
    prefect_api: str,
    s3_server: LocalS3,
    prefix: str,
    tmp_path: Path,
    receiver: Receiver,
) -> None:
    """The other path of a rejection: a run of the deployment (served by a real ``promote serve``,
    which holds the webhook secret, as in production) suspends with no process; the answer
    through the form re-enters it from the top, and that run tells the owners."""
    import os

    from tests.flows import test_suspended_approval as suspended

    owner = f'{{name: oncall, webhook: {{url: "{receiver.url}", secret_env: {SECRET_ENV}}}}}'
    cfg = tmp_path / "promotion.yaml"
    cfg.write_text(
        suspended.PIPELINE.format(
            endpoint=s3_server.endpoint_url,
            bucket=s3_server.bucket,
            prefix=prefix,
            services=f"{{name: api, owners: [{owner}]}}",
            timeout="1h",
        )
    )
    env = {**os.environ, "PREFECT_API_URL": prefect_api, **s3_server.env(), SECRET_ENV: SECRET}
    env.pop("PREFECT__FLOW_RUN_ID", None)
    served = suspended.Served(cfg, env, tmp_path / "serve.log")
    served.start()
    try:
        d = served.publish(tmp_path, "api")
        run_id = served.start_run("api", d)
        suspended.wait_suspended(run_id)
        assert receiver.of("rejected", d) == []
        suspended.resume_as_ui(run_id, "reject", "alice", "not on a Friday")
        final = suspended.wait_final(run_id)
        assert not final.state.is_completed(), final.state.message
    finally:
        served.stop()
    ((headers, body),) = receiver.of("rejected", d)
    data = json.loads(body)["data"]
    assert data["headline"] == "Rejected: api 1.0 -> prod"
    assert data["reasons"] == ["rejected by alice: not on a Friday"]
    assert data["stage_report"] == "promotion-api-prod"
    # Told by the re-entered run's prod stage (its run_url is where the owners look).
    prod_stages = [str(r.id) for r in suspended.stage_runs(run_id) if r.parameters["environment"] == "prod"]
    assert data["flow_run_id"] in prod_stages and data["run_url"].endswith(data["flow_run_id"])
    key = signing.standard_webhooks_key(SECRET)
    ts = int(headers["webhook-timestamp"])
    assert signing.standard_webhooks_signature_matches(
        key, headers["webhook-id"], ts, body, headers["webhook-signature"]
    )
