"""Every error the product raises on purpose: one tree, defined here and nowhere else.

Errors carry the context needed to act on them, and their message says how to fix the problem.
They say *what* went wrong, not how an edge answers it: they are caught only at the edges, and
each edge maps the tree once. The CLI (:func:`promotion.cli.exit_code_for`) prints
``Class: message`` and exits 2 for a :class:`UsageError`, 1 for anything else; the webhook
receiver answers with the HTTP status of the nearest class in its table
(:data:`promotion.webhook.app.STATUS_BY_ERROR`), 500 (logged) for an error it does not know.

The hierarchy, and what each branch means for a digest::

    PromotionError
    ├── UsageError                       bad input; CLI exit 2
    │   ├── InvalidDigest, ConfigError, UnknownService, UnknownEnvironment
    │   ├── EvidenceError                an --evidence file is unusable
    │   │   └── EvidenceUnreadable       a report its parser cannot read
    │   ├── ArtifactMetadataError        the artifact's own metadata (promotion.stacks) is
    │   │   │                            unreadable, hostile or contradicts itself
    │   │   └── UnknownStack, VersionMismatch   a --stack or --version the file disagrees with
    │   ├── SigningSecretInvalid         a whsec_ secret that is not base64
    │   ├── KeyTemplateError, WebhookSecretError   (also DeployErrors)
    │   └── WebhookError                 a delivery the receiver refuses (the sender's input)
    │       ├── SourceNotServed          404
    │       ├── InvalidContentLength, IncompleteBody, DeliveryIdInvalid   400
    │       ├── PayloadTooLarge 413, BodyTimeout 408
    │       ├── SignatureMissing, SignatureInvalid, StaleTimestamp        401
    │       ├── PayloadInvalid 422
    │       │   ├── PromotionTargetMissing, ArtifactMismatch
    │       └── DeliveryConflict 409
    ├── InfrastructureError              NOT a verdict: the product could not ask its question
    │   ├── StoreUnreachable             S3 endpoint down, connection refused/reset    (transient)
    │   ├── StoreUnavailable             S3 5xx, throttling, timeouts, a body cut short,
    │   │                                after botocore's own retries                  (transient)
    │   ├── LedgerContention             other writers kept taking the next seq        (transient)
    │   ├── PrefectUnreachable           Prefect API down, wrong URL                   (transient)
    │   ├── LockTimeout, LockLost        another promotion held the lock / took it over
    │   ├── ReceiverUnavailable          the webhook receiver cannot reach Prefect or S3 (503)
    │   ├── NotificationFailed           an owner's webhook could not be told (logged only)
    │   └── AccessDenied, BucketNotFound, StoreCredentialsMissing,
    │       PrefectRefused               configuration: credentials, bucket, auth, API version
    │   (StoreUnreachable, StoreUnavailable, AccessDenied, BucketNotFound and
    │    StoreCredentialsMissing are also StoreErrors: they come from S3)
    └── verdicts and other failures (CLI exit 1)
        ├── StoreError                   an S3 answer about the object: an unreadable record,
        │   └── PreconditionFailed       evidence over the size limit, a refused checksum;
        │                                a conditional write that lost
        ├── DigestMismatch               corrupt bytes or evidence
        │   └── TargetCorrupt            an environment's copy does not hold the bytes
        ├── LedgerError
        │   ├── LedgerCorrupt            ledger verify found an edited/removed/reordered record
        │   └── LedgerContention         (also an InfrastructureError, above)
        ├── DeployError                  deploying to an environment failed
        │   ├── TargetBucketNotFound, SourceChanged, DeployFailed
        │   └── KeyTemplateError, WebhookSecretError   (also UsageErrors, above)
        └── GateFailed, ApprovalRejected, ApprovalSuperseded, VerificationFailed, DigestFlagged,
            StageHeldBack, ArtifactNotFound, ArtifactConflict, FileChangedDuringPublish,
            RollbackRefused, SetupRequired, DeploymentsOutOfDate

An infrastructure error is never recorded against a digest: no ``rejected`` or ``flagged``
ledger record, no failed gate. Gate and deploy tasks retry the transient ones with backoff; when
they persist the run ends *errored* and a re-run goes on once the infrastructure is back.

Live checks are different: an ``http`` or ``prometheus`` check that cannot connect to the
environment it just deployed IS a verdict about that deployment (the environment does not
answer), so it fails the check, and the deploy is rolled back. An S3 503 while reading the
evidence of a gate says nothing about the build: it is infrastructure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from promotion.digest import Digest


class PromotionError(Exception):
    """Base class of every error the product raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


# --- input errors (exit 2) -------------------------------------------------------------------


class UsageError(PromotionError):
    """The command line or an input value is wrong: the person or system that gave it can fix it."""


class InvalidDigest(UsageError):
    """A string that should name an artifact by digest does not have the form ``sha256:<64 hex>``."""

    def __init__(self, value: object) -> None:
        shown = repr(value) if len(repr(value)) <= 90 else repr(value)[:87] + "..."
        super().__init__(
            f"{shown} is not a digest: expected 'sha256:' followed by 64 lowercase hex "
            "characters, e.g. sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
        )
        self.value = value


class ConfigError(UsageError):
    """The pipeline file is missing, unreadable or invalid."""

    def __init__(self, path: str, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = list(problems)
        if len(self.problems) == 1:
            text = f"{path}: {self.problems[0]}"
        else:
            text = f"{path}: {len(self.problems)} problems:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(text)


class UnknownService(UsageError):
    """A service name that the pipeline file does not declare."""

    def __init__(self, service: str, known: Sequence[str]) -> None:
        self.service = service
        self.known = list(known)
        super().__init__(
            f"service {service!r} is not declared in the pipeline file; declared services: "
            f"{', '.join(known) or '(none)'}. Add it under 'services:' or fix the name."
        )


class UnknownEnvironment(UsageError):
    """An environment name that the pipeline file does not declare."""

    def __init__(self, environment: str, known: Sequence[str]) -> None:
        self.environment = environment
        self.known = list(known)
        super().__init__(
            f"environment {environment!r} is not declared in the pipeline file; environments: "
            f"{', '.join(known)}."
        )


class EvidenceError(UsageError):
    """An evidence file given at publish time is unusable (missing file, unknown kind)."""


class EvidenceUnreadable(EvidenceError):
    """A report could not be read; ``format`` names what it was read as, ``problem`` what is wrong."""

    def __init__(self, fmt: str, problem: str) -> None:
        self.format = fmt
        self.problem = problem
        super().__init__(f"{fmt}: {problem}")


class SigningSecretInvalid(UsageError):
    """A Standard Webhooks secret that is not ``whsec_<base64>`` cannot key a signature.

    The message says what is wrong with the secret, never what it is.
    """


# --- operation failures (exit 1) -------------------------------------------------------------


class InfrastructureError(PromotionError):
    """The product could not do its work (S3, Prefect, contention): not a verdict on a digest.

    ``transient``: retrying soon may succeed (an outage, throttling); False for configuration
    problems (credentials, a missing bucket) that only a person fixes, so nothing retries them.
    """

    transient: bool = True


class NotificationFailed(InfrastructureError):
    """An owner's webhook could not be told (unreachable, not 2xx, no secret): logged, never a verdict.

    The message names the owner and what went wrong, never the secret or the signature.
    """

    def __init__(self, owner: str, reason: str) -> None:
        self.owner = owner
        super().__init__(f"owner {owner}: {reason}")


class StoreError(PromotionError):
    """The S3 server refused or failed a request."""


class StoreUnreachable(StoreError, InfrastructureError):
    """The S3 endpoint could not be reached at all."""

    def __init__(self, endpoint: str, reason: str) -> None:
        self.endpoint = endpoint
        self.reason = reason
        super().__init__(
            f"cannot reach the S3 endpoint {endpoint}: {reason}. Check that the server is up and "
            "that store.endpoint_url (or PROMOTION_S3_ENDPOINT_URL) points at it."
        )


class StoreUnavailable(StoreError, InfrastructureError):
    """S3 answered 5xx or throttled, timed out, or cut a body short, after botocore's retries."""


class StoreCredentialsMissing(StoreError, InfrastructureError):
    """No AWS credentials were found: configuration, not something a retry fixes."""

    transient = False


class BucketNotFound(StoreError, InfrastructureError):
    transient = False

    def __init__(self, bucket: str, endpoint: str) -> None:
        self.bucket = bucket
        super().__init__(
            f"bucket {bucket!r} does not exist at {endpoint}. Create it, or set store.bucket "
            "(or PROMOTION_S3_BUCKET) to an existing bucket."
        )


class AccessDenied(StoreError, InfrastructureError):
    transient = False

    def __init__(self, operation: str, key: str) -> None:
        super().__init__(
            f"access denied for {operation} on {key}. Check the credentials "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or store.credentials_block)."
        )


class PreconditionFailed(StoreError):
    """A conditional write lost: the key exists (``IfNoneMatch``) or changed (``IfMatch``)."""


class ArtifactNotFound(PromotionError):
    """No blob or no artifact record exists for a digest."""

    def __init__(self, digest: str, service: str | None = None) -> None:
        self.digest = digest
        self.service = service
        where = f" for service {service!r}" if service else ""
        super().__init__(
            f"{digest} was never published{where}. Publish it first: "
            f"promote publish PATH --service {service or 'SERVICE'}"
        )


class ArtifactConflict(PromotionError):
    """Identical bytes were already published with different metadata; records are immutable."""

    def __init__(self, digest: str, service: str, differences: Sequence[str]) -> None:
        self.digest = digest
        self.service = service
        self.differences = list(differences)
        super().__init__(
            f"{digest} is already published for {service} with different metadata "
            f"({'; '.join(differences)}). Artifact records are immutable: re-publish with the "
            "original values, or publish different bytes."
        )


class DigestMismatch(PromotionError):
    """Bytes read back do not hash to the digest they are stored under."""

    def __init__(self, expected: str, actual: str, where: str) -> None:
        self.expected = expected
        self.actual = actual
        self.where = where
        super().__init__(
            f"{where}: expected {expected}, got {actual}. The stored bytes are corrupt or were "
            "replaced; do not deploy them. Re-publish the artifact from its build."
        )


class FileChangedDuringPublish(PromotionError):
    """The file being published changed between the read that named it and the upload."""

    def __init__(self, path: str, how: str) -> None:
        self.path = path
        super().__init__(
            f"{path} changed while it was being published ({how}); nothing was stored under its "
            "digest. Publish it again once whatever writes it has finished."
        )


class LedgerError(PromotionError):
    """The ledger could not be read or written."""


class LedgerContention(LedgerError, InfrastructureError):
    """Too many concurrent writers took the next sequence number first."""

    def __init__(self, service: str, attempts: int) -> None:
        super().__init__(
            f"could not append to the ledger of {service} after {attempts} attempts: other "
            "writers kept taking the next place. Retry; if it persists, reduce concurrency."
        )


class LedgerCorrupt(LedgerError):
    """``ledger verify`` found records that were edited, removed or reordered."""

    def __init__(self, service: str, findings: Sequence[str]) -> None:
        self.service = service
        self.findings = list(findings)
        super().__init__(f"ledger of {service} failed verification: " + "; ".join(self.findings))


class GateFailed(PromotionError):
    """A gate did not pass; ``reasons`` say why."""

    def __init__(self, gate: str, reasons: Sequence[str]) -> None:
        self.gate = gate
        self.reasons = list(reasons)
        super().__init__(f"gate {gate} failed: " + "; ".join(self.reasons))


class ApprovalRejected(PromotionError):
    """A human rejected a promotion, or it timed out waiting for approval."""

    def __init__(self, environment: str, by: str, reason: str) -> None:
        self.environment = environment
        self.by = by
        self.reason = reason
        super().__init__(f"promotion to {environment} rejected by {by}: {reason}")


class VerificationFailed(PromotionError):
    """Post-deploy live checks failed; the environment was put back where it was."""

    def __init__(self, environment: str, reasons: Sequence[str], restored: str | None) -> None:
        self.environment = environment
        self.reasons = list(reasons)
        self.restored = restored
        after = (
            f"rolled back to {restored}"
            if restored
            else "there was no earlier digest to roll back to: fix forward or roll back by hand"
        )
        super().__init__(f"verification of {environment} failed ({'; '.join(self.reasons)}); {after}")


class RollbackRefused(PromotionError):
    """A rollback target that was never deployed in the environment, or nothing to roll back."""


class SetupRequired(PromotionError):
    """A resource that ``promote setup`` creates is missing."""


class DeploymentsOutOfDate(PromotionError):
    """deployments/prefect.yaml is not what the code's deployments generate (flows/serve.py)."""


class PrefectUnreachable(InfrastructureError):
    """The Prefect API could not be reached (nothing listening, wrong URL, a timeout)."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(
            f"cannot reach the Prefect API at {url}: {reason}. Start the server (prefect server start) "
            "and set PREFECT_API_URL to it."
        )


class PrefectRefused(InfrastructureError):
    """The Prefect API answered but refused us: authentication, or an incompatible version."""

    transient = False

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"the Prefect API at {url} refused the request: {reason}")


def is_transient(exc: BaseException) -> bool:
    """An infrastructure error that a retry may get past (what the gate and deploy tasks retry)."""
    return isinstance(exc, InfrastructureError) and exc.transient


class DigestFlagged(PromotionError):
    """The digest failed a later re-check (corrupted bytes, expired evidence): never promoted."""

    def __init__(self, digest: str, service: str, reason: str) -> None:
        self.digest = digest
        self.service = service
        self.reason = reason
        super().__init__(
            f"{digest} of {service} is flagged: {reason}. It will not be promoted; publish a new build."
        )


class StageHeldBack(PromotionError):
    """A promotion aimed further up would move a lower environment back from a newer build."""

    def __init__(self, environment: str, why: str) -> None:
        self.environment = environment
        super().__init__(why)


class ApprovalSuperseded(PromotionError):
    """The environment runs a newer build than the one waiting for approval: it is not deployed."""

    def __init__(self, environment: str, digest: str, newer: str, newer_version: str | None) -> None:
        self.environment = environment
        self.newer = newer
        super().__init__(
            f"superseded: {environment} now runs {newer} (version {newer_version or 'n/a'}), published "
            f"after {digest}; this approval is closed without deploying (approval.on_outdated: refuse). "
            "Promote the newer build on, or set on_outdated: allow to move back deliberately"
        )


class LockTimeout(InfrastructureError):
    """Another promotion of the same service and environment held the lock for too long.

    Not a verdict on the digest: nothing is recorded against it, and a re-run goes on.
    """

    def __init__(self, name: str, waited_s: float, holder: str) -> None:
        self.name = name
        self.holder = holder
        super().__init__(
            f"gave up waiting for the lock of {name} after {waited_s:.0f}s; it is held by {holder}. "
            "Retry when that run has finished, or cancel it in the Prefect UI."
        )


class LockLost(InfrastructureError):
    """The lease of a held lock could not be renewed in time, or another holder took it over.

    Not a verdict: the run stops before writing more; a re-run continues from the ledger.
    """

    def __init__(self, name: str, why: str) -> None:
        self.name = name
        super().__init__(f"lost the lock of {name} ({why}); stopped before writing anything more")


# --- deploying to an environment (promotion.deploy) ---------------------------------------------


class DeployError(PromotionError):
    """Deploying a digest to an environment failed."""


class KeyTemplateError(DeployError, UsageError):
    """``copy_to.key_template`` cannot produce a key for this deploy."""


class TargetBucketNotFound(DeployError):
    """The environment's copy target bucket does not exist."""

    def __init__(self, bucket: str, endpoint: str, environment: str | None) -> None:
        self.bucket = bucket
        self.environment = environment
        setting = (
            f"environments[{environment}].target.copy_to.bucket"
            if environment
            else "target.copy_to.bucket of the environment"
        )
        super().__init__(
            f"the copy target bucket {bucket!r} does not exist at {endpoint}. Create the bucket, "
            f"or set {setting} in the pipeline file to an existing bucket."
        )


class SourceChanged(DeployError):
    """The blob changed between reading its ETag and copying it (``CopySourceIfMatch`` failed)."""

    def __init__(self, digest: Digest, where: str) -> None:
        self.digest = digest
        self.where = where
        super().__init__(
            f"{where} was replaced while it was being copied (CopySourceIfMatch failed with 412); "
            "a published blob must never change, so nothing was deployed. Check it with "
            f"'promote verify {digest} --full' and re-publish the artifact from its build if it "
            "is corrupt, then promote again."
        )


class TargetCorrupt(DigestMismatch):
    """The environment's copy does not hold the artifact's bytes (a :class:`DigestMismatch`)."""

    def __init__(self, expected: str, actual: str, where: str) -> None:
        super().__init__(expected, actual, where)
        # DigestMismatch's advice (re-publish) is about the store; here the store may be fine.
        self.message = (
            f"{where}: expected {expected}, got {actual}. The environment's copy does not hold "
            "the artifact's bytes; do not use it. Promote again to copy it afresh from the store, "
            f"after checking the stored blob with 'promote verify {expected} --full'."
        )


class WebhookSecretError(DeployError, UsageError):
    """The webhook secret cannot be used as an HMAC key."""


class DeployFailed(DeployError):
    """The deploy webhook failed: a non-2xx answer, a timeout or a connection error.

    ``status`` is the HTTP status (None when no answer arrived) and ``body_excerpt`` at most
    ``promotion.deploy.webhook.BODY_EXCERPT`` characters of the answer, with the secret and the presigned
    URL's signature scrubbed out.
    """

    def __init__(self, message: str, *, url: str, status: int | None = None, body_excerpt: str = "") -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.body_excerpt = body_excerpt


# --- deliveries the webhook receiver refuses (promotion.webhook) ---------------------------------
# Their HTTP statuses are in promotion.webhook's table, not here.


class WebhookError(UsageError):
    """A delivery the receiver refuses: something the sender sent (or did not) is wrong."""


class SourceNotServed(WebhookError):
    """The source is not one this receiver serves (unknown, or configured without a usable secret)."""


class InvalidContentLength(WebhookError):
    """The Content-Length header is not a number."""


class IncompleteBody(WebhookError):
    """The body ended before its Content-Length."""


class PayloadTooLarge(WebhookError):
    """The body is larger than the receiver takes."""

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(
            f"the body is larger than {limit_bytes} bytes; send the build-published event "
            "(a few hundred bytes), not build output"
        )


class BodyTimeout(WebhookError):
    """The body trickled in slower than the receiver waits."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"the body did not arrive within {timeout_s:g} s; send it in one go")


class SignatureMissing(WebhookError):
    """The delivery carries no signature (or token) header."""


class SignatureInvalid(WebhookError):
    """The signature (or token) does not match the source's secret."""


class StaleTimestamp(WebhookError):
    """A Standard Webhooks timestamp too far from now: a replay, or a wrong clock."""


class DeliveryIdInvalid(WebhookError):
    """The delivery id is missing or not a short printable string."""


class PayloadInvalid(WebhookError):
    """The body is not JSON, or does not match the event schema; the detail names the field."""


class PromotionTargetMissing(PayloadInvalid):
    """A CI system's own event without the service and digest in the documented place."""


class ArtifactMismatch(PayloadInvalid):
    """The event describes the artifact differently from its published record."""


class DeliveryConflict(WebhookError):
    """A delivery id seen before with different content: its run promotes something else."""


class ReceiverUnavailable(InfrastructureError):
    """Prefect, S3 or a secret store could not be reached; the sender may retry later."""


# --- what an artifact says about itself (promotion.stacks) ---------------------------------------


class ArtifactMetadataError(UsageError):
    """The artifact's own metadata is unreadable, hostile or contradicts itself (exit 2).

    ``path`` is the file as given, ``reason`` what is wrong with it, naming the member read.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class UnknownStack(ArtifactMetadataError):
    """``--stack`` names no adapter."""


class VersionMismatch(ArtifactMetadataError):
    """``--version`` disagrees with the version the artifact carries."""

    def __init__(self, path: str, given: str, own: str, where: str) -> None:
        self.given = given
        self.own = own
        super().__init__(
            path,
            f"--version {given} disagrees with version {own} in {where}; drop --version (the "
            "artifact's own is recorded) or publish the file that was built as that version",
        )
