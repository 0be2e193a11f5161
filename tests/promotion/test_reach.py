"""Where a digest has been comes from the ledger's history, and plan and run start from it.

Against the real SeaweedFS server; the ledger is written as the flows write it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

from promotion.config import parse_pipeline
from promotion.digest import Digest
from promotion.local_s3 import LocalS3
from promotion.models import Provenance
from promotion.plan import plan
from promotion.reach import digest_history
from promotion.store import ArtifactStore

PIPELINE = """
store: {{endpoint_url: "{endpoint}", bucket: {bucket}, prefix: "{prefix}"}}
services: [{{name: api}}]
environments:
  - name: dev
  - name: staging
    gates:
      - {{kind: soak, min_duration: 1h}}
  - name: prod
"""

T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)


def _store(s3_server: LocalS3, prefix: str) -> ArtifactStore:
    text = PIPELINE.format(endpoint=s3_server.endpoint_url, bucket=s3_server.bucket, prefix=prefix)
    return ArtifactStore(parse_pipeline(text))


def _publish(store: ArtifactStore, tmp_path: Path, version: str) -> Digest:
    f = tmp_path / f"{version}.bin"
    f.write_bytes(uuid.uuid4().bytes * 64)
    prov = Provenance(commit="c0ffee", build_url="https://ci/1", published_by="ci")
    return store.publish(f, service="api", version=version, provenance=prov).digest


def _promote(store: ArtifactStore, d: Digest, env: str, at: dt.datetime) -> None:
    store.ledger.append("api", "promoted", d, actor="ci", environment=env, version="v", at=at)


def test_a_digest_replaced_in_dev_still_counts_as_having_passed_dev(
    s3_server: LocalS3, prefix: str, tmp_path: Path
) -> None:
    store = _store(s3_server, prefix)
    a = _publish(store, tmp_path, "1.0")
    b = _publish(store, tmp_path, "1.1")
    _promote(store, a, "dev", T0)
    _promote(store, b, "dev", T0 + dt.timedelta(hours=2))

    history = digest_history(store.ledger, "api", a)
    assert history.reached("dev") and not history.reached("staging")
    stay = history.stays["dev"]
    assert (stay.since, stay.until, stay.replaced_by) == (T0, T0 + dt.timedelta(hours=2), b)
    assert history.is_newer(b) and not digest_history(store.ledger, "api", b).is_newer(a)

    p = plan(store, "api", a, to="staging", now=T0 + dt.timedelta(hours=3))
    assert p.reached == "dev"
    assert [(s.environment, s.action) for s in p.stages] == [("staging", "promote")]
    soak = p.stages[0].gates[0]
    assert soak.passed, soak.reasons
    assert soak.measured["soaked_s"] == 7200.0  # its stay in dev, not the time since it left


def test_a_soak_cut_short_by_a_newer_build_cannot_be_waited_out(
    s3_server: LocalS3, prefix: str, tmp_path: Path
) -> None:
    store = _store(s3_server, prefix)
    a = _publish(store, tmp_path, "1.0")
    b = _publish(store, tmp_path, "1.1")
    _promote(store, a, "dev", T0)
    _promote(store, b, "dev", T0 + dt.timedelta(minutes=20))

    p = plan(store, "api", a, to="staging", now=T0 + dt.timedelta(hours=5))
    stage = p.stages[0]
    assert stage.action == "blocked", stage
    assert "no longer runs there" in stage.reasons[0] and "20m" in stage.reasons[0]


def test_a_promotion_aimed_further_up_never_moves_a_lower_environment_back(
    s3_server: LocalS3, prefix: str, tmp_path: Path
) -> None:
    store = _store(s3_server, prefix)
    a = _publish(store, tmp_path, "1.0")
    b = _publish(store, tmp_path, "1.1")
    _promote(store, b, "dev", T0)  # the newer build is in dev; the older one never was

    p = plan(store, "api", a, to="staging", now=T0 + dt.timedelta(hours=1))
    assert p.reached is None
    assert [s.action for s in p.stages] == ["blocked", "not_reached"]
    assert f"dev runs {b.short}" in p.stages[0].reasons[0]
    assert "--to dev" in p.stages[0].reasons[0]

    explicit = plan(store, "api", a, to="dev", now=T0 + dt.timedelta(hours=1))
    assert [(s.environment, s.action) for s in explicit.stages] == [("dev", "promote")]

    # The newer build moving on is not held back by the older one.
    assert [s.action for s in plan(store, "api", b, to="staging", now=T0 + dt.timedelta(hours=2)).stages] == [
        "promote"
    ]


def test_rolled_back_out_of_an_environment_no_longer_counts_as_reached(
    s3_server: LocalS3, prefix: str, tmp_path: Path
) -> None:
    store = _store(s3_server, prefix)
    a = _publish(store, tmp_path, "1.0")
    b = _publish(store, tmp_path, "1.1")
    _promote(store, a, "dev", T0)
    _promote(store, a, "staging", T0 + dt.timedelta(hours=2))
    _promote(store, b, "dev", T0 + dt.timedelta(hours=3))
    _promote(store, b, "staging", T0 + dt.timedelta(hours=5))
    store.ledger.append(
        "api", "rolled_back", a, actor="ops", environment="staging", version="1.0",
        details={"from": str(b)}, at=T0 + dt.timedelta(hours=6),
    )  # fmt: skip

    assert digest_history(store.ledger, "api", a).furthest(["dev", "staging", "prod"]) == "staging"
    hb = digest_history(store.ledger, "api", b)
    assert hb.furthest(["dev", "staging", "prod"]) == "dev"
    assert hb.rolled_back_from == {"staging"}
    assert plan(store, "api", b, now=T0 + dt.timedelta(hours=7)).reached == "dev"


def test_the_history_of_an_old_digest_is_found_behind_many_records(
    s3_server: LocalS3, prefix: str, tmp_path: Path
) -> None:
    """The backward read crosses several growing batches until it meets the digest's publish."""
    store = _store(s3_server, prefix)
    a = _publish(store, tmp_path, "1.0")
    _promote(store, a, "dev", T0)
    other = Digest.of_bytes(b"other")
    for i in range(60):
        store.ledger.append("api", "approval", other, actor="x", environment="prod", reason=str(i))

    history = digest_history(store.ledger, "api", a)
    assert history.published_seq == 1
    assert history.reached("dev") and history.stays["dev"].until is None
    assert plan(store, "api", a, now=T0 + dt.timedelta(hours=2)).reached == "dev"
