"""What ran where, in order, from the ledger: the basis of rollback. Pure."""

from __future__ import annotations

from collections.abc import Sequence

from promotion.digest import Digest
from promotion.errors import RollbackRefused
from promotion.models import LedgerRecord


def deployment_stack(records: Sequence[LedgerRecord], environment: str) -> list[LedgerRecord]:
    """The records of the digests an environment ran, oldest first, with rolled-back ones removed.

    A ``promoted`` record pushes; a ``rolled_back`` record restores an earlier entry and drops
    everything above it, so "the previous digest" is always the one below the top.
    """
    stack: list[LedgerRecord] = []
    for rec in records:
        if rec.environment != environment:
            continue
        if rec.event == "promoted":
            stack.append(rec)
        elif rec.event == "rolled_back":
            while stack and stack[-1].digest != rec.digest:
                stack.pop()
            if stack:
                stack[-1] = rec
            else:
                stack.append(rec)
    return stack


def rollback_target(
    records: Sequence[LedgerRecord], environment: str, to_digest: Digest | None = None
) -> tuple[LedgerRecord, LedgerRecord]:
    """(current, target) for a rollback of ``environment``; refuse what was never deployed there."""
    stack = deployment_stack(records, environment)
    if not stack:
        raise RollbackRefused(f"nothing was ever deployed to {environment}: there is nothing to roll back")
    current = stack[-1]
    if to_digest is None:
        if len(stack) < 2:
            raise RollbackRefused(
                f"{environment} has run only {current.digest} : there is no previous digest to roll back to"
            )
        return current, stack[-2]
    if to_digest == current.digest:
        raise RollbackRefused(f"{environment} already runs {to_digest}")
    ever = [r for r in records if r.environment == environment and r.event in ("promoted", "rolled_back")]
    for rec in reversed(ever):
        if rec.digest == to_digest:
            return current, rec
    raise RollbackRefused(
        f"{to_digest} was never deployed to {environment}; roll back only to a digest that ran there "
        f"(see: promote history {current.service} --env {environment})"
    )
