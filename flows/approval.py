"""Human approval inside a stage subflow: pause with a typed form, judge each answer, tally.

The stage subflow pauses with :class:`ApprovalForm`; Prefect stores the form's JSON schema and
the markdown description, which is what the UI renders as the "Resume" form. ``promote approve``
and ``promote reject`` send the same input through Prefect's API.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Literal

from prefect import get_run_logger, pause_flow_run
from prefect.exceptions import FlowPauseTimeout
from prefect.input import RunInput
from pydantic import Field

from promotion.answers import form_ready as form_ready  # defined there: promotion/ imports no flows/
from promotion.approval import Decision, Tally, Verdict
from promotion.settings import settings


class ApprovalForm(RunInput):
    """The resume form. No defaults: a person must choose, and must say who they are."""

    decision: Literal["approve", "reject"] = Field(
        title="Decision", description="Approve to promote, reject to stop this promotion."
    )
    approver: str = Field(
        title="Approver",
        min_length=1,
        max_length=100,
        description="Your name, as listed in the pipeline file.",
    )
    reason: str = Field(
        default="", title="Reason", max_length=2000, description="Why (recorded in the ledger)."
    )


def poll_interval() -> int:
    """Seconds between checks of a paused run (Prefect's default is 10 s; approvals want less)."""
    return max(1, settings().approval_poll_seconds)


def wait_for_approvals(
    deadline: dt.datetime,
    *,
    read_tally: Callable[[], tuple[Tally, int]],
    describe: Callable[[Tally], str],
    record: Callable[[Decision, int], Verdict],
) -> Tally:
    """Pause until the policy is met or someone allowed rejects; raise FlowPauseTimeout at the deadline.

    The tally comes from ``read_tally`` (the request's decisions in the ledger, and the last seq
    read), before each pause and after each answer: decisions given before this run (a crash, a
    re-run, ``promote approve`` to a run that was gone) count, and one approver counts once.
    Each answer goes to ``record``, which judges it against the ledger's tally and records it
    (unless ``promote approve`` recorded it already, after the seq it is given) and returns the
    verdict; a refused answer keeps the run waiting for a valid one.
    """
    logger = get_run_logger()
    tally, seen = read_tally()
    round_ = 0
    while tally.outcome is None:
        remaining = (deadline - dt.datetime.now(dt.UTC)).total_seconds()
        if remaining <= 0:
            raise FlowPauseTimeout(f"no decision by {deadline:%Y-%m-%d %H:%M:%S}Z")
        round_ += 1
        form = ApprovalForm.with_initial_data(description=describe(tally))
        answer = pause_flow_run(
            wait_for_input=form,
            timeout=max(1, math.ceil(remaining)),
            poll_interval=poll_interval(),
            key=f"approval-{round_}",
        )
        decision = Decision(decision=answer.decision, approver=answer.approver.strip(), reason=answer.reason)
        verdict = record(decision, seen)
        if verdict.accepted:
            logger.info("%s by %s accepted", decision.decision, decision.approver)
        else:
            logger.warning("%s by %s refused: %s", decision.decision, decision.approver, verdict.why)
        tally, seen = read_tally()
    return tally
