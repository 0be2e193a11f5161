"""What a gate kind is, declared once per kind: the registry every evaluation path reads.

A kind declares its config model (whose ``kind`` literal names it), the evidence kind it reads
(or None), whether it is time-based (a failure that waiting can end, with the moment it ends)
or live (checked against the running environment after deploy), and its evaluator. From these
come what used to be spelt out in several places: the kinds a pipeline file may use, the gates
that run before and after deploy, which evidence expires, and which failures only mean "wait".

Adding a gate kind is a config model (a :class:`~promotion.config.GateBase` subclass with a
``kind: Literal[...]``), an evaluator, and one :func:`register` call; the built-in kinds are
registered at the bottom of this module the same way.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from promotion import gates as g
from promotion import windows
from promotion.config import (
    CoverageGate,
    GateBase,
    HttpCheckGate,
    PerfGate,
    PolicyGate,
    PrometheusGate,
    ScanGate,
    SoakGate,
    TestsGate,
    WindowGate,
    gate_kind_name,
    use_gate_models,
)
from promotion.gates import GateResult

if TYPE_CHECKING:
    from promotion.evaluate import GateContext

#: A pre-deploy evaluator: the gate's config and everything it may look at, to a verdict.
Evaluator = Callable[[Any, "GateContext"], GateResult]
#: A live check: the gate's config to a verdict about the running environment.
LiveCheck = Callable[[Any], GateResult]
#: For time-based kinds: the first moment at or after the given one at which the gate passes
#: (None when waiting does not make it pass, e.g. the digest is not soaking anywhere).
ReadyAt = Callable[[Any, "GateContext", dt.datetime], dt.datetime | None]


@dataclass(frozen=True)
class GateKind:
    """One gate kind. Exactly one of ``evaluate`` (pre-deploy) and ``live_check`` is set."""

    config: type[GateBase]
    evaluate: Evaluator | None = None
    live_check: LiveCheck | None = None
    #: The evidence kind attached at publish that the gate reads; its ``max_age`` applies to it.
    evidence: str | None = None
    #: Set for time-based kinds: a failure of theirs means "not yet", not "no".
    ready_at: ReadyAt | None = None
    #: A time-based gate measured over the digest's stay in the previous environment (soak): once
    #: the digest has left there, waiting can no longer make it pass.
    ends_with_previous_stay: bool = False

    def __post_init__(self) -> None:
        if (self.evaluate is None) == (self.live_check is None):
            raise ValueError(f"gate kind {self.name!r}: give exactly one of evaluate and live_check")
        if self.live_check is not None and (self.evidence or self.ready_at):
            raise ValueError(f"gate kind {self.name!r}: a live check reads no evidence and is not timed")
        if self.ends_with_previous_stay and self.ready_at is None:
            raise ValueError(f"gate kind {self.name!r}: ends_with_previous_stay needs ready_at")

    @property
    def name(self) -> str:
        return gate_kind_name(self.config)

    @property
    def live(self) -> bool:
        return self.live_check is not None

    @property
    def time_based(self) -> bool:
        return self.ready_at is not None


_kinds: dict[str, GateKind] = {}
_builtin: frozenset[str] = frozenset()


def register(kind: GateKind) -> GateKind:
    """Make ``kind`` known everywhere: pipeline files may use it, every evaluation path runs it."""
    if kind.name in _kinds:
        raise ValueError(f"gate kind {kind.name!r} is already registered")
    _kinds[kind.name] = kind
    use_gate_models(tuple(k.config for k in _kinds.values()))
    return kind


def unregister(name: str) -> None:
    """Forget a kind registered with :func:`register` (tests); the built-in kinds stay."""
    if name in _builtin:
        raise ValueError(f"gate kind {name!r} is built in")
    del _kinds[name]
    use_gate_models(tuple(k.config for k in _kinds.values()))


def gate_kind(name: str) -> GateKind:
    try:
        return _kinds[name]
    except KeyError:
        raise LookupError(f"gate kind {name!r} is not registered; known: {', '.join(_kinds)}") from None


def registered() -> tuple[GateKind, ...]:
    return tuple(_kinds.values())


# --- the built-in kinds -----------------------------------------------------------------------


def _soak(gate: SoakGate, ctx: GateContext) -> GateResult:
    return g.evaluate_soak(
        gate, ctx.previous, ctx.previous_env, ctx.now, digest=str(ctx.digest), until=ctx.previous_until
    )


def _soak_ready(gate: SoakGate, ctx: GateContext, start: dt.datetime) -> dt.datetime | None:
    return g.soak_met_at(gate, ctx.previous, str(ctx.digest))


def _http(gate: HttpCheckGate) -> GateResult:
    # Imported here: httpx is only needed after deploy, not by the S3-only commands' start-up.
    from promotion.live_checks import check_http

    return check_http(gate)


def _prometheus(gate: PrometheusGate) -> GateResult:
    from promotion.live_checks import check_prometheus

    return check_prometheus(gate)


for _kind in (
    GateKind(
        TestsGate,
        evidence="junit",
        # ``now`` decides which quarantine entries are still in force.
        evaluate=lambda gate, ctx: g.evaluate_tests(gate, ctx.reports("junit"), ctx.now),
    ),
    GateKind(
        CoverageGate,
        evidence="coverage",
        evaluate=lambda gate, ctx: g.evaluate_coverage(gate, ctx.reports("coverage")),
    ),
    GateKind(
        ScanGate, evidence="sarif", evaluate=lambda gate, ctx: g.evaluate_scan(gate, ctx.reports("sarif"))
    ),
    GateKind(
        PerfGate, evidence="perf", evaluate=lambda gate, ctx: g.evaluate_perf(gate, ctx.reports("perf"))
    ),
    GateKind(SoakGate, evaluate=_soak, ready_at=_soak_ready, ends_with_previous_stay=True),
    GateKind(
        WindowGate,
        evaluate=lambda gate, ctx: g.evaluate_window(gate, ctx.now),
        ready_at=lambda gate, ctx, start: windows.next_opening(gate, start),
    ),
    GateKind(PolicyGate, evaluate=lambda gate, ctx: g.evaluate_policy(gate, ctx.artifact, ctx.environment)),
    GateKind(HttpCheckGate, live_check=_http),
    GateKind(PrometheusGate, live_check=_prometheus),
):
    register(_kind)
_builtin = frozenset(_kinds)
