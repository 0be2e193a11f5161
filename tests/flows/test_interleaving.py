"""Two or more digests of one service promoted in turn or at once: nothing moves back, nothing twice.

Real Prefect server, real SeaweedFS; the pipeline flow runs as a worker would run it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from promotion.digest import Digest
from promotion.models import LedgerRecord
from promotion.plan import plan
from tests.flows.harness import Run, Setup


def _promoted(records: list[LedgerRecord], env: str) -> list[Digest]:
    return [r.digest for r in records if r.event == "promoted" and r.environment == env]


def test_an_older_digest_promoted_on_starts_after_the_environment_it_passed(
    make_setup: Callable[..., Setup], tmp_path: Path
) -> None:
    """A to dev, B to dev, A to staging: dev keeps B, the ledger never says "promoted dev A" twice."""
    from flows.pipeline import promote_pipeline

    s = make_setup()
    a = s.publish(tmp_path)
    b = s.publish(tmp_path)
    cfg = str(s.config)
    assert promote_pipeline(
        service="api", digest=str(a), to="dev", config=cfg, return_state=True
    ).is_completed()
    assert promote_pipeline(
        service="api", digest=str(b), to="dev", config=cfg, return_state=True
    ).is_completed()

    planned = plan(s.store, "api", a, to="staging")
    assert planned.reached == "dev"
    assert [(st.environment, st.action) for st in planned.stages] == [("staging", "promote")]

    state = promote_pipeline(service="api", digest=str(a), to="staging", config=cfg, return_state=True)
    assert state.is_completed(), state.message
    records = s.store.ledger.records("api")
    assert _promoted(records, "dev") == [a, b]
    assert _promoted(records, "staging") == [a]
    st = s.store.ledger.state("api")
    assert (st.environments["dev"].digest, st.environments["staging"].digest) == (b, a)
    assert s.store.ledger.verify("api").ok


def test_a_run_aimed_further_up_stops_before_moving_a_lower_environment_back(
    make_setup: Callable[..., Setup], tmp_path: Path
) -> None:
    from flows.pipeline import promote_pipeline

    s = make_setup()
    a = s.publish(tmp_path)
    b = s.publish(tmp_path)
    cfg = str(s.config)
    assert promote_pipeline(
        service="api", digest=str(b), to="dev", config=cfg, return_state=True
    ).is_completed()

    state = promote_pipeline(service="api", digest=str(a), to="staging", config=cfg, return_state=True)
    assert state.is_failed()
    assert (state.message or "").startswith(f"stopped at dev: StageHeldBack: dev runs {b.short}")
    assert [r.event for r in s.store.ledger.records("api")] == ["published", "published", "promoted"]
    # Planned the same way before the run, and the same after it.
    assert [st.action for st in plan(s.store, "api", a, to="staging").stages] == ["blocked", "not_reached"]

    # Aimed at dev explicitly, the older build may go there (a deliberate choice).
    assert promote_pipeline(
        service="api", digest=str(a), to="dev", config=cfg, return_state=True
    ).is_completed()
    assert s.store.ledger.state("api").environments["dev"].digest == a


def test_ten_concurrent_promotions_of_one_service_never_move_back_or_promote_twice(
    make_setup: Callable[..., Setup], tmp_path: Path
) -> None:
    """Five builds, each started twice at once, all aimed at staging."""
    from flows.pipeline import promote_pipeline

    s = make_setup()
    digests = [s.publish(tmp_path) for _ in range(5)]
    order = {d: i for i, d in enumerate(digests)}
    runs = [
        Run(promote_pipeline, service="api", digest=str(d), to="staging", config=str(s.config))
        for d in digests + digests
    ]
    states = [r.join(timeout=240) for r in runs]
    for st in states:
        msg = st.message or ""
        assert st.is_completed() or "StageHeldBack" in msg, msg

    records = s.store.ledger.records("api")
    assert s.store.ledger.verify("api").ok
    dev = _promoted(records, "dev")
    # dev only ever moves forward: every run was aimed further up.
    assert [order[d] for d in dev] == sorted(order[d] for d in dev)
    # and no environment is promoted to the digest it already runs.
    for env in ("dev", "staging"):
        moves = [r.digest for r in records if r.environment == env and r.event in ("promoted", "rolled_back")]
        assert all(x != y for x, y in zip(moves, moves[1:], strict=False)), (env, moves)
    # the newest build was never held back, and dev, moving only forward, ends on it.
    newest = [st for r, st in zip(runs, states, strict=True) if r.kwargs["digest"] == str(digests[-1])]
    assert all(st.is_completed() for st in newest), [st.message for st in newest]
    assert s.store.ledger.state("api").environments["dev"].digest == digests[-1]
