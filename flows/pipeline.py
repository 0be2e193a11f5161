"""The promotion pipeline: one flow that walks the environments, one subflow per stage.

>>> promote_pipeline("api", "sha256:1a2b...", to="staging")      # doctest: +SKIP

Every decision and every move is recorded in the ledger before the run goes on, so a re-run of
the same pipeline picks up where the last one stopped and never promotes twice.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from typing import Any, NoReturn

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State
from prefect.exceptions import FlowPauseTimeout
from prefect.runtime import deployment, flow_run
from prefect.states import Completed, Failed

from flows import _logging
from flows import _report as report
from flows.approval import wait_for_approvals
from promotion.approval import Decision, Tally, Verdict
from promotion.ci_context import current_actor
from promotion.config import (
    Environment,
    Pipeline,
    config_path,
    format_duration,
    load_pipeline,
)
from promotion.deadlines import is_expired, record_timeout, timeout_reason
from promotion.digest import Digest
from promotion.errors import (
    ApprovalRejected,
    ApprovalSuperseded,
    DigestFlagged,
    GateFailed,
    InfrastructureError,
    PromotionError,
    StageHeldBack,
    VerificationFailed,
)
from promotion.evaluate import StageGates
from promotion.gates import GateResult
from promotion.lock import Holder, StoreLock
from promotion.models import ArtifactRecord, EnvState, LedgerRecord, LedgerState, utcnow
from promotion.plan import held_back, plan, previous_environment, previous_stay, remaining_environments
from promotion.reach import DigestHistory, digest_history
from promotion.report import approval_description, gate_table, stage_report
from promotion.requests import ApprovalRequest, find_request, record_answer, request_details
from promotion.settings import settings
from promotion.store import ArtifactStore
from tasks.deploy import deploy, verify_live
from tasks.gates import evaluate_stage_gates

_logging.install()

#: Wait this long for another promotion of the same service/environment to finish.
LOCK_TIMEOUT_S = 3600.0


def stage_lock(store: ArtifactStore, service: str, environment: str) -> StoreLock:
    """The lock that serializes moves of one service in one environment (see promotion/lock.py).

    Held in the store, not in Prefect: it dies with its holder within a lease (15 s), and a
    waiter logs which run, host and pid holds it.
    """
    holder = Holder.here(str(flow_run.id or "local"), str(flow_run.name or "local"))
    logger = get_run_logger()
    return StoreLock(store.s3, service, environment, holder, timeout_s=LOCK_TIMEOUT_S, log=logger.info)


_STORES: dict[tuple[str, ...], tuple[Pipeline, ArtifactStore]] = {}
_STORES_LOCK = threading.Lock()


def _load(config: str | None) -> tuple[Pipeline, ArtifactStore]:
    """The pipeline and a store for it, shared by the runs of this process.

    A pipeline run and its stage runs would otherwise each build an S3 client. The key includes
    the file's modification time and the PROMOTION_S3_* overrides, so an edited file is re-read.
    """
    path = config_path(config).resolve()
    try:
        mtime = str(path.stat().st_mtime_ns)
    except OSError:
        mtime = "missing"
    overrides = settings().store_overrides()
    key = (str(path), mtime, *(f"{field}={overrides[field]}" for field in sorted(overrides)))
    with _STORES_LOCK:
        if key not in _STORES:
            pipeline = load_pipeline(config)
            _STORES[key] = (pipeline, ArtifactStore(pipeline))
        return _STORES[key]


def _short(digest: str) -> str:
    return f"{digest[:19]}…" if len(digest) > 19 else digest


def _pipeline_run_name() -> str:
    p = flow_run.parameters
    return f"{p.get('service')} {_short(str(p.get('digest')))} → {p.get('to') or 'end'}" + (
        " (plan)" if p.get("dry_run") else ""
    )


def _stage_run_name() -> str:
    p = flow_run.parameters
    return f"{p.get('service')} {_short(str(p.get('digest')))} → {p.get('environment')}"


def _run_id() -> str:
    return str(flow_run.id or "local")


def _gate_dicts(results: list[GateResult]) -> list[dict[str, Any]]:
    return [r.model_dump(mode="json") for r in results]


# --- one stage ---------------------------------------------------------------------------------------


@flow(name="promote-to-environment", flow_run_name=_stage_run_name, validate_parameters=True)
def promote_to_environment(
    service: str,
    digest: str,
    environment: str,
    requested_by: str | None = None,
    config: str | None = None,
    aimed_at: str | None = None,
    waiting_run: str | None = None,
    unplanned: bool = False,
) -> dict[str, Any]:
    """Gates, approval, deploy and verification for one environment.

    ``unplanned`` (``promote run --hotfix``, a webhook's ``unplanned: true``) is recorded on the
    ``promoted`` record: DORA's rework rate counts such deployments (promotion/metrics).

    ``aimed_at`` is the environment the pipeline run is aimed at: when it is further up, this
    environment is not moved back from a newer build (checked again under the lock).

    ``waiting_run`` is the pipeline run of a deployment that waits for the approval by suspending
    (no process while it waits): then an undecided request ends this subflow with the outcome
    ``awaiting approval`` and the form's description, and the pipeline suspends. Without it (a
    run in a terminal) this subflow pauses in its own process.

    Raises :class:`GateFailed`, :class:`ApprovalRejected` or :class:`VerificationFailed` (the
    subflow fails with that reason); a pause that times out fails it with ``FlowPauseTimeout``,
    which the pipeline records as a rejection.
    """
    logger = get_run_logger()
    pipeline, store = _load(config)
    d = Digest(digest)
    env = pipeline.environment(environment)
    artifact = store.record(service, d)
    tip = store.ledger.tip(service)
    current = tip.state.environments.get(env.name)
    if current is not None and current.digest == d:
        logger.info("%s already runs %s (since %s): nothing to do", env.name, d.short, current.since)
        return {"environment": env.name, "outcome": "already there"}
    history = digest_history(store.ledger, service, d, tip)
    _refuse_moving_back(tip.state, history, env.name, aimed_at)

    prev_name = previous_environment(pipeline, env.name)
    previous, until = previous_stay(history, prev_name)
    gates = _run_gates(store, artifact, env, prev_name, previous, until)
    results = gates.results
    failed = gates.failing
    if failed and len(gates.waiting_for_evidence) == len(failed):
        return _wait_for_evidence(artifact, env, gates)
    if failed:
        reasons = [f"{r.gate}: {'; '.join(r.reasons)}" for r in failed]
        _reject(store, artifact, env, requested_by, results, [], "gates failed: " + " | ".join(reasons))
        for r in failed:
            report.event(
                "gate.failed",
                service=service,
                environment=env.name,
                digest=d,
                payload={"gate": r.gate, "kind": r.kind, "reasons": r.reasons, "measured": r.measured},
            )
        report.tell_owners(
            pipeline, store.s3, "gate_failed", service=service, environment=env.name, digest=d,
            reasons=reasons, version=artifact.version,
            report_key=report.artifact_key("promotion", service, env.name),
        )  # fmt: skip
        raise GateFailed(", ".join(r.gate for r in failed), reasons)

    decisions: list[tuple[Decision, bool, str]] = []
    if env.approval is not None:
        outdated = _outdated(env, history, current)
        if outdated is not None:
            raise outdated  # nobody is asked to approve what would not be deployed
        if waiting_run is None:
            logger.info("this run has no deployment: it waits for approval in this process")
            _await_approval(store, artifact, env, current, requested_by, results, decisions)
        else:
            waiting = _approval_so_far(
                store, artifact, env, current, requested_by, results, decisions, waiting_run
            )
            if waiting is not None:
                return waiting

    # One promotion per (service, environment) at a time; the ledger's create-only writes are the
    # second line of defence.
    with stage_lock(store, service, env.name) as lock:
        locked_tip = store.ledger.tip(service)
        before = locked_tip.state.environments.get(env.name)
        if before is not None and before.digest == d:
            logger.info("%s reached %s meanwhile: nothing to do", d.short, env.name)
            return {"environment": env.name, "outcome": "already there"}
        if before != current:
            # Someone promoted here while this run evaluated or waited: judge the newcomer again.
            locked_history = digest_history(store.ledger, service, d, locked_tip)
            _refuse_moving_back(locked_tip.state, locked_history, env.name, aimed_at)
            outdated = _outdated(env, locked_history, before)
            if outdated is not None:
                # Approved, but a newer build got here first: close the request, deploy nothing.
                _reject(
                    store, artifact, env, requested_by, results, decisions, str(outdated),
                    idempotency="superseded",
                )  # fmt: skip
                raise outdated
        actor = requested_by or current_actor()
        lock.still_held()
        done = deploy(store, env.name, service, d, artifact.version, requested_by, f"{_run_id()}:{env.name}")
        lock.still_held()  # a holder whose lease ran out during the deploy must not write the record
        approvals = [
            {"approver": x.approver, "decision": x.decision, "reason": x.reason, "counted": ok}
            for x, ok, _ in decisions
        ]
        store.ledger.append(
            service,
            "promoted",
            d,
            actor=actor,
            environment=env.name,
            version=artifact.version,
            reason=_promoted_reason(decisions),
            gates=_gate_dicts(results),
            details={
                "approvals": approvals,
                "deploy": done,
                "previous": str(before.digest) if before else None,
                "flow_run_id": _run_id(),
                # Lead time is measured from the ledger alone, on this record (promotion/metrics).
                "commit_time": (
                    artifact.provenance.commit_time.isoformat() if artifact.provenance.commit_time else None
                ),
                "unplanned": unplanned,
            },
            idempotency_id=f"{_run_id()}:promoted",
        )
        verification = verify_live(store, env.name)
        broken = [r for r in verification if not r.passed]
        if broken:
            reasons = [f"{r.gate}: {'; '.join(r.reasons)}" for r in broken]
            lock.still_held()
            restored = _restore(
                store, artifact, env, before, actor, "verification failed: " + " | ".join(reasons)
            )
            report.markdown(
                report.artifact_key("promotion", service, env.name),
                stage_report(artifact, env.name, "rolled back", results, decisions, verification),
                f"{service} → {env.name}: verification failed",
            )
            # One incident: the automatic restore is part of it, not a second (rolled_back) one.
            restored_note = f"rolled back to {restored}" if restored else "nothing earlier to restore"
            report.tell_owners(
                pipeline, store.s3, "verification_failed", service=service, environment=env.name,
                digest=d, reasons=[*reasons, restored_note], version=artifact.version,
                report_key=report.artifact_key("promotion", service, env.name),
            )  # fmt: skip
            raise VerificationFailed(env.name, reasons, str(restored) if restored else None)

    report.event(
        "promoted",
        service=service,
        environment=env.name,
        digest=d,
        payload={"version": artifact.version, "previous": str(before.digest) if before else None},
    )
    report.markdown(
        report.artifact_key("promotion", service, env.name),
        stage_report(artifact, env.name, "promoted", results, decisions, verification),
        f"{service} → {env.name}: promoted",
    )
    logger.info("promoted %s %s to %s", service, d.short, env.name)
    return {"environment": env.name, "outcome": "promoted"}


def _promoted_reason(decisions: list[tuple[Decision, bool, str]]) -> str:
    approvers = [d.approver for d, counted, _ in decisions if counted and d.decision == "approve"]
    return "gates passed" + (f", approved by {', '.join(approvers)}" if approvers else "")


def _outdated(
    env: Environment, history: DigestHistory, current: EnvState | None
) -> ApprovalSuperseded | None:
    """The refusal when ``env`` runs a build newer than the digest (``approval.on_outdated: refuse``)."""
    if env.approval is None or env.approval.on_outdated == "allow" or current is None:
        return None
    if current.digest == history.digest or not history.is_newer(current.digest):
        return None
    return ApprovalSuperseded(env.name, history.digest.short, current.digest.short, current.version)


def _refuse_moving_back(
    state: LedgerState, history: DigestHistory, environment: str, aimed_at: str | None
) -> None:
    why = held_back(state, history, environment, aimed_at or environment)
    if why:
        raise StageHeldBack(environment, why)


def _run_gates(
    store: ArtifactStore,
    artifact: ArtifactRecord,
    env: Environment,
    prev_name: str | None,
    previous: EnvState | None,
    previous_until: dt.datetime | None = None,
) -> StageGates:
    logger = get_run_logger()
    now = utcnow()
    gates = evaluate_stage_gates(store, artifact, env, prev_name, previous, now, previous_until)
    for r in gates.results:
        (logger.info if r.passed else logger.warning)(
            "gate %s %s: %s", r.gate, "passed" if r.passed else "FAILED", "; ".join(r.reasons)
        )
    return gates


def _wait_for_evidence(artifact: ArtifactRecord, env: Environment, gates: StageGates) -> dict[str, Any]:
    """End the stage as waiting: its only failures are reports that may still arrive (``wait_for``).

    Nothing is recorded in the ledger (no verdict was reached) and no lock is taken: the stage
    ends here and holds no process. The nightly sweep (an ``auto_promote`` environment) or a
    ``promote run`` after ``promote attest`` evaluates it again; once the deadline has passed a
    report still missing is a gate failure, recorded as the stage's rejection.
    """
    until = gates.evidence_deadline
    assert until is not None
    reasons = [f"{r.gate}: {'; '.join(r.reasons)}" for r in gates.waiting_for_evidence]
    get_run_logger().info("%s waits for evidence until %s: %s", env.name, until, " | ".join(reasons))
    report.markdown(
        report.artifact_key("promotion", artifact.service, env.name),
        stage_report(artifact, env.name, "waiting for evidence", gates.results, [], notes=reasons),
        f"{artifact.service} → {env.name}: waiting for evidence until {until:%Y-%m-%d %H:%M}Z",
    )
    return {
        "environment": env.name,
        "outcome": "waiting for evidence",
        "until": until.isoformat(),
        "reason": " | ".join(reasons),
    }


def _await_approval(
    store: ArtifactStore,
    artifact: ArtifactRecord,
    env: Environment,
    current: EnvState | None,
    requested_by: str | None,
    results: list[GateResult],
    decisions: list[tuple[Decision, bool, str]],
) -> Tally:
    """Open (or continue) the approval request in the ledger and wait until it is decided.

    The tally is the ledger's (see promotion/requests.py), re-read before each pause and after
    each answer: this process holds no decision of its own. ``decisions`` is filled with every
    answer on the request, judged, for the reports.
    """
    assert env.approval is not None
    policy = env.approval
    request = _open_request(store, artifact, env, requested_by)
    _announce_request(request, artifact, env, current, _run_id())

    def read_tally() -> tuple[Tally, int]:
        nonlocal request
        # Closed meanwhile (another run of this digest ended the stage): keep the last one read;
        # the lock block below sees that the environment moved.
        request = find_request(store.ledger, artifact.service, env.name, artifact.digest) or request
        decisions[:] = request.decisions(policy)
        return request.tally(policy), request.read_to

    def record(decision: Decision, seen: int) -> Verdict:
        read_tally()
        for a in request.answers:
            # `promote approve`/`reject` records the decision before resuming this run.
            if a.seq > seen and a.source == "cli" and a.decision == decision:
                verdict = Verdict(a.counted, a.why)
                _announce_decision(artifact, env, current, decision, verdict, request.tally(policy))
                return verdict
        verdict = request.tally(policy).judge(decision)
        record_answer(
            store.ledger,
            request,
            decision,
            verdict,
            "run",
            _run_id(),
            version=artifact.version,
            idempotency_id=f"{_run_id()}:approval:{seen}",
        )
        after = request.tally(policy)
        after.add(decision)
        _announce_decision(artifact, env, current, decision, verdict, after)
        return verdict

    tally = wait_for_approvals(
        request.deadline,
        read_tally=read_tally,
        describe=lambda t: approval_description(artifact, env, current, results, t, decisions),
        record=record,
    )
    if tally.outcome == "rejected":
        _reject_by_approver(store, artifact, env, requested_by, results, decisions, tally)
    return tally


def _approval_so_far(
    store: ArtifactStore,
    artifact: ArtifactRecord,
    env: Environment,
    current: EnvState | None,
    requested_by: str | None,
    results: list[GateResult],
    decisions: list[tuple[Decision, bool, str]],
    waiting_run: str,
) -> dict[str, Any] | None:
    """Where the request stands, for a pipeline run that suspends to wait: None when approved.

    Opens the request (or continues it, once per pipeline run: a re-entered run does not ask
    again); rejected or past its deadline, closes it and raises; undecided, returns the outcome
    ``awaiting approval`` with what the pipeline needs to suspend.
    """
    assert env.approval is not None
    policy = env.approval
    request = find_request(store.ledger, artifact.service, env.name, artifact.digest)
    if request is None or request.flow_run_id != waiting_run:
        request = _open_request(store, artifact, env, requested_by, waiting_run)
        _announce_request(request, artifact, env, current, waiting_run)
    decisions[:] = request.decisions(policy)
    tally = request.tally(policy)
    if tally.outcome == "approved":
        return None
    if tally.outcome == "rejected":
        _reject_by_approver(store, artifact, env, requested_by, results, decisions, tally)
    if is_expired(request, policy):
        reason = timeout_reason(policy)
        written = record_timeout(
            store, request, policy, actor=requested_by or current_actor(), flow_run_id=waiting_run,
            gates=_gate_dicts(results),
        )  # fmt: skip
        if written is None:  # the deadline check got there first and announced it
            raise ApprovalRejected(env.name, "timeout", reason)
        report.approval_timed_out(store, artifact, env.name, current, waiting_run, reason)
        raise ApprovalRejected(env.name, "timeout", reason)
    return {
        "environment": env.name,
        "outcome": "awaiting approval",
        "request_seq": request.opened.seq,
        "deadline": request.deadline.isoformat(),
        "description": approval_description(artifact, env, current, results, tally, decisions),
    }


def _announce_request(
    request: ApprovalRequest,
    artifact: ArtifactRecord,
    env: Environment,
    current: EnvState | None,
    waiting_run: str,
) -> None:
    """``promotion.approval.requested``, which promote setup's automation sends to the approvers."""
    assert env.approval is not None
    policy = env.approval
    report.event(
        "approval.requested",
        service=artifact.service,
        environment=env.name,
        digest=artifact.digest,
        payload={
            **report.approval_payload(artifact, env.name, current, waiting_run),
            "approvers": policy.approvers,
            "min_approvals": policy.min_approvals,
            "flow_run_id": waiting_run,
            "timeout_s": policy.timeout.total_seconds(),
            "deadline": request.deadline.isoformat(),
            "request_seq": request.opened.seq,
            "continued": request.latest.seq != request.opened.seq,
        },
    )


def _announce_decision(
    artifact: ArtifactRecord,
    env: Environment,
    current: EnvState | None,
    decision: Decision,
    verdict: Verdict,
    tally: Tally,
) -> None:
    """``promotion.approval.decided``, which promote setup's automation turns into a message to the
    approvers (counted, refused and why, approved, rejected). ``tally`` includes the decision.

    Emitted after the answer is in the ledger: a notification never announces an unrecorded one.
    """
    report.event(
        "approval.decided",
        service=artifact.service,
        environment=env.name,
        digest=artifact.digest,
        payload={
            **report.approval_payload(artifact, env.name, current, _run_id()),
            **report.decision_payload(decision, verdict, tally),
        },
    )


def _open_request(
    store: ArtifactStore,
    artifact: ArtifactRecord,
    env: Environment,
    requested_by: str | None,
    waiting_run: str | None = None,
) -> ApprovalRequest:
    """The request for this digest in this environment: continued when open, else opened now.

    Either way an ``approval_requested`` record names this run as the one that waits (what
    ``promote pending`` links to); continuing keeps the first request's deadline and decisions.
    """
    assert env.approval is not None
    policy = env.approval
    found = find_request(store.ledger, artifact.service, env.name, artifact.digest)
    deadline = found.deadline if found else utcnow() + policy.timeout
    approvers = f"{policy.min_approvals} of {', '.join(policy.approvers)}"
    store.ledger.append(
        artifact.service,
        "approval_requested",
        artifact.digest,
        actor=requested_by or current_actor(),
        environment=env.name,
        version=artifact.version,
        reason=(
            f"continues the request of record {found.opened.seq} (needs {approvers})"
            if found
            else f"needs {approvers} by {deadline:%Y-%m-%d %H:%M}Z"
        ),
        details=request_details(
            policy=policy,
            deadline=deadline,
            flow_run_id=waiting_run or _run_id(),
            requested_by=found.requested_by if found else requested_by,
            commit_author=artifact.provenance.commit_author,
            continues=found.opened.seq if found else None,
        ),
        idempotency_id=f"{waiting_run or _run_id()}:approval_requested:{env.name}",
    )
    opened = find_request(store.ledger, artifact.service, env.name, artifact.digest)
    assert opened is not None  # just appended; a concurrent run's request may be the one opened
    return opened


def _reject_by_approver(
    store: ArtifactStore,
    artifact: ArtifactRecord,
    env: Environment,
    requested_by: str | None,
    results: list[GateResult],
    decisions: list[tuple[Decision, bool, str]],
    tally: Tally,
) -> NoReturn:
    """Record the stage's rejection by the approver who rejected it (waiting or suspended) and stop."""
    assert tally.rejected_by is not None
    by = tally.rejected_by
    reason = by.reason or "no reason given"
    why = f"rejected by {by.approver}: {reason}"
    _reject(store, artifact, env, requested_by, results, decisions, why)
    report.tell_owners(
        store.pipeline, store.s3, "rejected", service=artifact.service, environment=env.name,
        digest=artifact.digest, reasons=[why], version=artifact.version,
        report_key=report.artifact_key("promotion", artifact.service, env.name),
    )  # fmt: skip
    raise ApprovalRejected(env.name, by.approver, reason)


def _reject(
    store: ArtifactStore,
    artifact: ArtifactRecord,
    env: Environment,
    requested_by: str | None,
    results: list[GateResult],
    decisions: list[tuple[Decision, bool, str]],
    reason: str,
    *,
    idempotency: str = "rejected",
) -> LedgerRecord:
    rec = store.ledger.append(
        artifact.service,
        "rejected",
        artifact.digest,
        actor=requested_by or current_actor(),
        environment=env.name,
        version=artifact.version,
        reason=reason,
        gates=_gate_dicts(results),
        details={"flow_run_id": _run_id()},
        idempotency_id=f"{_run_id()}:{idempotency}",
    )
    report.event(
        "rejected",
        service=artifact.service,
        environment=env.name,
        digest=artifact.digest,
        payload={"reason": reason},
    )
    report.markdown(
        report.artifact_key("promotion", artifact.service, env.name),
        stage_report(artifact, env.name, "rejected", results, decisions, notes=[reason]),
        f"{artifact.service} → {env.name}: rejected",
    )
    return rec


def _restore(
    store: ArtifactStore,
    artifact: ArtifactRecord,
    env: Environment,
    before: EnvState | None,
    actor: str,
    reason: str,
) -> Digest | None:
    """Put the environment back on ``before`` through the deploy path; record ``rolled_back``."""
    logger = get_run_logger()
    if before is None:
        logger.error("%s: %s; no earlier digest to restore", env.name, reason)
        return None
    done = deploy(
        store, env.name, artifact.service, before.digest, before.version, actor, f"{_run_id()}:restore"
    )
    record_rolled_back(
        store, artifact.service, env.name, before.digest, before.version, artifact.digest, actor, reason, done
    )
    logger.warning(
        "%s rolled back from %s to %s: %s", env.name, artifact.digest.short, before.digest.short, reason
    )
    return before.digest


def record_rolled_back(
    store: ArtifactStore,
    service: str,
    environment: str,
    restored: Digest,
    restored_version: str | None,
    replaced: Digest,
    actor: str,
    reason: str,
    deployed: dict[str, Any],
) -> None:
    """The ``rolled_back`` record and event of a restore (automatic here, manual in flows/rollback).

    ``details["from"]`` is what promotion.reach reads to tell that ``replaced`` left the
    environment; one writer keeps both kinds of rollback readable the same way.
    """
    run_id = _run_id()
    store.ledger.append(
        service,
        "rolled_back",
        restored,
        actor=actor,
        environment=environment,
        version=restored_version,
        reason=reason,
        details={"from": str(replaced), "deploy": deployed, "flow_run_id": run_id},
        idempotency_id=f"{run_id}:rolled_back",
    )
    report.event(
        "rolled_back",
        service=service,
        environment=environment,
        digest=restored,
        payload={"from": str(replaced), "reason": reason},
    )


# --- the pipeline ------------------------------------------------------------------------------------


@flow(name="promote-pipeline", flow_run_name=_pipeline_run_name, validate_parameters=True)
def promote_pipeline(
    service: str,
    digest: str,
    to: str | None = None,
    dry_run: bool = False,
    requested_by: str | None = None,
    config: str | None = None,
    unplanned: bool = False,
) -> State[Any]:
    """Promote ``digest`` of ``service`` through the environments, in order, as far as ``to``.

    Starts after the furthest environment the digest already reached and stops at the first stage
    that does not pass; the run's final state message says which stage stopped it and why.
    ``unplanned``: a hotfix, recorded on each ``promoted`` record (DORA's rework rate).
    """
    logger = get_run_logger()
    try:
        pipeline, store = _load(config)
        d = Digest(digest)
        pipeline.service(service)
        if to is not None:
            pipeline.environment(to)
        artifact = store.record(service, d)  # a digest never published is refused before anything runs
        tip = store.ledger.tip(service)
        flagged = tip.state.flagged.get(str(d))
        if flagged is not None:
            raise DigestFlagged(str(d), service, flagged)
        history = digest_history(store.ledger, service, d, tip)
        p = plan(store, service, d, to=to, artifact=artifact) if dry_run else None
    except PromotionError as exc:
        logger.error("%s: %s", type(exc).__name__, exc)
        if isinstance(exc, InfrastructureError):
            why = f"{type(exc).__name__}: {exc} {ERRORED_NOTE}"
            return Failed(message=f"errored before the first stage: {why}")
        return Failed(message=f"{type(exc).__name__}: {exc}")

    if p is not None:
        lines = [f"# Plan: {service} {d.short} (version {artifact.version or 'n/a'})", ""]
        for s in p.stages:
            when = f" (earliest {s.earliest:%Y-%m-%d %H:%M}Z)" if s.earliest else ""
            if s.waits_until:
                when = f" (for evidence until {s.waits_until:%Y-%m-%d %H:%M}Z)"
            lines += [f"## {s.environment}: {s.action.replace('_', ' ')}{when}", gate_table(s.gates)]
            lines += [f"- {r}" for r in s.reasons]
            if s.approval:
                lines.append(f"- approval: {s.approval}")
        report.markdown(
            report.artifact_key("plan", service), "\n".join(lines), f"plan for {service} {d.short}"
        )
        logger.info("plan: %s", p.summary())
        return Completed(message=f"plan: {p.summary()}", data=p.as_dict())

    reached, stages = remaining_environments(pipeline, history, to)
    if not stages:
        message = f"{d.short} is already in {reached}: nothing to promote"
        logger.info(message)
        return Completed(message=message, data={"stages": []})

    rows: list[dict[str, Any]] = []
    started = dt.datetime.now(dt.UTC)
    # A run of a deployment waits for approval suspended (no process; it re-enters from the top
    # when answered, and what is done is skipped: the ledger says so). Prefect can suspend only
    # a top-level run of a deployment; any other waits in its process.
    waiting_run = _run_id() if deployment.id and not flow_run.parent_flow_run_id else None
    if waiting_run is not None:
        _fresh_stage_runs(waiting_run)
    for env in stages:
        if waiting_run is not None and env.approval is not None:
            answered = collect_answers(store, artifact, env, waiting_run)
            if answered:
                logger.info("%s: %s", env.name, "; ".join(answered))
        state = promote_to_environment(
            service=service,
            digest=str(d),
            environment=env.name,
            requested_by=requested_by,
            config=config,
            aimed_at=stages[-1].name,
            waiting_run=waiting_run,
            unplanned=unplanned,
            return_state=True,
        )
        if not state.is_completed():
            errored = _stage_errored(artifact, env, state)
            if errored is not None:
                rows.append({"environment": env.name, "outcome": "errored", "reason": errored})
                _summary(service, d, rows, started)
                return Failed(message=f"errored at {env.name}: {errored}", data={"stages": rows})
            reason = _stage_failure(store, artifact, env, requested_by, state)
            rows.append({"environment": env.name, "outcome": "stopped", "reason": reason})
            _summary(service, d, rows, started)
            return Failed(message=f"stopped at {env.name}: {reason}", data={"stages": rows})
        outcome = state.result()
        if outcome.get("outcome") == "awaiting approval":
            suspend_for_approval(service, d, env, outcome)  # ends this process; never returns
        if outcome.get("outcome") == "waiting for evidence":
            # Not a failure: nothing was decided. The run ends; what resumes it is in the message.
            rows.append({"environment": env.name, "outcome": "waiting", "reason": outcome["reason"]})
            _summary(service, d, rows, started)
            return Completed(
                message=f"waiting at {env.name} for evidence until {outcome['until']}: {outcome['reason']} "
                f"(attach it with promote attest, then promote run; the nightly sweep resumes "
                f"auto_promote environments)",
                data={"stages": rows},
            )
        rows.append({"environment": env.name, "outcome": outcome.get("outcome", "promoted"), "reason": ""})
    _summary(service, d, rows, started)
    return Completed(message=f"promoted {d.short} to {stages[-1].name}", data={"stages": rows})


#: Appended to the message of a stage that ended on an infrastructure error.
ERRORED_NOTE = "(infrastructure, nothing recorded against the digest; re-run to continue)"


def _stage_errored(artifact: ArtifactRecord, env: Environment, state: State[Any]) -> str | None:
    """The reason, when the stage ended on an infrastructure error (S3, Prefect); else None.

    Such a stage is *errored*, not stopped: nothing about the digest was learnt, so no
    ``rejected`` record is written (the stage wrote none either: its gates raise rather than
    fail, and its ledger appends are what failed), only the event ``promotion.errored``. A re-run
    starts this stage again.
    """
    exc = state.result(raise_on_failure=False)
    if not isinstance(exc, InfrastructureError):
        return None
    reason = f"{type(exc).__name__}: {exc} {ERRORED_NOTE}"
    get_run_logger().error("errored at %s: %s", env.name, reason)
    try:
        report.event(
            "errored",
            service=artifact.service,
            environment=env.name,
            digest=artifact.digest,
            payload={"error": type(exc).__name__, "reason": str(exc), "flow_run_id": _run_id()},
        )
    except Exception as event_exc:  # noqa: BLE001 - the run's own Failed state still says it all
        get_run_logger().warning("could not emit promotion.errored: %s", event_exc)
    return reason


def _stage_failure(
    store: ArtifactStore,
    artifact: ArtifactRecord,
    env: Environment,
    requested_by: str | None,
    state: State[Any],
) -> str:
    """Why the stage subflow failed; a pause timeout becomes a recorded rejection here."""
    exc = state.result(raise_on_failure=False)
    # Prefect fails a subflow whose pause timed out with "...never resumed", whatever it raised.
    if isinstance(exc, FlowPauseTimeout) or "never resumed" in (state.message or ""):
        timeout = format_duration(env.approval.timeout) if env.approval else "?"
        reason = f"approval timed out after {timeout}: no valid decision"
        # The request's answers (refused ones too) go into the stage report: read from the ledger.
        request = find_request(store.ledger, artifact.service, env.name, artifact.digest)
        answered = request.decisions(env.approval) if request is not None and env.approval else []
        if request is not None and env.approval is not None:
            # The same record, under the same id, as the deadline check would write.
            record_timeout(
                store, request, env.approval, actor=requested_by or current_actor(), flow_run_id=_run_id()
            )
            report.markdown(
                report.artifact_key("promotion", artifact.service, env.name),
                stage_report(artifact, env.name, "rejected", [], answered, notes=[reason]),
                f"{artifact.service} → {env.name}: rejected",
            )
        else:
            _reject(
                store, artifact, env, requested_by, [], answered, reason, idempotency=f"timeout:{env.name}"
            )
        stage_run = state.state_details.flow_run_id  # the stage run that waited, for its UI link
        current = store.ledger.state(artifact.service).environments.get(env.name)
        report.approval_timed_out(
            store, artifact, env.name, current, str(stage_run) if stage_run else None, reason
        )
        return reason
    if isinstance(exc, PromotionError):
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, BaseException):
        return f"{type(exc).__name__}: {exc}"
    return state.message or state.type.value


def _summary(service: str, digest: Digest, rows: list[dict[str, Any]], started: dt.datetime) -> None:
    took = (dt.datetime.now(dt.UTC) - started).total_seconds()
    report.table(
        report.artifact_key("pipeline", service),
        [{"digest": str(digest), **r} for r in rows],
        f"{service} {digest.short}: {len(rows)} stage(s) in {took:.1f}s",
    )


# --- waiting without a process -------------------------------------------------------------------


def _fresh_stage_runs(run_id: str) -> None:
    """Make this entry's stage subflows new runs, not the ones an earlier entry of this run made.

    Prefect links a subflow to its parent through a task run keyed by the call's position (the
    n-th call of that flow in the parent). A run re-entered after a suspension starts counting
    again and would be linked to an earlier entry's stage run (the second entry's prod to the
    first's dev): its state changes are then refused and a rejection escapes as an exception. The
    ledger, not Prefect's result reuse, says what is done, so each entry numbers its calls apart.
    """
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext
    from prefect.tasks import Task

    ctx = FlowRunContext.get()
    if ctx is None:
        return
    # Entries are counted by the run's suspensions (the context's copy of run_count can be stale).
    with get_client(sync_client=True) as client:
        entry = sum(st.name == "Suspended" for st in client.read_flow_run_states(uuid.UUID(run_id)))
    if entry:
        tracking = Task(name=promote_to_environment.name, fn=promote_to_environment.fn)
        ctx.task_run_dynamic_keys[tracking.task_key] = entry * 1000


def suspend_for_approval(service: str, digest: Digest, env: Environment, waiting: dict[str, Any]) -> None:
    """Suspend this pipeline run until someone answers the form, or its deadline.

    The process ends here (Prefect's ``Pause``). An answer (the UI's form, or ``promote
    approve``) resumes the run, which is scheduled again and re-enters from the top:
    :func:`collect_answers` records the answer, and the stage either deploys or suspends again
    with a fresh form. At the deadline the server fails the run, so the form is no longer
    offered, and the deadline check scheduled here records the timeout in the ledger.
    """
    from prefect.flow_runs import suspend_flow_run

    from flows.approval import ApprovalForm
    from flows.deadlines import schedule_check

    logger = get_run_logger()
    deadline = dt.datetime.fromisoformat(str(waiting["deadline"]))
    remaining = (deadline - dt.datetime.now(dt.UTC)).total_seconds()
    logger.info("%s", schedule_check(service, env.name, str(digest), int(waiting["request_seq"]), deadline))
    logger.info(
        "%s waits for approval until %s; this run is suspended (no process waits) until answered",
        env.name,
        f"{deadline:%Y-%m-%d %H:%M:%S}Z",
    )
    form = ApprovalForm.with_initial_data(description=str(waiting["description"]))
    # A fresh key per suspension: a key used before makes Prefect hand back that old answer.
    suspend_flow_run(
        wait_for_input=form,
        timeout=max(1, int(remaining) + 1),
        key=f"{_form_key_stem(env)}-{uuid.uuid4().hex[:12]}",
    )
    raise RuntimeError("suspend_flow_run returned without suspending")  # pragma: no cover


def _form_key_stem(env: Environment) -> str:
    """The pause key of this environment's approval forms, before the last '-' and a hex part
    (keys allow letters, digits and dashes only: "prod" and "prod-eu" still differ)."""
    return f"approval-{env.name}"


def collect_answers(
    store: ArtifactStore, artifact: ArtifactRecord, env: Environment, run_id: str
) -> list[str]:
    """Record the answers this run was resumed with (the UI's form), once each; what was recorded.

    Each suspension's form has its own run-input key. ``promote approve`` records its answer in
    the ledger (with that key) before resuming, so only answers the ledger does not have yet are
    recorded here, judged against the ledger's tally like any other.
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    assert env.approval is not None
    policy = env.approval
    request = find_request(store.ledger, artifact.service, env.name, artifact.digest)
    if request is None:
        return []
    # Answers given to this run's own forms, even when another run has continued the request
    # since (both waited on it): they are answers to this request all the same.
    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(uuid.UUID(run_id))
        given: list[tuple[str, Any]] = []
        for st in states:
            keyset = st.state_details.run_input_keyset if st.state_details else None
            if not keyset or not st.is_paused():
                continue
            if str(st.state_details.pause_key or "").rpartition("-")[0] != _form_key_stem(env):
                continue  # the form of another environment's approval in this run
            key = keyset["response"]
            try:
                raw = client.read_flow_run_input(uuid.UUID(run_id), key)
            except ObjectNotFound:
                continue
            except Exception as exc:  # the sync client raises the bare 404 for a missing input
                if getattr(getattr(exc, "response", None), "status_code", None) == 404:
                    continue
                raise
            given.append((key, raw))
    done: list[str] = []
    for key, raw in given:
        if any(a.input_key == key for a in request.answers):
            continue
        value = json.loads(raw) if isinstance(raw, str) else raw
        # The server validated it against the form's schema before it resumed the run.
        decision = Decision(
            decision=value["decision"],
            approver=str(value["approver"]).strip(),
            reason=str(value.get("reason") or ""),
        )
        tally = request.tally(policy)
        verdict = tally.judge(decision)
        record_answer(
            store.ledger,
            request,
            decision,
            verdict,
            "run",
            run_id,
            version=artifact.version,
            idempotency_id=f"{run_id}:approval:{key}",
            input_key=key,
        )
        tally.add(decision)
        current = store.ledger.state(artifact.service).environments.get(env.name)
        _announce_decision(artifact, env, current, decision, verdict, tally)
        done.append(
            f"{decision.decision} by {decision.approver} "
            + ("counted" if verdict.accepted else f"refused: {verdict.why}")
        )
        request = find_request(store.ledger, artifact.service, env.name, artifact.digest) or request
    return done
