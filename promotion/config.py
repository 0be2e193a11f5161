"""The pipeline file: the artifact store, the services and the ordered environments, as code.

The file is YAML validated by pydantic. Everything is strict: an unknown key, a duplicate name, a
threshold out of range or an unknown gate kind is refused with the file, the field path and what
is allowed.

>>> cfg = parse_pipeline('''
... store: {bucket: artifacts}
... services: [{name: api}]
... environments:
...   - name: dev
...   - name: prod
...     approval: {approvers: [alice, bob], min_approvals: 1}
... ''')
>>> [e.name for e in cfg.environments]
['dev', 'prod']
"""

import datetime as dt
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self, Union, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    HttpUrl,
    ValidationError,
    field_validator,
    model_validator,
)

from promotion.errors import ConfigError, UnknownEnvironment, UnknownService
from promotion.settings import settings

DEFAULT_CONFIG = "promotion.yaml"

#: Names of services and environments end up in S3 keys, Prefect names and URLs.
Name = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
        description="lowercase letters, digits, '-' and '_', starting with a letter or digit",
    ),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- durations and time windows -----------------------------------------------------------------

_DURATION_RE = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_duration(value: object) -> dt.timedelta:
    """``"1d12h"``, ``"90m"``, ``"30s"`` or a number of seconds."""
    if isinstance(value, dt.timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '24h', '90m' or '1d12h'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return dt.timedelta(seconds=value)
    if isinstance(value, str):
        m = _DURATION_RE.fullmatch(value.strip())
        if m and any(m.groups()):
            d, h, mi, s = (int(g or 0) for g in m.groups())
            return dt.timedelta(days=d, hours=h, minutes=mi, seconds=s)
    raise ValueError(f"{value!r} is not a duration; use e.g. '24h', '90m', '1d12h' or seconds")


Duration = Annotated[dt.timedelta, BeforeValidator(parse_duration)]


def format_duration(delta: dt.timedelta) -> str:
    """``1d 2h 3m 4s`` style, as people write durations in the pipeline file."""
    seconds = max(0, math.ceil(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")) if n]
    return " ".join(parts) or "0s"


def _check_tz(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r}; use an IANA name such as 'Europe/Berlin'") from exc
    return value


TimeZoneName = Annotated[str, AfterValidator(_check_tz)]

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_CLOCK_RE = r"^([01]\d|2[0-3]):[0-5]\d$"


class Window(Strict):
    """A weekly window: from ``start`` on ``start_day`` to ``end`` on ``end_day``, in ``timezone``."""

    start_day: Weekday = Field(description="day the window opens")
    start: str = Field(pattern=_CLOCK_RE, description="HH:MM the window opens")
    end_day: Weekday = Field(description="day the window closes")
    end: str = Field(pattern=_CLOCK_RE, description="HH:MM the window closes")
    timezone: TimeZoneName = Field(default="UTC", description="IANA time zone of start and end")


# --- gates ------------------------------------------------------------------------------------


class GateBase(Strict):
    name: str | None = Field(default=None, description="label in reports; defaults to the kind")
    required: bool = Field(
        default=True, description="whether missing evidence fails the gate (true) or skips it"
    )
    max_age: Duration | None = Field(
        default=None,
        description="evidence gates: evidence published longer ago than this has expired and fails "
        "the gate; the nightly sweep re-checks deployed digests against it",
    )
    wait_for: Duration | None = Field(
        default=None,
        description="evidence gates: how long after publish a missing report makes the stage wait "
        "(not fail); after that, a report still missing fails the gate",
    )

    @model_validator(mode="after")
    def _wait_for_needs_evidence(self) -> Self:
        # Which kinds read evidence is the gate registry's knowledge (it imports this module), so
        # it is asked here, at validation time, when every kind is registered.
        if self.wait_for is None:
            return self
        from promotion.gate_registry import gate_kind, registered

        kind = str(getattr(self, "kind", ""))
        if gate_kind(kind).evidence is None:
            readers = ", ".join(k.name for k in registered() if k.evidence is not None)
            raise ValueError(
                f"wait_for applies only to gates that read evidence ({readers}); a {kind} gate reads none"
            )
        if not self.required:
            raise ValueError(
                "wait_for needs required: true (a gate that is not required passes without evidence)"
            )
        if self.wait_for <= dt.timedelta(0):
            raise ValueError("wait_for must be longer than 0s")
        return self


Rate = Annotated[float, Field(ge=0.0, le=1.0)]


class QuarantineEntry(Strict):
    """A test whose failures the tests gate reports but does not count, up to and including ``until``."""

    test: str = Field(
        min_length=1,
        max_length=500,
        description="'classname::name' as the report names it (just 'name' without a classname); "
        "'*' matches any characters, '?' one",
    )
    until: dt.date = Field(description="last day (UTC) the quarantine applies; it expires the day after")
    reason: str = Field(min_length=1, description="why the test is quarantined (an issue link)")


class TestsGate(GateBase):
    """JUnit XML test reports (pytest, Surefire, jest-junit, gotestsum, nextest...)."""

    __test__: ClassVar[bool] = False  # not a pytest test class, despite the name

    kind: Literal["tests"]
    min_pass_rate: Rate = Field(default=1.0, description="passed / (tests - skipped), 0..1")
    max_failures: int = Field(default=0, ge=0)
    max_errors: int = Field(default=0, ge=0)
    required_suites: list[str] = Field(default_factory=list)
    max_flaky: int | None = Field(
        default=None, ge=0, description="most tests that may pass only on a rerun (None: not limited)"
    )
    quarantine: list[QuarantineEntry] = Field(
        default_factory=list, description="tests whose failures are reported, not counted, until a date"
    )

    @field_validator("quarantine")
    @classmethod
    def _distinct_quarantine(cls, entries: list[QuarantineEntry]) -> list[QuarantineEntry]:
        seen = [e.test for e in entries]
        twice = sorted({t for t in seen if seen.count(t) > 1})
        if twice:
            raise ValueError(f"quarantine lists {', '.join(map(repr, twice))} more than once")
        return entries


class CoverageGate(GateBase):
    """Cobertura XML, coverage.py JSON or lcov."""

    kind: Literal["coverage"]
    min_line_rate: Rate | None = None
    min_branch_rate: Rate | None = None

    @model_validator(mode="after")
    def _needs_threshold(self) -> Self:
        if self.min_line_rate is None and self.min_branch_rate is None:
            raise ValueError("set min_line_rate and/or min_branch_rate")
        return self


SarifLevel = Literal["error", "warning", "note", "none"]


def _no_errors() -> dict[SarifLevel, int]:
    return {"error": 0}


class ScanGate(GateBase):
    """SARIF 2.1.0 from static analysis and security scanners."""

    kind: Literal["scan"]
    tools: list[str] = Field(
        default_factory=list, description="only count results of these tools (all when empty)"
    )
    max_findings: dict[SarifLevel, Annotated[int, Field(ge=0)]] = Field(
        default_factory=_no_errors,
        description="maximum findings per level; levels not listed are not limited",
    )
    max_security_severity: Annotated[float, Field(ge=0.0, le=10.0)] | None = None
    allow_rules: list[str] = Field(default_factory=list, description="rule ids never counted")
    allow_tool_errors: bool = Field(
        default=False,
        description="pass despite executionSuccessful: false or an error-level tool notification "
        "(reported, not failed)",
    )


class PerfGate(GateBase):
    """k6 summary JSON or Locust CSV stats."""

    kind: Literal["perf"]
    p95_ms: Annotated[float, Field(gt=0)] | None = None
    p99_ms: Annotated[float, Field(gt=0)] | None = None
    max_error_rate: Rate | None = None
    min_requests: int = Field(default=1, ge=0)


class SoakGate(GateBase):
    """Minimum time the digest has been in the previous environment."""

    kind: Literal["soak"]
    min_duration: Duration


class WindowGate(GateBase):
    """Promotion windows and freezes."""

    kind: Literal["window"]
    allow: list[Window] = Field(default_factory=list, description="promote only inside these")
    deny: list[Window] = Field(default_factory=list, description="never promote inside these")

    @model_validator(mode="after")
    def _needs_window(self) -> Self:
        if not self.allow and not self.deny:
            raise ValueError("set at least one 'allow' or 'deny' window")
        return self


ProvenanceField = Literal["commit", "build_url", "builder", "commit_author"]


def _commit_and_build() -> list[ProvenanceField]:
    return ["commit", "build_url"]


class PolicyGate(GateBase):
    """Provenance and environment blueprint policy."""

    kind: Literal["policy"]
    require_provenance: list[ProvenanceField] = Field(default_factory=_commit_and_build)


class HttpCheckGate(GateBase):
    """HTTP smoke/health check against the environment, after deploy."""

    kind: Literal["http"]
    url: HttpUrl
    expect_status: int = Field(default=200, ge=100, le=599)
    timeout: Duration = Field(default=dt.timedelta(seconds=10))
    contains: str | None = None


class PrometheusGate(GateBase):
    """A Prometheus instant query compared with a threshold, after deploy."""

    kind: Literal["prometheus"]
    url: HttpUrl
    query: str = Field(min_length=1)
    op: Literal["<", "<=", ">", ">=", "=="] = "<="
    threshold: float
    timeout: Duration = Field(default=dt.timedelta(seconds=10))


Gate = Annotated[
    TestsGate
    | CoverageGate
    | ScanGate
    | PerfGate
    | SoakGate
    | WindowGate
    | PolicyGate
    | HttpCheckGate
    | PrometheusGate,
    Field(discriminator="kind"),
]
#: The gate models a pipeline file may use, in the order of the error messages' "allowed:" list.
#: The gate registry (promotion.gate_registry) owns what a kind is; it hands the models of every
#: registered kind to :func:`use_gate_models`, which is how a kind added there becomes valid here.
_gate_models: tuple[type[GateBase], ...] = (
    TestsGate,
    CoverageGate,
    ScanGate,
    PerfGate,
    SoakGate,
    WindowGate,
    PolicyGate,
    HttpCheckGate,
    PrometheusGate,
)


def gate_kind_name(model: type[GateBase]) -> str:
    """The ``kind:`` value a gate model is selected by (its ``kind`` field's one literal)."""
    values = get_args(model.model_fields["kind"].annotation)
    if len(values) != 1 or not isinstance(values[0], str):
        raise TypeError(f"{model.__name__}.kind must be a Literal of exactly one string")
    return values[0]


def gate_kind_names() -> tuple[str, ...]:
    return tuple(gate_kind_name(m) for m in _gate_models)


def use_gate_models(models: tuple[type[GateBase], ...]) -> None:
    """Validate ``gates:`` against exactly these models (called by the gate registry).

    The static :data:`Gate` union stays the type the code is checked with; the models that
    contain gates are rebuilt so that parsing accepts the registered kinds.
    """
    global _gate_models
    if models == _gate_models:
        return
    _gate_models = models
    union: Any = Annotated[Union[models], Field(discriminator="kind")]  # noqa: UP007 - built at run time
    Environment.model_fields["gates"].annotation = list[union]
    Environment.model_rebuild(force=True)
    Pipeline.model_rebuild(force=True)


# --- approval and deployment ----------------------------------------------------------------------


class ApprovalPolicy(Strict):
    approvers: list[str] = Field(min_length=1, description="people allowed to decide")
    min_approvals: int = Field(default=1, ge=1, description="N of the approvers must approve")
    allow_self_approval: bool = Field(
        default=False, description="let the commit author or the requester approve"
    )
    timeout: Duration = Field(default=dt.timedelta(hours=24))
    on_outdated: Literal["refuse", "allow"] = Field(
        default="refuse",
        description=(
            "when the environment runs a newer build than the one waiting (another promotion got "
            "there first): refuse closes the request as superseded instead of deploying; allow deploys"
        ),
    )

    @model_validator(mode="after")
    def _n_of_m(self) -> Self:
        if len(set(self.approvers)) != len(self.approvers):
            raise ValueError("approvers must not repeat a name")
        if self.min_approvals > len(self.approvers):
            raise ValueError(
                f"min_approvals is {self.min_approvals} but only {len(self.approvers)} approvers are listed"
            )
        return self


class CopyTarget(Strict):
    """Server-side copy of the blob into the environment's own bucket/prefix."""

    bucket: str = Field(min_length=3, max_length=63)
    prefix: str = ""
    key_template: str = Field(
        default="{service}/current",
        description="object key under prefix; {service}, {version}, {digest_hex} are filled in",
    )


class WebhookTarget(Strict):
    """A deploy webhook: POST of digest, version and a presigned URL, HMAC-signed."""

    url: HttpUrl
    secret_block: str | None = Field(default=None, description="Prefect Secret block with the HMAC key")
    timeout: Duration = Field(default=dt.timedelta(seconds=30))


class DeploymentTarget(Strict):
    url: HttpUrl | None = Field(default=None, description="where the environment is reachable")
    copy_to: CopyTarget | None = None
    webhook: WebhookTarget | None = None
    settings: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="declared settings, checked against the blueprint"
    )


class Blueprint(Strict):
    """Settings an environment must have, and which ones it may override."""

    settings: dict[str, str | int | float | bool] = Field(default_factory=dict)
    overridable: list[str] = Field(default_factory=list)


class Environment(Strict):
    name: Name
    description: str = ""
    gates: list[Gate] = Field(default_factory=list)
    approval: ApprovalPolicy | None = None
    target: DeploymentTarget = Field(default_factory=DeploymentTarget)
    blueprint: Blueprint | None = None
    auto_promote: bool = Field(default=False, description="the nightly sweep may promote here")
    on_drift: Literal["report", "correct"] = Field(
        default="report",
        description="when the deployed copy differs from the ledger: only report it, or redeploy "
        "the ledger's digest",
    )


# --- store and services ---------------------------------------------------------------------------


class StoreConfig(Strict):
    endpoint_url: HttpUrl | None = Field(
        default=None, description="S3 endpoint; None means AWS S3 for the region"
    )
    bucket: str = Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]+[a-z0-9]$")
    prefix: str = Field(default="", description="key prefix for everything the product writes")
    region: str = "us-east-1"
    credentials_block: str | None = Field(
        default=None,
        description="Prefect block with the store's credentials: 'promotion-s3-credentials/NAME', or "
        "NAME of a prefect-aws aws-credentials block; unset: the standard AWS credential chain",
    )

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        v = v.lstrip("/")
        if v and not v.endswith("/"):
            v += "/"
        return v


_ENV_VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class OwnerWebhook(Strict):
    """A generic JSON webhook, signed with Standard Webhooks. The secret is never in this file:
    the process that notifies (promote run/serve, the sweep) reads it from ``secret_env``."""

    url: str = Field(description="http(s) URL that receives the signed JSON POST")
    secret_env: str = Field(
        description="the environment variable holding the signing secret (whsec_<base64>)"
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        scheme, sep, rest = v.partition("://")
        if scheme not in ("http", "https") or not sep or not rest:
            raise ValueError("expected an http:// or https:// URL")
        if "@" in rest.split("/", 1)[0]:
            # user:password@ in the URL would be a secret in the pipeline file (and in logs).
            raise ValueError("the URL must not carry credentials (user:password@); sign with secret_env")
        return v

    @field_validator("secret_env")
    @classmethod
    def _env_name(cls, v: str) -> str:
        if not _ENV_VAR_RE.match(v):
            raise ValueError(f"{v!r} is not an environment variable name (the secret itself never goes here)")
        return v


class Owner(Strict):
    """Who is told when this service's pipeline halts: exactly one target per owner."""

    name: Name
    block: str | None = Field(
        default=None, description="a Prefect notification block, 'TYPE/NAME' (promote setup's automation)"
    )
    webhook: OwnerWebhook | None = Field(default=None, description="a Standard-Webhooks-signed JSON POST")

    @field_validator("block")
    @classmethod
    def _type_and_name(cls, v: str | None) -> str | None:
        return None if v is None else check_block_ref(v)

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if (self.block is None) == (self.webhook is None):
            raise ValueError(f"owner {self.name!r}: give exactly one of block or webhook")
        return self

    @property
    def target(self) -> str:
        """Where this owner is told, as setup prints it: never a URL (it may carry a token)."""
        if self.webhook is not None:
            return f"signed webhook, secret in ${self.webhook.secret_env}"
        return f"block {self.block}"


class MetricAlerts(Strict):
    """Thresholds on a service's DORA metrics (promotion/metrics), checked by the nightly sweep:
    an event when one is crossed, another when it recovers. Unset thresholds are not checked."""

    environment: str = Field(default="prod", description="the environment whose metrics are watched")
    window: Duration = Field(default=dt.timedelta(days=30), description="the metrics' window")
    change_fail_rate: float | None = Field(
        default=None, ge=0, le=1, description="crossed when the change fail rate is above it (0.15)"
    )
    lead_time_p50: Duration | None = Field(
        default=None, description="crossed when the median change lead time is longer (e.g. 2d)"
    )
    recovery_time_p50: Duration | None = Field(
        default=None, description="crossed when the median failed deployment recovery time is longer"
    )
    deployment_frequency_min: float | None = Field(
        default=None, gt=0, description="deployments per day; crossed when the frequency is below it"
    )
    rework_rate: float | None = Field(
        default=None, ge=0, le=1, description="crossed when the deployment rework rate is above it"
    )

    @model_validator(mode="after")
    def _some_threshold(self) -> Self:
        if self.window <= dt.timedelta(0):
            raise ValueError("window must be longer than 0")
        if all(
            v is None
            for v in (
                self.change_fail_rate,
                self.lead_time_p50,
                self.recovery_time_p50,
                self.deployment_frequency_min,
                self.rework_rate,
            )
        ):
            raise ValueError("give at least one threshold")
        return self


class Service(Strict):
    name: Name
    description: str = ""
    media_type: str = "application/octet-stream"
    owners: list[Owner] = Field(
        default_factory=list,
        description="told of a failed gate, a rejection, a rollback, a failed verification, drift "
        "or a flagged digest of this service",
    )
    alerts: MetricAlerts | None = Field(
        default=None, description="thresholds on this service's DORA metrics, checked nightly"
    )

    @field_validator("owners")
    @classmethod
    def _unique_owners(cls, v: list[Owner]) -> list[Owner]:
        names = [o.name for o in v]
        if len(set(names)) != len(names):
            raise ValueError("owner names must not repeat")
        return v


class SweepConfig(Strict):
    """The nightly sweep: promote what has soaked, detect drift, re-verify, retention."""

    schedule: str = Field(default="0 2 * * *", description="cron expression")
    timezone: TimeZoneName = Field(default="UTC", description="IANA time zone of the schedule")
    retention: Duration | None = Field(
        default=None,
        description="blobs no environment references and older than this may be deleted "
        "(listed by the sweep; deleted only with --apply); unset: keep everything",
    )
    max_parallel: int = Field(default=8, ge=1, le=64, description="services swept at once")

    @field_validator("schedule")
    @classmethod
    def _schedule_is_cron(cls, v: str) -> str:
        return check_cron(v)


#: The macros Prefect's CronSchedule (croniter) accepts, as the 5 fields they stand for.
_CRON_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def check_cron(expr: str) -> str:
    """``expr`` if it is a cron expression, else ValueError; checked when the file loads.

    Prefect's CronSchedule would only refuse it when ``promote serve`` starts, and this module
    must not import Prefect (S3-only commands load the pipeline file), so the check is cronsim's
    (pure Python). It accepts what Prefect does for ordinary expressions; it is stricter on
    day-month pairs that never occur (``0 0 31 2 *``), which Prefect accepts and never runs.
    """
    from cronsim import CronSim, CronSimError

    try:
        CronSim(_CRON_MACROS.get(expr.strip().lower(), expr), dt.datetime(2000, 1, 1))
    except CronSimError as exc:
        raise ValueError(f"not a cron expression ({exc}); e.g. '0 2 * * *' for 02:00 every day") from None
    return expr


class WebhookSource(Strict):
    """Where the shared secret of one CI webhook source comes from (never the file itself)."""

    secret_block: str | None = Field(default=None, description="Prefect Secret block name")
    secret_env: str | None = Field(default=None, description="environment variable name")

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.secret_block is None) == (self.secret_env is None):
            raise ValueError("set exactly one of secret_block or secret_env")
        return self


class WebhooksConfig(Strict):
    """The CI webhook receiver (``promote webhook serve``)."""

    sources: dict[Literal["github", "gitlab", "standard"], WebhookSource] = Field(default_factory=dict)
    deployment: str = Field(
        default="promote-pipeline/pipeline",
        description="the Prefect deployment (flow-name/deployment-name) a webhook starts",
    )


#: Prefect notification blocks an approval notification can go through, by block type slug:
#: ``SlackWebhook``, ``MicrosoftTeamsWebhook`` and ``CustomWebhookNotificationBlock``
#: (``prefect.blocks.notifications``; Prefect registers their types itself).
NOTIFICATION_BLOCK_TYPES = ("slack-webhook", "ms-teams-webhook", "custom-webhook")
ApprovalEvent = Literal["requested", "decided", "timed_out"]
_BLOCK_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")  # what Prefect accepts as a block name


def check_block_ref(v: str) -> str:
    """``v`` if it names a notification block as 'TYPE/NAME' (approvals and owners), else ValueError."""
    kind, sep, name = v.partition("/")
    if not sep or not name:
        raise ValueError(f"expected 'TYPE/NAME' with TYPE one of {', '.join(NOTIFICATION_BLOCK_TYPES)}")
    if kind not in NOTIFICATION_BLOCK_TYPES:
        raise ValueError(
            f"unknown notification block type {kind!r}; allowed: {', '.join(NOTIFICATION_BLOCK_TYPES)}"
        )
    if not _BLOCK_NAME_RE.match(name):
        raise ValueError(f"block name {name!r}: lowercase letters, digits and '-' only (Prefect's rule)")
    return v


def _all_approval_events() -> list[ApprovalEvent]:
    return ["requested", "decided", "timed_out"]


class ApprovalNotifications(Strict):
    """Who is told about approvals: ``promote setup`` creates one Prefect automation per event."""

    block: str = Field(
        description="the Prefect notification block, as 'TYPE/NAME' (e.g. 'slack-webhook/approvers'); "
        f"TYPE is one of {', '.join(NOTIFICATION_BLOCK_TYPES)}"
    )
    events: list[ApprovalEvent] = Field(
        default_factory=_all_approval_events,
        min_length=1,
        description="when to notify: requested (a stage waits), decided (each answer: counted, "
        "refused with why, approved, rejected), timed_out",
    )

    @field_validator("block")
    @classmethod
    def _type_and_name(cls, v: str) -> str:
        return check_block_ref(v)

    @field_validator("events")
    @classmethod
    def _no_repeat(cls, v: list[ApprovalEvent]) -> list[ApprovalEvent]:
        if len(set(v)) != len(v):
            raise ValueError("events must not repeat")
        return v

    @property
    def block_type(self) -> str:
        return self.block.partition("/")[0]

    @property
    def block_name(self) -> str:
        return self.block.partition("/")[2]


class NotificationsConfig(Strict):
    approvals: ApprovalNotifications | None = Field(
        default=None, description="notify when an approval is requested, decided or timed out"
    )


class Pipeline(Strict):
    version: Literal[1] = 1
    store: StoreConfig
    services: list[Service] = Field(min_length=1)
    environments: list[Environment] = Field(min_length=1)
    sweep: SweepConfig = Field(default_factory=SweepConfig)
    webhooks: WebhooksConfig = Field(default_factory=WebhooksConfig)
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)

    @field_validator("services", "environments")
    @classmethod
    def _unique(cls, items: list[Any]) -> list[Any]:
        seen: set[str] = set()
        for item in items:
            if item.name in seen:
                raise ValueError(f"duplicate name {item.name!r}; names must be unique")
            seen.add(item.name)
        return items

    @model_validator(mode="after")
    def _alerts_on_declared_environments(self) -> Self:
        names = [e.name for e in self.environments]
        for s in self.services:
            if s.alerts is not None and s.alerts.environment not in names:
                raise ValueError(
                    f"services[{s.name}].alerts.environment: {s.alerts.environment!r} is not one of "
                    f"the environments ({', '.join(names)})"
                )
        return self

    def service(self, name: str) -> Service:
        for s in self.services:
            if s.name == name:
                return s
        raise UnknownService(name, [s.name for s in self.services])

    def environment(self, name: str) -> Environment:
        for e in self.environments:
            if e.name == name:
                return e
        raise UnknownEnvironment(name, [e.name for e in self.environments])

    @property
    def environment_names(self) -> list[str]:
        return [e.name for e in self.environments]


# --- loading ----------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node)
        if key in mapping:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        mapping[key] = loader.construct_object(value_node)
    return mapping


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _loc_to_path(data: Any, loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as the path a person finds in the file.

    ``('environments', 1, 'gates', 0, 'tests', 'min_pass_rate')`` becomes
    ``environments[1](staging).gates[0].min_pass_rate``.
    """
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            if isinstance(node, list) and 0 <= part < len(node):
                node = node[part]
                if isinstance(node, dict) and isinstance(node.get("name"), str):
                    out += f"({node['name']})"
            else:
                node = None
            continue
        # discriminated unions add the tag to the location; it is not a field of the file
        if part in gate_kind_names() and isinstance(node, dict) and node.get("kind") == part:
            continue
        out += f".{part}" if out else str(part)
        node = node.get(part) if isinstance(node, dict) else None
    return out or "(top level)"


def _describe_error(data: Any, err: Any) -> str:
    path = _loc_to_path(data, tuple(err["loc"]))
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling; see the pipeline file reference in README.md)"
    elif err["type"] == "union_tag_invalid":
        msg = f"unknown gate kind {err['input'].get('kind')!r}; allowed: {', '.join(gate_kind_names())}"
    elif err["type"] == "union_tag_not_found":
        msg = f"missing 'kind'; allowed: {', '.join(gate_kind_names())}"
    elif err["type"].startswith("value_error"):
        msg = msg.removeprefix("Value error, ")
    inp = err.get("input")
    if err["type"] not in ("missing", "extra_forbidden") and not isinstance(inp, dict | list):
        msg += f" (got {inp!r})"
    return f"{path}: {msg}"


def parse_pipeline(text: str, source: str = "<string>") -> Pipeline:
    """Parse and validate pipeline YAML; raise :class:`ConfigError` with every problem found."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(source, [f"{where}invalid YAML: {exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, [f"invalid YAML: {exc}"]) from None
    if data is None:
        raise ConfigError(source, ["the file is empty; it needs 'store', 'services' and 'environments'"])
    if not isinstance(data, dict):
        raise ConfigError(
            source, ["the top level must be a mapping with 'store', 'services' and 'environments'"]
        )
    try:
        return Pipeline.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, [_describe_error(data, e) for e in exc.errors()]) from None


ENV_OVERRIDES = {
    "endpoint_url": "PROMOTION_S3_ENDPOINT_URL",
    "bucket": "PROMOTION_S3_BUCKET",
    "prefix": "PROMOTION_S3_PREFIX",
    "region": "PROMOTION_S3_REGION",
}


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    return Path(explicit or settings().config or DEFAULT_CONFIG)


def load_pipeline(path: str | os.PathLike[str] | None = None, *, apply_env: bool = True) -> Pipeline:
    """Load the pipeline file (``--config``, else ``$PROMOTION_CONFIG``, else ``promotion.yaml``).

    The store settings can be overridden by ``PROMOTION_S3_*`` environment variables.
    """
    p = config_path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(p), ["no such file; pass --config FILE or set PROMOTION_CONFIG"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), [f"cannot read: {exc}"]) from None
    pipeline = parse_pipeline(text, str(p))
    if apply_env:
        pipeline = with_env_overrides(pipeline, str(p))
    return pipeline


def with_env_overrides(pipeline: Pipeline, source: str = "<env>") -> Pipeline:
    overrides = settings().store_overrides()
    if not overrides:
        return pipeline
    store = pipeline.store.model_dump()
    store.update(overrides)
    try:
        new_store = StoreConfig.model_validate(store)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            field = str(e["loc"][0]) if e["loc"] else "store"
            var = ENV_OVERRIDES.get(field, field)
            problems.append(f"{var}: {e['msg']} (got {e.get('input')!r})")
        raise ConfigError(source + " + environment", problems) from None
    return pipeline.model_copy(update={"store": new_store})
