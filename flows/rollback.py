"""Rollback: put an environment back on an earlier digest, through the same deploy and checks."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows import _report as report
from flows.pipeline import _load, record_rolled_back, stage_lock
from promotion.ci_context import current_actor
from promotion.digest import Digest
from promotion.errors import VerificationFailed
from promotion.report import gate_table
from promotion.rollback_targets import rollback_target
from tasks.deploy import deploy, verify_live


def _rollback_run_name() -> str:
    p = flow_run.parameters
    target = str(p.get("to_digest") or "previous")
    return f"rollback {p.get('service')} {p.get('environment')} → {target[:19]}"


@flow(name="rollback", flow_run_name=_rollback_run_name, validate_parameters=True)
def rollback(
    service: str,
    environment: str,
    to_digest: str | None = None,
    requested_by: str | None = None,
    reason: str = "",
    config: str | None = None,
) -> dict[str, Any]:
    """Back to the previous digest, or to ``to_digest`` if it ran in this environment before.

    Anything else is refused (:class:`RollbackRefused`). The move is recorded as ``rolled_back``
    and verified by the environment's live checks like any deploy.
    """
    logger = get_run_logger()
    pipeline, store = _load(config)
    pipeline.service(service)
    env = pipeline.environment(environment)
    wanted = Digest(to_digest) if to_digest else None
    actor = requested_by or current_actor()
    run_id = str(flow_run.id or "local")
    with stage_lock(store, service, env.name) as lock:
        current, target = rollback_target(store.ledger.records(service), env.name, wanted)
        store.record(service, target.digest)  # the artifact must still be published
        store.verify_full(target.digest)  # never restore bytes that no longer match their name
        lock.still_held()
        done = deploy(store, env.name, service, target.digest, target.version, actor, f"{run_id}:rollback")
        lock.still_held()  # a holder whose lease ran out during the deploy must not write the record
        why = reason or f"manual rollback by {actor}"
        record_rolled_back(
            store, service, env.name, target.digest, target.version, current.digest, actor, why, done
        )
        report.tell_owners(
            pipeline, store.s3, "rolled_back", service=service, environment=env.name,
            digest=target.digest, version=target.version,
            reasons=[f"{why}: from {current.digest.short} back to {target.digest.short}"],
            report_key=report.artifact_key("rollback", service, env.name),
        )  # fmt: skip
        verification = verify_live(store, env.name)
    text = (
        f"# {service} {env.name}: rolled back\n\nFrom `{current.digest}` to `{target.digest}` "
        f"(version {target.version or 'n/a'}) by {actor}: {why}\n\n"
        f"## Verification\n{gate_table(verification)}"
    )
    report.markdown(
        report.artifact_key("rollback", service, env.name), text, f"rollback of {service} {env.name}"
    )
    broken = [r for r in verification if not r.passed]
    if broken:
        raise VerificationFailed(env.name, [f"{r.gate}: {'; '.join(r.reasons)}" for r in broken], None)
    logger.info(
        "%s %s rolled back from %s to %s", service, env.name, current.digest.short, target.digest.short
    )
    return {"environment": env.name, "from": str(current.digest), "to": str(target.digest)}
