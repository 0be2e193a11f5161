"""The pipeline flow records what DORA's metrics read: the commit time and whether it was a hotfix
(``promote run --hotfix``), and ``promote metrics --env`` counts it."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from pathlib import Path

from promotion.metrics.reading import measure
from promotion.models import Provenance
from promotion.store import parse_evidence
from tests.flows.harness import EVIDENCE, Setup


def test_a_hotfix_run_records_commit_time_and_unplanned(
    make_setup: Callable[..., Setup], tmp_path: Path, prefect_api: str
) -> None:
    from flows.pipeline import promote_pipeline

    s = make_setup()
    committed = dt.datetime.now(dt.UTC) - dt.timedelta(hours=5)
    f = tmp_path / f"app-{uuid.uuid4().hex[:6]}.bin"
    f.write_bytes(uuid.uuid4().bytes * 100)
    prov = Provenance(commit="c0ffee", commit_time=committed, build_url="https://ci/1", published_by="ci")
    ev = parse_evidence([f"junit={EVIDENCE / 'junit.xml'}", f"coverage={EVIDENCE / 'coverage.xml'}"])
    d = s.store.publish(f, service="api", version="1.0", provenance=prov, evidence=ev).digest
    state = promote_pipeline(
        service="api", digest=str(d), to="dev", config=str(s.config), unplanned=True, return_state=True
    )
    assert state.is_completed(), state.message
    promoted = s.store.ledger.records("api")[-1]
    assert (promoted.event, promoted.environment) == ("promoted", "dev")
    assert promoted.details["unplanned"] is True
    assert dt.datetime.fromisoformat(promoted.details["commit_time"]) == committed
    now = dt.datetime.now(dt.UTC)
    m = measure(s.store.ledger, "api", "dev", now - dt.timedelta(days=1), now)
    assert m.deployments == 1 and m.unplanned_deployments == 1 and m.lead_time_counted == 1
    assert m.lead_time_p50_seconds == (promoted.at - committed).total_seconds()


def test_promote_run_hotfix_is_what_promote_metrics_env_counts(
    make_setup: Callable[..., Setup], tmp_path: Path, prefect_api: str
) -> None:
    """The CLI end to end: ``promote run --hotfix`` records an unplanned deployment, a plain
    ``promote run`` a planned one; ``promote metrics --env dev`` counts both (and prod none)."""
    from tests.flows.test_cli_prefect import promote

    s = make_setup()
    cfg = str(s.config)
    for hotfix in (False, True):
        d = s.publish(tmp_path)
        extra = ["--hotfix"] if hotfix else []
        r = promote(prefect_api, "-c", cfg, "run", "api", str(d), "--to", "dev", *extra)
        assert r.returncode == 0, r.stderr
        promoted = s.store.ledger.records("api")[-1]
        assert (promoted.event, promoted.environment) == ("promoted", "dev")
        assert promoted.details["unplanned"] is hotfix
    dev = promote(prefect_api, "-c", cfg, "metrics", "-s", "api", "--env", "dev", "--since", "1d", "--json")
    assert dev.returncode == 0, dev.stderr
    (m,) = json.loads(dev.stdout)
    assert (m["environment"], m["deployments"], m["unplanned_deployments"]) == ("dev", 2, 1)
    assert m["rework_rate"] == 0.5
    # the planned deployment was followed by a hotfix: it failed (DORA's "needs a hotfix")
    assert m["change_fail_rate"] == 0.5 and [f["kind"] for f in m["failures"]] == ["hotfix"]
    prod = promote(prefect_api, "-c", cfg, "metrics", "-s", "api", "--since", "1d", "--json")
    assert prod.returncode == 0, prod.stderr
    assert json.loads(prod.stdout)[0]["deployments"] == 0  # prod by default: nothing there
