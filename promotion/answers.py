"""``promote approve`` / ``promote reject``: answer an approval request and say what happened.

The answer is judged against the request's tally in the ledger (pure, the same rules the run
applies), recorded in the ledger as an ``approval`` record (``details.source: cli``), and only
then sent to the paused run through Prefect's API. So a decision is never lost with a process:
when the run is gone (crashed, cancelled, completed) the command says so (exit 1) and the next
``promote run`` of the digest continues the same request with the decision counted. The paused
run finds the record and does not write a second one (flows/pipeline.py ``_await_approval``).

Prefect is imported inside the functions: this module is only loaded by those two commands.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promotion.approval import Decision
from promotion.config import Pipeline, load_pipeline
from promotion.digest import Digest
from promotion.errors import PromotionError, UsageError
from promotion.requests import ApprovalRequest, describe_verdict, find_request, open_requests, record_answer
from promotion.store import ArtifactStore

#: How long to wait for a run that just paused to store its resume form.
FORM_WAIT_S = 10.0


@dataclass
class Waiting:
    """The stage run an answer is for, and what Prefect says about it."""

    service: str
    environment: str
    digest: Digest
    config: str | None
    run_id: str | None
    #: e.g. "Paused", "Crashed", "not found on http://.../api".
    state: str
    paused: bool
    #: The run-input key of the form the run waits on (recorded with the answer, so that a
    #: suspended run that re-enters does not record the same answer again).
    input_key: str | None = None


def decide(
    target: str, env: str | None, decision: str, approver: str, reason: str, config: Path | None
) -> str:
    """Answer the request named by a run id (``env`` None) or by ``SERVICE ENV``; the line to print."""
    from prefect.client.orchestration import get_client
    from pydantic import ValidationError

    try:
        answer = Decision(decision=decision, approver=approver.strip(), reason=reason)  # type: ignore[arg-type]
    except ValidationError as exc:
        where = ".".join(str(x) for x in exc.errors()[0]["loc"])
        flag = {"approver": "--as", "reason": "--reason"}.get(where, where)
        raise UsageError(f"{flag}: {exc.errors()[0]['msg']}") from None

    with get_client(sync_client=True) as client:
        if env is None:
            waiting = _from_run(client, target, str(config) if config else None)
        else:
            waiting = _from_request(client, target, env, config)
        if waiting.paused and waiting.run_id is not None:
            waiting = _form_ready(client, waiting)
    pipeline = load_pipeline(waiting.config)
    store = ArtifactStore(pipeline)
    policy = pipeline.environment(waiting.environment).approval
    request = find_request(store.ledger, waiting.service, waiting.environment, waiting.digest)
    if request is None or policy is None:
        raise PromotionError(
            f"flow run {waiting.run_id} is not waiting for approval (it is {waiting.state}); no approval "
            f"request of {waiting.service} {waiting.digest.short} is open in {waiting.environment}"
        )
    tally = request.tally(policy)
    verdict = tally.add(answer)
    record_answer(
        store.ledger,
        request,
        answer,
        verdict,
        "cli",
        waiting.run_id,
        version=request.version,
        idempotency_id=f"cli:{uuid.uuid4().hex}",
        input_key=waiting.input_key,
    )
    said = describe_verdict(answer, verdict, tally)
    noun = "approval" if decision == "approve" else "rejection"
    again = f"promote run {waiting.service} {waiting.digest} --to {waiting.environment}"
    if not waiting.paused or waiting.run_id is None:
        raise PromotionError(
            f"{noun} by {answer.approver} recorded ({said}), but flow run {waiting.run_id} is not "
            f"waiting for it (it is {waiting.state}); continue the request with: {again}"
        )
    from prefect.flow_runs import resume_flow_run

    try:
        resume_flow_run(
            uuid.UUID(waiting.run_id),
            run_input={"decision": decision, "approver": answer.approver, "reason": reason},
        )
    except RuntimeError as exc:
        raise PromotionError(
            f"{noun} by {answer.approver} recorded ({said}), but Prefect refused to resume "
            f"{waiting.run_id}: {exc}; continue the request with: {again}"
        ) from None
    return f"{noun} by {answer.approver} sent to {waiting.run_id}; {said}"


def _state(run: Any) -> str:
    return str(run.state.name) if run.state is not None else "unknown"


def _stage_of(run: Any, config: str | None, state: str, paused: bool) -> Waiting:
    p = run.parameters
    return Waiting(
        service=str(p["service"]),
        environment=str(p["environment"]),
        digest=Digest(str(p["digest"])),
        config=config or p.get("config"),
        run_id=str(run.id),
        state=state,
        paused=paused,
    )


def _from_run(client: Any, flow_run_id: str, config: str | None) -> Waiting:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
    from prefect.exceptions import ObjectNotFound

    try:
        run_id = uuid.UUID(flow_run_id)
    except ValueError:
        raise UsageError(
            f"{flow_run_id!r} is not a flow run id (a UUID, as shown in the Prefect UI), nor SERVICE ENV"
        ) from None
    try:
        flow_run = client.read_flow_run(run_id)
    except ObjectNotFound:
        # A wrong PREFECT_API_URL answers 404 to everything: say so, not "no such run".
        from promotion.prefect_api import api_url, check_reachable

        check_reachable()
        raise UsageError(f"no flow run {run_id} on {api_url()}") from None
    if "environment" in flow_run.parameters:
        paused = bool(flow_run.state and flow_run.state.is_paused())
        return _stage_of(flow_run, config, _state(flow_run), paused)
    if flow_run.state is not None and flow_run.state.is_paused():
        # A pipeline run of a deployment suspends itself to wait: the request names it.
        return _suspended_pipeline(flow_run, config)
    # Given the pipeline run: the stage subflow is the one that waits (or waited).
    children = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id]))
    )
    stages = sorted(
        (c for c in children if "environment" in c.parameters), key=lambda c: c.created or 0, reverse=True
    )
    waiting = next((c for c in stages if c.state and c.state.is_paused()), None)
    if waiting is not None:
        return _stage_of(waiting, config, _state(waiting), True)
    if stages:
        return _stage_of(stages[0], config, _state(flow_run), False)
    raise PromotionError(f"flow run {run_id} is not waiting for approval (it is {_state(flow_run)})")


def _suspended_pipeline(flow_run: Any, config: str | None) -> Waiting:
    p = flow_run.parameters
    pipeline = load_pipeline(config or p.get("config"))
    service = str(p["service"])
    ledger = ArtifactStore(pipeline).ledger
    mine = [r for r in open_requests(ledger, service) if r.flow_run_id == str(flow_run.id)]
    if not mine:
        raise PromotionError(
            f"flow run {flow_run.id} is {_state(flow_run)} but no open approval request of {service} "
            "names it (promote pending lists the open ones)"
        )
    request = mine[-1]
    return Waiting(
        service=service,
        environment=request.environment,
        digest=request.digest,
        config=config or p.get("config"),
        run_id=str(flow_run.id),
        state=_state(flow_run),
        paused=True,
    )


def _from_request(client: Any, service: str, env: str, config: Path | None) -> Waiting:
    from prefect.exceptions import ObjectNotFound

    pipeline = load_pipeline(config)
    request = only_request(pipeline, service, env)
    run_id = request.flow_run_id
    state, paused = "not known (the request names no flow run)", False
    if run_id is not None:
        try:
            run = client.read_flow_run(uuid.UUID(run_id))
        except ObjectNotFound:
            from promotion.prefect_api import api_url

            state = f"not found on {api_url()}"
        else:
            state, paused = _state(run), bool(run.state and run.state.is_paused())
    return Waiting(
        service=request.service,
        environment=request.environment,
        digest=request.digest,
        config=str(config) if config else None,
        run_id=run_id,
        state=state,
        paused=paused,
    )


def only_request(pipeline: Pipeline, service: str, env: str) -> ApprovalRequest:
    """The one open request of ``service`` in ``env``; a usage error naming the candidates otherwise."""
    pipeline.service(service)
    pipeline.environment(env)
    found = [r for r in open_requests(ArtifactStore(pipeline).ledger, service) if r.environment == env]
    if not found:
        raise UsageError(f"no approval request of {service} is open in {env} (promote pending lists them)")
    if len(found) > 1:
        listed = ", ".join(f"{r.digest} (version {r.version or 'n/a'}, run {r.flow_run_id})" for r in found)
        raise UsageError(
            f"{len(found)} approval requests of {service} are open in {env}: {listed}; "
            "give the run id of the one you mean"
        )
    return found[0]


def form_ready(client: Any, flow_run: Any) -> bool:
    """Whether a paused run's resume form is stored yet.

    Prefect marks the run PAUSED a moment before it saves the form's schema; a resume in between
    is refused ("Run input schema not found"), so answer only once this is true.
    """
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
    from prefect.input.run_input import keyset_from_paused_state

    state = flow_run.state
    if state is None or not state.is_paused():
        return False
    try:
        client.read_flow_run_input(flow_run.id, keyset_from_paused_state(state)["schema"])
    except ObjectNotFound:
        return False
    except PrefectHTTPStatusError as exc:
        # The sync client raises the bare 404 ("Flow run input not found") for a form not stored yet.
        if exc.response.status_code == 404:
            return False
        raise
    return True


def _form_ready(client: Any, waiting: Waiting) -> Waiting:
    """Wait (a few seconds at most) until the paused run's form is stored: a resume needs it."""
    assert waiting.run_id is not None
    run = client.read_flow_run(uuid.UUID(waiting.run_id))
    deadline = time.monotonic() + FORM_WAIT_S
    while not form_ready(client, run) and time.monotonic() < deadline:
        time.sleep(0.2)  # polling the API for a condition, with a deadline
        run = client.read_flow_run(run.id)
    paused = bool(run.state and run.state.is_paused())
    keyset = run.state.state_details.run_input_keyset if paused else None
    return Waiting(
        **{
            **waiting.__dict__,
            "state": _state(run),
            "paused": paused,
            "input_key": keyset["response"] if keyset else None,
        }
    )
