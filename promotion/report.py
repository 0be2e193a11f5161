"""Markdown for people: stage reports, the approval form's description, the plan. Pure."""

from __future__ import annotations

from collections.abc import Sequence

from promotion.approval import Decision, Tally
from promotion.config import Environment
from promotion.gates import GateResult
from promotion.models import ArtifactRecord, EnvState


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _pairs(values: dict[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items() if v is not None)


def gate_table(results: Sequence[GateResult]) -> str:
    if not results:
        return "_no gates_\n"
    rows = ["| gate | kind | result | measured | threshold | reason |", "|---|---|---|---|---|---|"]
    for r in results:
        verdict = "pass" if r.passed else ("ERROR" if r.errored else "FAIL")
        rows.append(
            "| "
            + " | ".join(
                _cell(x)
                for x in (
                    r.gate,
                    r.kind,
                    verdict,
                    _pairs(dict(r.measured)),
                    _pairs(dict(r.thresholds)),
                    "; ".join(r.reasons),
                )
            )
            + " |"
        )
    return "\n".join(rows) + "\n"


def decisions_table(decisions: Sequence[tuple[Decision, bool, str]]) -> str:
    if not decisions:
        return "_no decisions yet_\n"
    rows = ["| approver | decision | counted | reason |", "|---|---|---|---|"]
    for d, accepted, why in decisions:
        counted = "yes" if accepted else "no: " + _cell(why)
        rows.append(f"| {_cell(d.approver)} | {d.decision} | {counted} | {_cell(d.reason)} |")
    return "\n".join(rows) + "\n"


def change_line(env: str, current: EnvState | None, artifact: ArtifactRecord) -> str:
    new = f"`{artifact.digest}` (version {artifact.version or 'n/a'})"
    if current is None:
        return f"**{env}** runs nothing yet; it will run {new}."
    return (
        f"**{env}** runs `{current.digest}` (version {current.version or 'n/a'}, since "
        f"{current.since:%Y-%m-%d %H:%M}Z, by {current.by}); it will run {new}."
    )


def approval_description(
    artifact: ArtifactRecord,
    env: Environment,
    current: EnvState | None,
    gates: Sequence[GateResult],
    tally: Tally,
    decisions: Sequence[tuple[Decision, bool, str]],
) -> str:
    """The markdown shown above the resume form in the Prefect UI."""
    p = artifact.provenance
    policy = env.approval
    assert policy is not None
    lines = [
        f"## Approve promotion of **{artifact.service}** to **{env.name}**?",
        "",
        f"- **Digest**: `{artifact.digest}`",
        f"- **Version**: {artifact.version or 'n/a'}",
        f"- **Commit**: {p.commit or 'n/a'}" + (f" by {p.commit_author}" if p.commit_author else ""),
        f"- **Build**: {p.build_url or 'n/a'}",
        f"- **Published by**: {p.published_by} at {artifact.created_at:%Y-%m-%d %H:%M}Z",
        "",
        "### What will change",
        change_line(env.name, current, artifact),
        "",
        "### Gates",
        gate_table(gates),
        "### Approvals",
        f"Needs {policy.min_approvals} of: {', '.join(policy.approvers)}"
        + ("" if policy.allow_self_approval else " (no self-approval)")
        + f"; {len(tally.approved_by)} so far"
        + (f" ({', '.join(tally.approved_by)})" if tally.approved_by else "")
        + ".",
        "",
        decisions_table(decisions),
        "Choose **approve** or **reject**, type your name as listed above, and say why.",
    ]
    return "\n".join(lines)


def stage_report(
    artifact: ArtifactRecord,
    env: str,
    outcome: str,
    gates: Sequence[GateResult],
    decisions: Sequence[tuple[Decision, bool, str]],
    verification: Sequence[GateResult] = (),
    notes: Sequence[str] = (),
) -> str:
    lines = [
        f"# {artifact.service} → {env}: {outcome}",
        "",
        f"Digest `{artifact.digest}`, version {artifact.version or 'n/a'}.",
        "",
        "## Gates",
        gate_table(gates),
    ]
    if decisions:
        lines += ["## Approvals", decisions_table(decisions)]
        # Spelled out for an auditor: an answer that did not count is no approval, and why.
        refused = [(d, why) for d, accepted, why in decisions if not accepted]
        if refused:
            lines += ["### Refused answers (not counted)"]
            lines += [f"- REFUSED {d.decision} by {d.approver}: {why}" for d, why in refused]
            lines.append("")
    if verification:
        lines += ["## Post-deploy verification", gate_table(verification)]
    if notes:
        lines += ["## Notes", *[f"- {n}" for n in notes]]
    return "\n".join(lines)
