"""The CI webhook receiver: a signed "build published" delivery starts the promotion pipeline.

``POST /hooks/{source}`` takes a delivery from one of three sources, each authenticated with its
own shared secret (``webhooks.sources`` in the pipeline file names where the secret lives: a
Prefect Secret block or an environment variable, never the file itself):

``github``
    ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>``; delivery id
    ``X-GitHub-Delivery`` (GitHub keeps it when a delivery is redelivered).
``gitlab``
    ``X-Gitlab-Token`` equal to the secret; delivery id ``Idempotency-Key`` (GitLab 17.4+, stable
    across GitLab's retries), else ``X-Gitlab-Event-UUID``.
``standard``
    Standard Webhooks: ``webhook-id``, ``webhook-timestamp`` (at most 5 minutes off, either way)
    and ``webhook-signature: v1,<base64>`` (a space-separated list; one match is enough), HMAC-SHA256
    of ``id.timestamp.body`` keyed with the base64-decoded secret ``whsec_<base64>``.

The body is the strict *build published* event (:class:`BuildPublished`), or a CI system's own
event that carries the service and digest in a documented place:

GitHub ``workflow_run`` (header ``X-GitHub-Event: workflow_run``)
    The run's ``display_title``, set with ``run-name:`` in the workflow to
    ``promote <service> sha256:<64 hex>`` (optionally followed by `` to <environment>``). It is the
    only value in the payload a workflow controls; ``run-name`` may use the ``github`` and
    ``inputs`` contexts only, so the digest must be known when the run starts: typically a
    ``workflow_dispatch`` workflow with ``service``/``digest`` inputs that the build dispatches
    after ``promote publish``. Runs of forks are ignored.
GitLab Pipeline Hook (``object_kind: "pipeline"``)
    Pipeline variables ``PROMOTION_SERVICE``, ``PROMOTION_DIGEST`` and optional ``PROMOTION_TO``,
    which GitLab lists in ``object_attributes.variables``. GitLab lists only variables given when
    the pipeline was created (trigger token, API, manual run, schedule), not ``.gitlab-ci.yml``
    variables, so the build triggers a pipeline with those variables after ``promote publish``.

Only successful runs/pipelines promote; others (and events that are not used, like GitHub's
``ping``) are answered ``200 {"ignored": "<why>"}``.

Answers: unknown or unconfigured source 404; body over 1 MiB 413; missing or bad signature, or a
stale timestamp, 401; malformed JSON, a schema error, an unknown service or environment, or a digest
never published 422; a delivery id reused with different content 409; success ``202
{"flow_run_id", "flow_run_url"}``. Errors are ``{"error": "<Class>", "detail": "<how to fix it>"}``.
The Prefect API or S3 being unreachable is the receiver's problem, not the sender's: 503. Any other
error is one nobody decided an answer for: 500, logged (the statuses are mapped once, in
:data:`STATUS_BY_ERROR`; the error classes are in :mod:`promotion.errors`).

Each delivery creates at most one flow run, also when duplicates arrive concurrently: the flow run
is created with the idempotency key ``{source}:{deployment}:{delivery id}`` and Prefect returns the
existing run for a key it has seen (keys are unique per flow, so the key names the deployment).

Secrets and signature headers are never logged or echoed. Importing this module does not import
Prefect, boto3 or uvicorn.

The package holds one concept per module: :mod:`.events` (the bodies and the answers' models),
:mod:`.signatures` (each source's authentication, over :mod:`promotion.signing`), :mod:`.secrets`
(where the shared secrets are read from), :mod:`.trigger` (run creation), :mod:`.app` (the ASGI
app and :data:`STATUS_BY_ERROR`) and :mod:`.server` (uvicorn). The names are re-exported here,
where importers take them from.
"""

from __future__ import annotations

from promotion.webhook.app import BODY_TIMEOUT_S as BODY_TIMEOUT_S
from promotion.webhook.app import MAX_BODY_BYTES as MAX_BODY_BYTES
from promotion.webhook.app import SOURCES as SOURCES
from promotion.webhook.app import STATUS_BY_ERROR as STATUS_BY_ERROR
from promotion.webhook.app import create_app as create_app
from promotion.webhook.app import status_for as status_for
from promotion.webhook.events import GITHUB_TITLE_RE as GITHUB_TITLE_RE
from promotion.webhook.events import GITLAB_DIGEST_VAR as GITLAB_DIGEST_VAR
from promotion.webhook.events import GITLAB_SERVICE_VAR as GITLAB_SERVICE_VAR
from promotion.webhook.events import GITLAB_TO_VAR as GITLAB_TO_VAR
from promotion.webhook.events import Accepted as Accepted
from promotion.webhook.events import BuildPublished as BuildPublished
from promotion.webhook.events import ErrorBody as ErrorBody
from promotion.webhook.events import GitHubWorkflowRun as GitHubWorkflowRun
from promotion.webhook.events import GitLabPipeline as GitLabPipeline
from promotion.webhook.events import Ignored as Ignored
from promotion.webhook.events import Intent as Intent
from promotion.webhook.events import interpret as interpret
from promotion.webhook.events import parse_build_published as parse_build_published
from promotion.webhook.events import parse_github_workflow_run as parse_github_workflow_run
from promotion.webhook.events import parse_gitlab_pipeline as parse_gitlab_pipeline
from promotion.webhook.events import parse_json as parse_json
from promotion.webhook.secrets import NOT_CACHED as NOT_CACHED
from promotion.webhook.secrets import SECRET_TTL_S as SECRET_TTL_S
from promotion.webhook.secrets import DefaultSecrets as DefaultSecrets
from promotion.webhook.secrets import SecretResolver as SecretResolver
from promotion.webhook.server import DEFAULT_PORT as DEFAULT_PORT
from promotion.webhook.server import UVICORN_SETTINGS as UVICORN_SETTINGS
from promotion.webhook.server import serve as serve
from promotion.webhook.server import serve_in_thread as serve_in_thread
from promotion.webhook.signatures import MAX_DELIVERY_ID as MAX_DELIVERY_ID
from promotion.webhook.signatures import TIMESTAMP_TOLERANCE_S as TIMESTAMP_TOLERANCE_S
from promotion.webhook.signatures import authenticate as authenticate
from promotion.webhook.signatures import verify_github as verify_github
from promotion.webhook.signatures import verify_gitlab as verify_gitlab
from promotion.webhook.signatures import verify_standard as verify_standard
from promotion.webhook.trigger import DEFAULT_MAX_IN_FLIGHT as DEFAULT_MAX_IN_FLIGHT
from promotion.webhook.trigger import MAX_IN_FLIGHT_ENV as MAX_IN_FLIGHT_ENV
from promotion.webhook.trigger import PrefectTrigger as PrefectTrigger
from promotion.webhook.trigger import RunRequest as RunRequest
from promotion.webhook.trigger import Trigger as Trigger
from promotion.webhook.trigger import TriggeredRun as TriggeredRun
from promotion.webhook.trigger import flow_run_url as flow_run_url
