"""Markdown for people: stage reports, the approval form's description, the plan. Pure."""

from __future__ import annotations

import re
from collections.abc import Sequence

from promotion.approval import Decision, Tally
from promotion.config import Environment
from promotion.gates import GateResult
from promotion.models import ArtifactRecord, EnvState


def markdown_cell(value: object) -> str:
    """``value`` as the text of one Markdown table cell: pipes escaped, on one line."""
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
                markdown_cell(x)
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
        counted = "yes" if accepted else "no: " + markdown_cell(why)
        rows.append(f"| {markdown_cell(d.approver)} | {d.decision} | {counted} | {markdown_cell(d.reason)} |")
    return "\n".join(rows) + "\n"


# How long one gate's line may get above the resume form (the v2 UI's dialog wraps at about 55
# characters): the first clause of its first reason. The full reasons are in the stage report.
_GATE_LINE_CHARS = 64


def _stage_report_key(service: str, env: str) -> str:
    """The key of the stage's report artifact: the same rule as ``flows._report.artifact_key``.

    Repeated here because the core may not import ``tasks`` (which imports Prefect); a test checks
    that both give the same key.
    """
    return re.sub(r"[^a-z0-9-]+", "-", f"promotion-{service}-{env}".lower()).strip("-")[:100]


def _gate_line(r: GateResult) -> str:
    verdict = "pass" if r.passed else ("ERROR" if r.errored else "FAIL")
    said = r.reasons[0].split("; ")[0] if r.reasons else "no details"
    if len(said) > _GATE_LINE_CHARS:
        said = said[: _GATE_LINE_CHARS - 1] + "…"
    more = len(r.reasons) - 1
    return f"- **{verdict}** {r.gate}: {said}" + (f" (+{more} more)" if more > 0 else "")


def approval_description(
    artifact: ArtifactRecord,
    env: Environment,
    current: EnvState | None,
    gates: Sequence[GateResult],
    tally: Tally,
    decisions: Sequence[tuple[Decision, bool, str]],
) -> str:
    """The markdown shown above the resume form in the Prefect UI: a few short lines, no table.

    Both UIs put this above the form's fields in a dialog of bounded height, so every line here
    pushes the Decision control down (a wide gate table pushed it below the fold; so did one long
    line per gate in the v2 UI's narrow dialog, seen in a 1280x800 window; the classic UI scrolls
    the description in a box of about 260 px instead): what changes, with a link to the stage
    report (which the pipeline writes when the stage ends), one short line per gate, who may
    decide. The link is relative
    (``../../artifacts/key/...`` from the run page ``.../runs/flow-run/<id>``) so it opens the
    artifact page in whichever UI shows it (classic at ``/``, v2 at ``/v2/``), wherever it is served.
    Why each refused answer was refused is in the run's logs, the ledger and the stage report.
    """
    p = artifact.provenance
    policy = env.approval
    assert policy is not None
    new = f"**{artifact.service} {artifact.version or 'n/a'}** (`{artifact.digest.short}`)"
    if current is None:
        now = "nothing yet"
    else:
        now = f"{current.version or 'n/a'} (`{current.digest.short}`, since {current.since:%Y-%m-%d})"
    commit = f"commit {p.commit or 'n/a'}"
    excluded: list[str] = []
    if not policy.allow_self_approval:
        excluded += [f"{who} (author)" for who in [p.commit_author] if who]
        excluded += [f"{who} (requester)" for who in [tally.requested_by] if who and who != p.commit_author]
    refused = list(dict.fromkeys(d.approver for d, accepted, _ in decisions if not accepted))
    so_far = [f"approved: {', '.join(tally.approved_by)}"] if tally.approved_by else []
    so_far += [f"refused: {', '.join(refused)}"] if refused else []
    report = f"../../artifacts/key/{_stage_report_key(artifact.service, env.name)}"
    lines = [
        f"**{env.name}**: {now} → {new}, {commit} · [stage report]({report})",
        *([_gate_line(r) for r in gates] or ["- **Gates**: none at this stage"]),
        f"- **May approve**: {policy.min_approvals} of {', '.join(policy.approvers)}"
        + (f", not {' nor '.join(excluded)}" if excluded else "")
        + (f". So far {'; '.join(so_far)}" if so_far else "")
        + ".",
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
