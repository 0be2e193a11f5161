"""Deploy, verification, rollback, serialization, dry run and secrets, end to end."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import SecretStr

from promotion.config import load_pipeline
from promotion.deploy import read_target_digest
from promotion.digest import Digest
from promotion.errors import RollbackRefused
from promotion.local_s3 import LocalS3
from promotion.models import Provenance
from promotion.store import ArtifactStore
from tests.flows.envserver import EnvServer
from tests.flows.harness import Run

PIPELINE = """
store: {{endpoint_url: "{endpoint}", bucket: {bucket}, prefix: "{prefix}"}}
services: [{{name: api}}]
environments:
  - name: dev
    gates:
      - {{kind: policy, require_provenance: [commit]}}
      - {{kind: http, url: "{env_url}/health"}}
    target:
      copy_to: {{bucket: "{target_bucket}", prefix: "{prefix}"}}
      webhook: {{url: "{env_url}/deploy", secret_block: "{secret_block}"}}
"""


class World:
    def __init__(self, config: Path, env: EnvServer, secret: str, target_bucket: str) -> None:
        self.config = config
        self.env = env
        self.secret = secret
        self.target_bucket = target_bucket
        self.pipeline = load_pipeline(config)
        self.store = ArtifactStore(self.pipeline)

    def publish(self, tmp: Path, version: str) -> Digest:
        f = tmp / f"{version}.bin"
        f.write_bytes(f"build {version} {uuid.uuid4()}".encode())
        prov = Provenance(commit="abc", build_url="https://ci/1", published_by="ci")
        return self.store.publish(f, service="api", version=version, provenance=prov).digest

    def promote(self, d: Digest) -> Any:
        from flows.pipeline import promote_pipeline

        return promote_pipeline(service="api", digest=str(d), config=str(self.config), return_state=True)

    def in_dev(self) -> Digest:
        return self.store.ledger.state("api").environments["dev"].digest

    def copied(self) -> Digest | None:
        target = self.pipeline.environment("dev").target.copy_to
        assert target is not None
        return read_target_digest(self.store, target, "api", None)


@pytest.fixture
def world(prefect_api: str, s3_server: LocalS3, prefix: str, tmp_path: Path) -> Iterator[World]:
    from prefect.blocks.system import Secret

    secret = f"planted-secret-{uuid.uuid4().hex}"
    block = f"deploy-key-{uuid.uuid4().hex[:8]}"
    Secret(value=SecretStr(secret)).save(block, overwrite=True)
    target_bucket = f"env-{uuid.uuid4().hex[:10]}"
    s3_server.client().create_bucket(Bucket=target_bucket)
    with EnvServer(secret) as env:
        cfg = tmp_path / "promotion.yaml"
        cfg.write_text(
            PIPELINE.format(
                endpoint=s3_server.endpoint_url,
                bucket=s3_server.bucket,
                prefix=prefix,
                env_url=env.url,
                target_bucket=target_bucket,
                secret_block=block,
            )
        )
        yield World(cfg, env, secret, target_bucket)


def test_deploy_copies_the_blob_and_calls_the_signed_webhook(world: World, tmp_path: Path) -> None:
    d = world.publish(tmp_path, "1.0")
    state = world.promote(d)
    assert state.is_completed(), state.message
    assert world.in_dev() == d
    assert world.copied() == d
    (deploy,) = world.env.deploys
    assert deploy.signed_ok and deploy.digest == d
    payload = json.loads(deploy.body)
    # the presigned URL in the payload really serves the artifact's bytes
    assert Digest.of_bytes(httpx.get(payload["presigned_url"]).content) == d
    promoted = world.store.ledger.records("api")[-1]
    assert promoted.details["deploy"]["copy"]["bucket"] == world.target_bucket
    assert promoted.details["deploy"]["webhook"]["status"] == 202


def test_failed_verification_rolls_back_automatically(world: World, tmp_path: Path) -> None:
    good, bad = world.publish(tmp_path, "1.0"), world.publish(tmp_path, "2.0")
    assert world.promote(good).is_completed()
    world.env.health_status = 503  # the new version comes up unhealthy
    state = world.promote(bad)
    assert state.is_failed()
    assert state.message.startswith("stopped at dev: VerificationFailed: verification of dev failed (http: ")
    assert state.message.endswith(f"rolled back to {good}")
    assert world.in_dev() == good
    assert world.copied() == good  # the environment's copy is back on the good bytes too
    assert [d.digest for d in world.env.deploys] == [good, bad, good]
    tail = world.store.ledger.records("api")[-2:]
    assert [(r.event, r.digest) for r in tail] == [("promoted", bad), ("rolled_back", good)]
    assert tail[1].reason.startswith("verification failed: http:")
    # The same details as a manual rollback's: promotion.reach reads "from" to see bad leave dev.
    assert tail[1].details["from"] == bad and tail[1].details["flow_run_id"] == tail[0].details["flow_run_id"]
    assert world.store.ledger.verify("api").ok


def test_manual_rollback_and_refusals(world: World, tmp_path: Path) -> None:
    from flows.rollback import rollback

    d1, d2, d3 = (world.publish(tmp_path, v) for v in ("1", "2", "3"))
    assert world.promote(d1).is_completed() and world.promote(d2).is_completed()
    st = rollback(
        service="api", environment="dev", reason="bad release", config=str(world.config), return_state=True
    )
    assert st.is_completed(), st.message
    assert world.in_dev() == d1 and world.copied() == d1
    last = world.store.ledger.records("api")[-1]
    assert (last.event, last.digest, last.reason, last.details["from"]) == (
        "rolled_back",
        d1,
        "bad release",
        d2,
    )

    never = rollback(
        service="api", environment="dev", to_digest=str(d3), config=str(world.config), return_state=True
    )
    assert never.is_failed()
    exc = never.result(raise_on_failure=False)
    assert isinstance(exc, RollbackRefused) and f"{d3} was never deployed to dev" in str(exc)
    assert world.in_dev() == d1  # nothing changed

    forward = rollback(
        service="api", environment="dev", to_digest=str(d2), config=str(world.config), return_state=True
    )
    assert forward.is_completed() and world.in_dev() == d2


def test_two_digests_to_one_environment_are_serialized_and_both_recorded(
    world: World, tmp_path: Path
) -> None:
    from flows.pipeline import promote_pipeline

    world.env.deploy_seconds = 1.0
    a, b = world.publish(tmp_path, "a"), world.publish(tmp_path, "b")
    runs = [Run(promote_pipeline, service="api", digest=str(x), config=str(world.config)) for x in (a, b)]
    states = [r.join() for r in runs]
    assert all(s.is_completed() for s in states), [s.message for s in states]
    first, second = sorted(world.env.deploys, key=lambda x: x.started)
    assert first.ended <= second.started, "deploys overlapped"
    promoted = [r for r in world.store.ledger.records("api") if r.event == "promoted"]
    assert {r.digest for r in promoted} == {a, b}
    assert world.in_dev() == promoted[-1].digest
    assert promoted[-1].details["previous"] == promoted[0].digest


def snapshot(world: World) -> dict[str, bytes]:
    s3 = world.store.s3
    return {k: s3.get(k) or b"" for k in s3.list_keys(s3.prefix)}


def test_dry_run_changes_nothing(world: World, tmp_path: Path) -> None:
    from flows.pipeline import promote_pipeline

    d = world.publish(tmp_path, "1.0")
    before = snapshot(world)
    state = promote_pipeline(
        service="api", digest=str(d), dry_run=True, config=str(world.config), return_state=True
    )
    assert state.is_completed()
    assert state.message == "plan: dev: promote"
    assert snapshot(world) == before  # byte-identical: ledger, records, blobs
    assert world.env.deploys == []
    assert world.copied() is None


def _everything_prefect_holds(api: str, since: float) -> str:
    """Every log line, artifact and promotion event on the Prefect server, as one text."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        logs = client.read_logs(limit=200)
        offset = 200
        while batch := client.read_logs(limit=200, offset=offset):
            logs += batch
            offset += 200
        artifacts = client.read_artifacts()
    events: list[Any] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the server persists events asynchronously
        r = httpx.post(
            f"{api}/events/filter", json={"filter": {"event": {"prefix": ["promotion."]}}, "limit": 50}
        )
        r.raise_for_status()
        events = r.json()["events"]
        if any(e["event"] == "promotion.promoted" for e in events):
            break
        time.sleep(0.5)  # polling for a condition with a deadline
    assert any(e["event"] == "promotion.promoted" for e in events), "no promotion events were persisted"
    return "\n".join(
        [
            *(m.message for m in logs),
            *(json.dumps(a.model_dump(mode="json")) for a in artifacts),
            json.dumps(events),
        ]
    )


def test_a_planted_secret_appears_nowhere(
    world: World, tmp_path: Path, prefect_api: str, caplog: pytest.LogCaptureFixture
) -> None:
    started = time.time()
    good, bad = world.publish(tmp_path, "1.0"), world.publish(tmp_path, "2.0")
    assert world.promote(good).is_completed()
    world.env.health_status = 500
    assert world.promote(bad).is_failed()
    presigned = json.loads(world.env.deploys[0].body)["presigned_url"]
    signature = next(v[0] for k, v in parse_qs(urlsplit(presigned).query).items() if "signature" in k.lower())
    assert world.env.deploys[0].signed_ok  # the secret was used...
    haystacks = {
        "prefect (logs, artifacts, events)": _everything_prefect_holds(prefect_api, started),
        "ledger and records": b"".join(snapshot(world).values()).decode("utf-8", "replace"),
        "test log capture": caplog.text,
    }
    for where, text in haystacks.items():  # ...and appears nowhere
        assert world.secret not in text, f"secret found in {where}"
        assert signature not in text, f"presigned URL signature found in {where}"
