"""The deliveries' bodies: the strict *build published* event, GitHub's ``workflow_run`` and
GitLab's Pipeline Hook, read into one :class:`Intent`; and the answers' models.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from promotion.config import Name
from promotion.digest import Digest
from promotion.errors import (
    PayloadInvalid,
    PromotionError,
    PromotionTargetMissing,
)

if TYPE_CHECKING:
    pass


_NAME = r"[a-z0-9][a-z0-9_-]{0,62}"
_NAME_RE = re.compile(_NAME)
#: The documented ``run-name`` of a GitHub workflow run that promotes.
GITHUB_TITLE_RE = re.compile(
    rf"promote (?P<service>{_NAME}) (?P<digest>sha256:[0-9a-f]{{64}})(?: to (?P<to>{_NAME}))?"
)
GITLAB_SERVICE_VAR = "PROMOTION_SERVICE"
GITLAB_DIGEST_VAR = "PROMOTION_DIGEST"
GITLAB_TO_VAR = "PROMOTION_TO"


class BuildPublished(BaseModel):
    """The strict event a CI job sends after ``promote publish``: promote this digest."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="BuildPublished")

    service: Name = Field(description="a service declared in the pipeline file")
    digest: Digest = Field(
        description="sha256:<64 lowercase hex> of a published artifact",
        json_schema_extra={"pattern": "^sha256:[0-9a-f]{64}$"},
    )
    version: str | None = Field(
        default=None, max_length=128, description="must equal the published record's version if given"
    )
    commit: str | None = Field(
        default=None, max_length=128, description="must equal the published record's commit if given"
    )
    build_url: str | None = Field(
        default=None, max_length=2048, description="must equal the published record's build URL if given"
    )
    requested_by: str | None = Field(
        default=None, min_length=1, max_length=128, description="who asks for the promotion"
    )
    to: Name | None = Field(
        default=None, description="stop after this environment (a declared one); default: the last"
    )
    unplanned: StrictBool = Field(
        default=False,
        description="a hotfix: recorded on the promoted records, counted by DORA's rework rate",
    )


class _Loose(BaseModel):
    # GitHub and GitLab add fields to their payloads without notice: take the fields we use and
    # ignore the rest, unlike our own event, which forbids unknown keys.
    model_config = ConfigDict(extra="ignore", frozen=True)


class _GitHubAccount(_Loose):
    login: str


class _GitHubRepository(_Loose):
    full_name: str


class _GitHubRun(_Loose):
    id: int
    status: str
    conclusion: str | None = None
    display_title: str = ""
    head_repository: _GitHubRepository | None = None
    repository: _GitHubRepository | None = None
    actor: _GitHubAccount | None = None
    triggering_actor: _GitHubAccount | None = None


class GitHubWorkflowRun(_Loose):
    """The parts of GitHub's ``workflow_run`` event the receiver reads."""

    action: str
    workflow_run: _GitHubRun


class _GitLabVariable(_Loose):
    key: str
    value: str | None = None


class _GitLabAttributes(_Loose):
    id: int
    status: str
    variables: list[_GitLabVariable] | None = None


class _GitLabUser(_Loose):
    username: str


class GitLabPipeline(_Loose):
    """The parts of GitLab's Pipeline Hook the receiver reads."""

    object_kind: Literal["pipeline"]
    object_attributes: _GitLabAttributes
    user: _GitLabUser | None = None


class Accepted(BaseModel):
    """202: the flow run that promotes the digest (the same run for a repeated delivery)."""

    flow_run_id: str
    flow_run_url: str


class Ignored(BaseModel):
    """200: an authentic delivery that promotes nothing, and why."""

    ignored: str


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer: the error class and how to fix the request."""

    error: str
    detail: str


@dataclass(frozen=True)
class Intent:
    """What an authentic delivery asks for, before it is checked against the pipeline and store."""

    service: str
    digest: str
    to: str | None = None
    requested_by: str | None = None
    version: str | None = None
    commit: str | None = None
    build_url: str | None = None
    unplanned: bool = False


def _describe(exc: ValidationError, allowed: tuple[str, ...] = ()) -> str:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(body)"
        if err["type"] == "extra_forbidden":
            msg = "unknown field" + (f"; allowed fields: {', '.join(allowed)}" if allowed else "")
        elif err["type"] == "missing":
            msg = "required"
        else:
            msg = err["msg"]
            inp = err.get("input")
            if isinstance(inp, str | int | float | bool) and "got" not in msg:
                shown = repr(inp) if len(repr(inp)) <= 80 else repr(inp)[:77] + "..."
                msg += f" (got {shown})"
        problems.append(f"{loc}: {msg}")
    return "; ".join(problems)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            # json.loads would keep the last one silently; the signed bytes must mean one thing.
            raise PayloadInvalid(f"duplicate key {key!r} in a JSON object; send each field once")
        out[key] = value
    return out


def parse_json(body: bytes) -> Any:
    """The body as JSON; :class:`PayloadInvalid` says where it is broken."""
    try:
        return json.loads(body, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise PayloadInvalid(
            f"the body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}; "
            "send a JSON object with Content-Type: application/json"
        ) from None
    except UnicodeDecodeError:
        raise PayloadInvalid("the body is not UTF-8 text; send UTF-8 encoded JSON") from None
    except (ValueError, RecursionError) as exc:
        # ValueError: e.g. an integer with more digits than Python converts; RecursionError: nesting
        raise PayloadInvalid(
            f"the body is not usable JSON ({type(exc).__name__}); send a flat object"
        ) from None


_STRICT_FIELDS = tuple(BuildPublished.model_fields)


def parse_build_published(data: Any) -> Intent:
    """The strict event, or :class:`PayloadInvalid` naming the field."""
    if not isinstance(data, dict):
        raise PayloadInvalid(
            f"(body): expected a JSON object with {', '.join(_STRICT_FIELDS)}, got {type(data).__name__}"
        )
    try:
        ev = BuildPublished.model_validate(data)
    except ValidationError as exc:
        raise PayloadInvalid(_describe(exc, _STRICT_FIELDS)) from None
    return Intent(
        service=ev.service,
        digest=str(ev.digest),
        to=ev.to,
        requested_by=ev.requested_by,
        version=ev.version,
        commit=ev.commit,
        build_url=ev.build_url,
        unplanned=ev.unplanned,
    )


def parse_github_workflow_run(data: Any) -> Intent | Ignored:
    """GitHub's ``workflow_run``: the digest is in ``workflow_run.display_title`` (``run-name:``)."""
    if not isinstance(data, dict):
        raise PayloadInvalid("(body): a workflow_run event is a JSON object")
    try:
        ev = GitHubWorkflowRun.model_validate(data)
    except ValidationError as exc:
        raise PayloadInvalid(f"not a GitHub workflow_run event: {_describe(exc)}") from None
    run = ev.workflow_run
    if ev.action != "completed" or run.status != "completed":
        return Ignored(ignored=f"workflow run {run.id} is {run.status}: only completed runs promote")
    if run.conclusion != "success":
        return Ignored(
            ignored=f"workflow run {run.id} concluded {run.conclusion}: only successful runs promote"
        )
    if run.head_repository and run.repository and run.head_repository.full_name != run.repository.full_name:
        # A pull request from a fork runs the fork's workflow file, so its author writes run-name.
        return Ignored(
            ignored=f"workflow run {run.id} ran on {run.head_repository.full_name}, a fork of "
            f"{run.repository.full_name}: runs of forks never promote"
        )
    title = run.display_title.strip()
    m = GITHUB_TITLE_RE.fullmatch(title)
    if m is None:
        shown = repr(title) if len(title) <= 100 else repr(title[:97] + "...")
        raise PromotionTargetMissing(
            f"workflow_run.display_title is {shown}; to promote, set the workflow's run-name to "
            "'promote <service> sha256:<64 hex>' (optionally followed by ' to <environment>'), e.g. "
            "run-name: promote ${{ inputs.service }} ${{ inputs.digest }}"
        )
    actor = run.triggering_actor or run.actor
    return Intent(
        service=m["service"],
        digest=m["digest"],
        to=m["to"],
        requested_by=actor.login if actor else None,
    )


def parse_gitlab_pipeline(data: dict[str, Any]) -> Intent | Ignored:
    """GitLab's Pipeline Hook: the digest is in the pipeline variables ``PROMOTION_*``."""
    try:
        ev = GitLabPipeline.model_validate(data)
    except ValidationError as exc:
        raise PayloadInvalid(f"not a GitLab Pipeline Hook: {_describe(exc)}") from None
    attrs = ev.object_attributes
    if attrs.status != "success":
        return Ignored(ignored=f"pipeline {attrs.id} is {attrs.status}: only successful pipelines promote")
    found: dict[str, str] = {}
    for var in attrs.variables or []:
        if var.key in (GITLAB_SERVICE_VAR, GITLAB_DIGEST_VAR, GITLAB_TO_VAR):
            if var.key in found:
                raise PayloadInvalid(f"object_attributes.variables: {var.key} is given twice; give it once")
            found[var.key] = (var.value or "").strip()
    missing = [k for k in (GITLAB_SERVICE_VAR, GITLAB_DIGEST_VAR) if not found.get(k)]
    if missing:
        raise PromotionTargetMissing(
            f"pipeline {attrs.id} has no {' and no '.join(missing)} in object_attributes.variables; "
            f"to promote, create the pipeline with the variables {GITLAB_SERVICE_VAR}=<service> and "
            f"{GITLAB_DIGEST_VAR}=sha256:<64 hex> (and optionally {GITLAB_TO_VAR}=<environment>), e.g. "
            f"through a pipeline trigger: --form variables[{GITLAB_DIGEST_VAR}]=sha256:..."
        )
    try:
        digest = Digest(found[GITLAB_DIGEST_VAR])
    except PromotionError as exc:
        raise PayloadInvalid(f"object_attributes.variables.{GITLAB_DIGEST_VAR}: {exc}") from None
    for key in (GITLAB_SERVICE_VAR, GITLAB_TO_VAR):
        value = found.get(key)
        if value and not _NAME_RE.fullmatch(value):
            shown = repr(value) if len(value) <= 70 else repr(value[:67] + "...")
            raise PayloadInvalid(
                f"object_attributes.variables.{key}: {shown} is not a service or environment name "
                "(lowercase letters, digits, '-' and '_')"
            )
    return Intent(
        service=found[GITLAB_SERVICE_VAR],
        digest=str(digest),
        to=found.get(GITLAB_TO_VAR) or None,
        requested_by=ev.user.username if ev.user else None,
    )


def interpret(source: str, headers: Mapping[str, str], body: bytes) -> Intent | Ignored:
    """What an authentic delivery asks for: a promotion, or a reason to ignore it."""
    if source == "github":
        event = headers.get("x-github-event")
        if event == "ping":
            return Ignored(ignored="ping: GitHub checks the webhook; nothing to promote")
        if event == "workflow_run":
            return parse_github_workflow_run(parse_json(body))
        if event is not None:
            return Ignored(
                ignored=f"GitHub event {event[:40]!r} is not used: subscribe the webhook to "
                "'Workflow runs' only, or send the build-published event without X-GitHub-Event"
            )
        return parse_build_published(parse_json(body))
    data = parse_json(body)
    if source == "gitlab" and isinstance(data, dict) and "object_kind" in data:
        kind = data["object_kind"]
        if kind == "pipeline":
            return parse_gitlab_pipeline(data)
        shown = repr(kind)[:40]
        return Ignored(
            ignored=f"GitLab {shown} events are not used: enable only 'Pipeline events' on the webhook"
        )
    return parse_build_published(data)
