"""Run one gate against everything it may look at. Pure apart from the evidence loader.

The Prefect gate task, ``promote plan`` and the sweep call :func:`evaluate`. A gate that cannot
be evaluated because of its evidence (a malformed report, corrupt bytes) fails, with the error as
its reason. An :class:`~promotion.errors.InfrastructureError` (S3 down or answering 503 while the
evidence is read) is raised instead: it says nothing about the build, so it must never become a
failed gate that the stage would record as a rejection. The gate task retries it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from promotion import gates as g
from promotion.config import (
    CoverageGate,
    Environment,
    Gate,
    PerfGate,
    PolicyGate,
    ScanGate,
    SoakGate,
    TestsGate,
    WindowGate,
    format_duration,
)
from promotion.digest import Digest
from promotion.errors import InfrastructureError, PromotionError
from promotion.evidence import (
    MAX_EVIDENCE_BYTES as MAX_EVIDENCE_BYTES,  # re-export: evidence over the parsers' limit is not downloaded
)
from promotion.gates import GateResult
from promotion.models import ArtifactRecord, EnvState, EvidenceRef

#: The evidence kind attached at publish that each evidence gate reads.
EVIDENCE_FOR = {"tests": "junit", "coverage": "coverage", "scan": "sarif", "perf": "perf"}


@dataclass(frozen=True)
class GateContext:
    service: str
    digest: Digest
    environment: Environment
    artifact: ArtifactRecord
    #: The environment before this one in the pipeline, and what runs there now.
    previous_env: str | None
    previous: EnvState | None
    now: dt.datetime
    load_evidence: Callable[[EvidenceRef], bytes]
    #: When the digest left the previous environment (replaced by a newer build); None: still there.
    previous_until: dt.datetime | None = None


def evaluate(gate: Gate, ctx: GateContext) -> GateResult:
    """Evaluate a pre-deploy gate. Live gates (http, prometheus) run after deploy instead.

    Raises :class:`InfrastructureError` (not a verdict); every other error fails the gate.
    """
    try:
        return _dispatch(gate, ctx)
    except InfrastructureError:
        raise
    except PromotionError as exc:
        return errored(gate.name or gate.kind, gate.kind, f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # noqa: BLE001 - a gate must fail, never crash the flow
        return errored(gate.name or gate.kind, gate.kind, f"unexpected error: {type(exc).__name__}: {exc}")


def errored(name: str, kind: str, reason: str) -> GateResult:
    return GateResult(
        gate=name, kind=kind, passed=False, measured={}, thresholds={}, reasons=[reason], errored=True
    )


def _reports(kind: str, ctx: GateContext) -> list[bytes]:
    return [ctx.load_evidence(ref) for ref in ctx.artifact.evidence if ref.kind == kind]


def _dispatch(gate: Gate, ctx: GateContext) -> GateResult:
    if gate.kind in EVIDENCE_FOR and gate.max_age is not None:
        age = ctx.now - ctx.artifact.created_at
        if age > gate.max_age:
            return GateResult(
                gate=gate.name or gate.kind,
                kind=gate.kind,
                passed=False,
                measured={"evidence_age": format_duration(age)},
                thresholds={"max_age": format_duration(gate.max_age)},
                reasons=[
                    f"evidence expired: {EVIDENCE_FOR[gate.kind]} published {format_duration(age)} ago "
                    f"(max_age {format_duration(gate.max_age)}); re-run the check and publish again"
                ],
            )
    if isinstance(gate, TestsGate):
        return g.evaluate_tests(gate, _reports("junit", ctx))
    if isinstance(gate, CoverageGate):
        return g.evaluate_coverage(gate, _reports("coverage", ctx))
    if isinstance(gate, ScanGate):
        return g.evaluate_scan(gate, _reports("sarif", ctx))
    if isinstance(gate, PerfGate):
        return g.evaluate_perf(gate, _reports("perf", ctx))
    if isinstance(gate, SoakGate):
        return g.evaluate_soak(
            gate, ctx.previous, ctx.previous_env, ctx.now, digest=str(ctx.digest), until=ctx.previous_until
        )
    if isinstance(gate, WindowGate):
        return g.evaluate_window(gate, ctx.now)
    if isinstance(gate, PolicyGate):
        return g.evaluate_policy(gate, ctx.artifact, ctx.environment)
    return errored(gate.name or gate.kind, gate.kind, f"{gate.kind} is a live check: it runs after deploy")


def pre_deploy_gates(env: Environment) -> list[Gate]:
    from promotion.config import LIVE_GATE_KINDS

    return [gate for gate in env.gates if gate.kind not in LIVE_GATE_KINDS]


def live_gates(env: Environment) -> list[Gate]:
    from promotion.config import LIVE_GATE_KINDS

    return [gate for gate in env.gates if gate.kind in LIVE_GATE_KINDS]
