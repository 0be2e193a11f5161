from __future__ import annotations

import datetime as dt

import pytest

from promotion.digest import Digest
from promotion.errors import RollbackRefused
from promotion.models import LedgerRecord, LedgerState
from promotion.rollback_targets import deployment_stack, rollback_target

A, B, C, D = (Digest.of_bytes(x) for x in (b"a", b"b", b"c", b"d"))
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def rec(seq: int, event: str, digest: Digest, env: str = "prod") -> LedgerRecord:
    return LedgerRecord.model_validate(
        {
            "seq": seq, "prev": None, "service": "api", "event": event, "environment": env,
            "digest": digest, "actor": "x", "at": T0, "idempotency_id": str(seq), "state": LedgerState(),
        }
    )  # fmt: skip


HISTORY = [
    rec(1, "promoted", A),
    rec(2, "promoted", B, env="dev"),
    rec(3, "promoted", B),
    rec(4, "rejected", C),
    rec(5, "promoted", C),
]


def test_previous_is_the_one_below_the_top() -> None:
    current, target = rollback_target(HISTORY, "prod")
    assert (current.digest, target.digest) == (C, B)


def test_a_rollback_drops_what_it_rolled_back() -> None:
    after = [*HISTORY, rec(6, "rolled_back", B)]
    assert [r.digest for r in deployment_stack(after, "prod")] == [A, B]
    current, target = rollback_target(after, "prod")
    assert (current.digest, target.digest) == (B, A)  # not forward to C again


def test_rollback_to_a_named_digest_that_ran_there() -> None:
    current, target = rollback_target(HISTORY, "prod", A)
    assert (current.digest, target.digest) == (C, A)
    current, target = rollback_target([*HISTORY, rec(6, "rolled_back", A)], "prod", C)
    assert target.digest == C  # forward again to something that ran there is allowed


@pytest.mark.parametrize(
    ("records", "env", "to", "message"),
    [
        (HISTORY, "prod", D, "was never deployed to prod"),
        (HISTORY, "dev", A, "was never deployed to dev"),  # A ran in prod, not dev
        (HISTORY, "prod", C, "already runs"),
        (HISTORY, "staging", None, "nothing was ever deployed to staging"),
        (HISTORY, "dev", None, "no previous digest"),
    ],
)
def test_refusals(records: list[LedgerRecord], env: str, to: Digest | None, message: str) -> None:
    with pytest.raises(RollbackRefused, match=message):
        rollback_target(records, env, to)
