"""The sweep's report: what it found and decided per service, retention's verdicts, the runs it starts."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from promotion.digest import Digest
from promotion.gates import GateResult

#: Who the sweep acts as in the ledger and in the pipeline runs it starts.
ACTOR = "nightly-sweep"

DecisionAction = Literal["promote", "open_approval", "skip"]
CheckOutcome = Literal["ok", "corrupted", "missing", "expired", "gate_failed", "error"]
DriftAction = Literal["report", "correct", "corrected", "correction_failed"]
BlobAction = Literal["would_delete", "deleted", "delete_failed"]


class SweepModel(BaseModel):
    """Every sweep model: unknown fields are refused, so an index stored by another version is
    rebuilt rather than half-read (:func:`~promotion.sweep.index.load_index`)."""

    model_config = ConfigDict(extra="forbid")


class SweepDecision(SweepModel):
    """What the sweep proposes for one ``auto_promote`` environment, and why."""

    environment: str
    digest: Digest | None = None
    version: str | None = None
    action: DecisionAction
    reason: str
    gates: list[GateResult] = Field(default_factory=list)


class Check(SweepModel):
    """The re-check of one digest: full re-hash of its blob, and the age of its evidence."""

    digest: Digest
    #: Why it was checked: ``runs in dev``, ``latest published``...
    roles: list[str]
    outcome: CheckOutcome
    detail: str
    #: The reason this finding flags the digest with (None: it does not flag it).
    flag_reason: str | None = None
    #: A ``flagged`` ledger event was written by this sweep (False in dry run or if already flagged).
    flagged: bool = False


class DriftFinding(SweepModel):
    """An environment whose copy does not hold what the ledger says it runs."""

    environment: str
    expected: Digest | None
    actual: Digest | None
    version: str | None = None
    location: str
    detail: str
    on_drift: Literal["report", "correct"]
    action: DriftAction


class PublishedRef(SweepModel):
    """When a digest was last published for a service, and its evidence blobs."""

    at: dt.datetime
    #: None: the ledger event did not list them; the artifact record is read once to fill them in.
    evidence: list[Digest] | None = None
    #: Evidence blobs attached since (``attested`` events): referenced as long as the artifact is.
    attested: list[Digest] = Field(default_factory=list)


class ServiceRefs(SweepModel):
    """What retention needs to know about one service's artifacts."""

    seq: int = 0
    #: digest -> why its blob must be kept.
    referenced: dict[str, str] = Field(default_factory=dict)
    published: dict[str, PublishedRef] = Field(default_factory=dict)
    #: False when the history could not be read in full: retention then deletes nothing.
    complete: bool = True
    note: str = ""


class ServiceReport(SweepModel):
    """Everything the sweep found and decided for one service."""

    service: str
    now: dt.datetime
    dry_run: bool
    ledger_seq: int = 0
    index: str = ""
    checks: list[Check] = Field(default_factory=list)
    drift: list[DriftFinding] = Field(default_factory=list)
    decisions: list[SweepDecision] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)
    refs: ServiceRefs = Field(default_factory=ServiceRefs)

    @property
    def newly_flagged(self) -> list[Check]:
        """The findings this sweep recorded as ``flagged`` ledger events."""
        return [c for c in self.checks if c.flagged]


class BlobVerdict(SweepModel):
    """A blob retention would delete (or deleted), and why it may go."""

    key: str
    digest: str
    size: int
    last_modified: dt.datetime
    action: BlobAction
    reason: str


class RetentionReport(SweepModel):
    """Blobs nothing references and older than the retention: listed, deleted only with apply."""

    configured: bool
    retention: dt.timedelta | None = None
    now: dt.datetime
    apply: bool = False
    scanned: int = 0
    kept: int = 0
    kept_by_reason: dict[str, int] = Field(default_factory=dict)
    #: Unreferenced blobs older than the retention (action would_delete, deleted or delete_failed).
    candidates: list[BlobVerdict] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    @property
    def deleted(self) -> list[BlobVerdict]:
        """The blobs actually deleted (only with apply)."""
        return [c for c in self.candidates if c.action == "deleted"]


class SweepPipelineRun(SweepModel):
    """A pipeline run the sweep starts through the deployment (one per promote/open_approval)."""

    service: str
    environment: str
    digest: Digest
    action: DecisionAction
    deployment: str
    parameters: dict[str, Any]
    idempotency_key: str
    #: Filled in by whoever starts it: ``started``, ``already open``, ``failed``,
    #: ``not started (dry run)``.
    outcome: str = ""
    flow_run_id: str | None = None
    detail: str = ""


class SweepReport(SweepModel):
    """The whole night: one report per service, retention, and the runs started."""

    now: dt.datetime
    date: str
    dry_run: bool
    apply_retention: bool
    services: list[ServiceReport]
    retention: RetentionReport
    runs: list[SweepPipelineRun] = Field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        """What the sweep could not do (findings such as drift or corruption are not errors)."""
        out: list[str] = []
        for s in self.services:
            out += [f"{s.service}: {e}" for e in s.errors]
            out += [
                f"{s.service}: re-check of {c.digest}: {c.detail}" for c in s.checks if c.outcome == "error"
            ]
            out += [
                f"{s.service} {d.environment}: {d.detail}" for d in s.drift if d.action == "correction_failed"
            ]
        out += [f"{r.service} → {r.environment}: {r.detail}" for r in self.runs if r.outcome == "failed"]
        out += [
            f"retention: {v.key}: {v.reason}"
            for v in self.retention.candidates
            if v.action == "delete_failed"
        ]
        return out

    def rows(self) -> list[dict[str, str]]:
        """One row per action and finding, for a table artifact (no secrets: none are read)."""
        runs = {(r.service, r.environment): r for r in self.runs}
        rows: list[dict[str, str]] = []

        def row(service: str, kind: str, env: str, digest: str | None, action: str, reason: str) -> None:
            rows.append(
                {
                    "service": service,
                    "kind": kind,
                    "environment": env,
                    "digest": str(digest or ""),
                    "action": action,
                    "reason": reason,
                }
            )

        for s in self.services:
            for e in s.errors:
                row(s.service, "error", "", None, "error", e)
            for c in s.checks:
                if c.outcome != "ok":
                    act = "flagged" if c.flagged else ("flag" if c.flag_reason else "report")
                    row(s.service, f"verify ({c.outcome})", ", ".join(c.roles), c.digest, act, c.detail)
            for f in s.drift:
                row(s.service, "drift", f.environment, f.expected, f.action, f.detail)
            for d in s.decisions:
                reason = d.reason
                r = runs.get((s.service, d.environment))
                if r is not None and d.action != "skip":
                    reason += f" | run {r.outcome}" + (f" {r.flow_run_id}" if r.flow_run_id else "")
                    reason += f": {r.detail}" if r.detail else ""
                row(s.service, "promotion", d.environment, d.digest, d.action, reason)
        ret = self.retention
        for v in ret.candidates:
            row("", "retention", "", v.digest, v.action, v.reason)
        if not ret.configured:
            row("", "retention", "", None, "keep", "sweep.retention is not set: every blob is kept")
        else:
            kept = ", ".join(f"{n} {why}" for why, n in sorted(ret.kept_by_reason.items()))
            row("", "retention", "", None, "keep", f"{ret.kept} of {ret.scanned} blobs kept ({kept})")
        for n in ret.notes:
            row("", "retention", "", None, "note", n)
        return rows
