"""Approval policy: who may decide, how many must approve, and no self-approval. Pure.

The Prefect layer pauses the stage and collects decisions; this module judges each decision
against the environment's :class:`~promotion.config.ApprovalPolicy` and tallies them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from promotion.config import ApprovalPolicy


class Decision(BaseModel):
    """One person's answer, as typed in the Prefect UI form or given with ``promote approve``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    decision: Literal["approve", "reject"]
    approver: str = Field(min_length=1, max_length=100)
    reason: str = Field(default="", max_length=2000)


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    why: str


@dataclass
class Tally:
    """Decisions so far for one stage. ``outcome`` is None while more approvals are needed."""

    policy: ApprovalPolicy
    commit_author: str | None
    requested_by: str | None
    approved_by: list[str] = field(default_factory=list)
    refused: list[tuple[Decision, str]] = field(default_factory=list)
    rejected_by: Decision | None = None

    def judge(self, d: Decision) -> Verdict:
        """Whether this decision counts, and why not when it does not."""
        who = d.approver.strip()
        allowed = ", ".join(self.policy.approvers)
        if who not in self.policy.approvers:
            return Verdict(False, f"{who!r} is not an allowed approver (allowed: {allowed})")
        if d.decision == "approve" and not self.policy.allow_self_approval:
            if self.commit_author and who == self.commit_author:
                return Verdict(
                    False, f"{who!r} authored the commit and may not approve it (no self-approval)"
                )
            if self.requested_by and who == self.requested_by:
                return Verdict(
                    False, f"{who!r} requested this promotion and may not approve it (no self-approval)"
                )
        if d.decision == "approve" and who in self.approved_by:
            return Verdict(
                False, f"{who!r} already approved; {self.policy.min_approvals} different people must"
            )
        return Verdict(True, "accepted")

    def add(self, d: Decision) -> Verdict:
        verdict = self.judge(d)
        if not verdict.accepted:
            self.refused.append((d, verdict.why))
        elif d.decision == "reject":
            self.rejected_by = d
        else:
            self.approved_by.append(d.approver.strip())
        return verdict

    @property
    def outcome(self) -> Literal["approved", "rejected"] | None:
        if self.rejected_by is not None:
            return "rejected"
        if len(self.approved_by) >= self.policy.min_approvals:
            return "approved"
        return None

    @property
    def needed(self) -> int:
        return max(0, self.policy.min_approvals - len(self.approved_by))
