from __future__ import annotations

import pytest

from promotion.approval import Decision, Tally
from promotion.config import ApprovalPolicy


def tally(min_approvals: int = 1, allow_self: bool = False) -> Tally:
    policy = ApprovalPolicy(
        approvers=["alice", "bob", "carol"], min_approvals=min_approvals, allow_self_approval=allow_self
    )
    return Tally(policy=policy, commit_author="alice", requested_by="bob")


def approve(who: str) -> Decision:
    return Decision(decision="approve", approver=who, reason="")


def test_one_valid_approval_is_enough_by_default() -> None:
    t = tally()
    assert t.outcome is None and t.needed == 1
    assert t.add(approve("carol")).accepted
    assert t.outcome == "approved" and t.approved_by == ["carol"]


@pytest.mark.parametrize(
    ("who", "why"),
    [
        ("alice", "'alice' authored the commit and may not approve it (no self-approval)"),
        ("bob", "'bob' requested this promotion and may not approve it (no self-approval)"),
        ("mallory", "'mallory' is not an allowed approver (allowed: alice, bob, carol)"),
    ],
)
def test_refused_approvals_are_kept_with_the_reason(who: str, why: str) -> None:
    t = tally()
    verdict = t.add(approve(who))
    assert not verdict.accepted and verdict.why == why
    assert t.outcome is None and t.refused == [(approve(who), why)]


def test_self_approval_when_the_policy_allows_it() -> None:
    t = tally(allow_self=True)
    assert t.add(approve("alice")).accepted and t.outcome == "approved"


def test_n_of_m_needs_different_people() -> None:
    t = tally(min_approvals=2, allow_self=True)
    assert t.add(approve("alice")).accepted
    again = t.add(approve("alice"))
    assert not again.accepted and "already approved" in again.why
    assert t.outcome is None and t.needed == 1
    assert t.add(approve("carol")).accepted and t.outcome == "approved"


def test_a_rejection_by_an_allowed_person_ends_it_even_the_author() -> None:
    t = tally(min_approvals=2)
    t.add(approve("carol"))
    assert t.add(Decision(decision="reject", approver="alice", reason="found a bug")).accepted
    assert t.outcome == "rejected" and t.rejected_by is not None and t.rejected_by.approver == "alice"


def test_a_rejection_by_a_stranger_is_refused() -> None:
    t = tally()
    assert not t.add(Decision(decision="reject", approver="mallory", reason="no")).accepted
    assert t.outcome is None


def test_decision_is_strict() -> None:
    with pytest.raises(ValueError):
        Decision.model_validate({"decision": "maybe", "approver": "alice"})
    with pytest.raises(ValueError):
        Decision.model_validate({"decision": "approve", "approver": ""})
    with pytest.raises(ValueError):
        Decision.model_validate({"decision": "approve", "approver": "a", "extra": 1})
