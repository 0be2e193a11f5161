"""``kill -9`` of a promotion at each step boundary, then a re-run: it converges, nothing twice.

The promotion runs as a user runs it (``promote run`` in its own process) against the real Prefect
server and SeaweedFS behind the fault proxy. The proxy holds one chosen S3 request (the step
boundary) without forwarding it; once the process is stopped there, it is killed with SIGKILL.
Nothing is synchronised by sleeping: the test waits for the held request to arrive.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from promotion.config import load_pipeline
from promotion.digest import Digest
from promotion.local_s3 import LocalS3
from promotion.models import Provenance
from promotion.store import ArtifactStore, parse_evidence
from tests.faultproxy import FaultProxy, Rule
from tests.flows.harness import EVIDENCE

PIPELINE = """
store: {{endpoint_url: "{endpoint}", bucket: {bucket}, prefix: "{prefix}"}}
services: [{{name: api}}]
environments:
  - name: dev
    gates:
      - {{kind: tests, min_pass_rate: 1.0}}
    target:
      copy_to: {{bucket: {bucket}, prefix: "{prefix}deployed/dev/", key_template: "{{service}}.bin"}}
"""

PROMOTE = [str(Path(sys.executable).parent / "promote")]
#: A re-run after a crash must have converged within this long (the dead holder's lease included).
CONVERGE_S = 60.0


@pytest.fixture
def proxy(s3_server: LocalS3) -> Iterator[FaultProxy]:
    with FaultProxy(s3_server.endpoint_url) as p:
        yield p


def _setup(tmp_path: Path, s3_server: LocalS3, endpoint: str) -> tuple[Path, ArtifactStore, Digest]:
    prefix = f"crash-{uuid.uuid4().hex[:10]}/"
    text = PIPELINE.format(endpoint=endpoint, bucket=s3_server.bucket, prefix=prefix)
    cfg = tmp_path / "promotion.yaml"
    cfg.write_text(text)
    # The test itself talks to SeaweedFS directly: only the promotion's process goes through the proxy.
    direct_cfg = tmp_path / "direct.yaml"
    direct_cfg.write_text(
        PIPELINE.format(endpoint=s3_server.endpoint_url, bucket=s3_server.bucket, prefix=prefix)
    )
    direct = ArtifactStore(load_pipeline(direct_cfg))
    f = tmp_path / "app.bin"
    f.write_bytes(uuid.uuid4().bytes * 1000)
    prov = Provenance(commit="c0ffee", build_url="https://ci/1", published_by="ci")
    d = direct.publish(
        f,
        service="api",
        version="1.0",
        provenance=prov,
        evidence=parse_evidence([f"junit={EVIDENCE / 'junit.xml'}"]),
    ).digest
    return cfg, direct, d


def _env(prefect_api: str, cfg: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"PREFECT_API_URL": prefect_api, "PROMOTION_CONFIG": str(cfg)})
    env.pop("PROMOTION_S3_ENDPOINT_URL", None)
    return env


def _promote_run(env: dict[str, str], d: Digest) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*PROMOTE, "run", "api", str(d), "--to", "dev"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _ledger_events(store: ArtifactStore) -> list[tuple[str, str | None]]:
    return [(r.event, r.environment) for r in store.ledger.records("api")]


# Each boundary: the S3 request the proxy holds (method, path regex) and what the ledger holds at
# the moment of the kill.
BOUNDARIES = {
    # the gates have run; the stage is taking its lock
    "after-gates": ("PUT", r"/locks/api/dev\.json"),
    # inside deploy: the server-side copy into the environment's prefix is in flight
    "inside-deploy": ("PUT", r"/deployed/dev/api\.bin"),
    # the copy landed; the `promoted` record is being written
    "after-copy": ("PUT", r"/ledger/api/000000000002\.json"),
    # the `promoted` record landed; the head hint after it is being written
    "after-ledger-write": ("PUT", r"/ledger/api/_head\.json"),
}


@pytest.mark.parametrize("boundary", list(BOUNDARIES))
def test_kill_at_a_step_boundary_then_a_rerun_converges(
    boundary: str, tmp_path: Path, s3_server: LocalS3, proxy: FaultProxy, prefect_api: str
) -> None:
    cfg, store, d = _setup(tmp_path, s3_server, proxy.url)
    env = _env(prefect_api, cfg)
    method, path = BOUNDARIES[boundary]
    # Only the promotion goes through the proxy (the publish went direct), so the first matching
    # request is the boundary.
    rule = Rule(method, path, "hold")
    proxy.rules.append(rule)

    victim = _promote_run(env, d)
    try:
        assert rule.arrived.wait(120), f"the run never reached {boundary}: {victim.communicate()[0][-2000:]}"
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(30)
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
    rule.release()  # the held request is forwarded only now, for a process that is gone
    proxy.rules.clear()

    started = time.monotonic()
    rerun = subprocess.run(
        [*PROMOTE, "run", "api", str(d), "--to", "dev"], env=env, capture_output=True, text=True, timeout=180
    )
    took = time.monotonic() - started
    out = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, out[-3000:]
    assert took < CONVERGE_S, f"the re-run took {took:.0f} s: {out[-2000:]}"
    assert "Traceback" not in out

    events = _ledger_events(store)
    assert events.count(("promoted", "dev")) == 1, events
    assert ("rejected", "dev") not in events
    assert store.ledger.state("api").environments["dev"].digest == d
    assert store.ledger.verify("api").ok
    copy = store.s3.get(f"{store.pipeline.store.prefix}deployed/dev/api.bin")
    assert copy is not None and Digest.of_bytes(copy) == d
