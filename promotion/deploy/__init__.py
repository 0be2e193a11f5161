"""Deploying an artifact to an environment, without Prefect: the copy target and the deploy webhook.

Two independent ways to hand an environment its artifact, both driven by
:class:`~promotion.config.DeploymentTarget`:

* **copy** (:func:`copy_to_target`): a server-side copy of the blob into the environment's own
  bucket under a stable key (``{service}/current`` by default), tagged with the digest in its
  ``sha256`` metadata, then verified against the digest. :func:`read_target_digest` reads that
  tag back; the nightly sweep compares it with the ledger to detect drift.
* **webhook** (:func:`call_deploy_webhook`): a signed POST of a :class:`DeployPayload` (digest,
  version, size and a presigned GET URL of the blob) to a receiver that deploys it.

Webhook signatures
------------------
Every request carries two independent signatures over the exact body bytes, so a receiver can
use whichever its framework supports:

* `Standard Webhooks <https://www.standardwebhooks.com/>`_: ``webhook-id`` (the payload's
  idempotency key, identical across retries), ``webhook-timestamp`` (Unix seconds) and
  ``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``. As in the spec and
  its reference libraries, the HMAC key is the secret base64-decoded after an optional ``whsec_``
  prefix. A ``whsec_`` secret that is not base64 is refused (:class:`WebhookSecretError`); a
  secret without the prefix that is not base64 either is a plain shared secret, which no Standard
  Webhooks verifier could use: the request then carries only the GitHub-style signature, and a
  warning says so.
* GitHub style: ``X-Promotion-Signature-256: sha256=<hex HMAC-SHA256 of the body>``, keyed with the
  secret string's UTF-8 bytes exactly as configured (``whsec_`` prefix included), which is what
  GitHub-style verifiers do with a configured secret.

Both are computed by :mod:`promotion.signing`, the same code the CI webhook receiver checks with.

Neither the secret nor the presigned URL's query string (it holds a signature that grants read
access to the blob) ever appears in a message, a log record or an exception; see
:func:`redact_url`.

The package holds one concept per module: :mod:`.copy_target` (the copy, its verification, the
drift tag, presigned URLs), :mod:`.webhook` (the payload and the signed POST) and :mod:`.redaction`
(what of a URL or an answer may be shown). The names are re-exported here, where importers take
them from.
"""

from __future__ import annotations

from promotion.deploy.copy_target import COPY_CONCURRENCY as COPY_CONCURRENCY
from promotion.deploy.copy_target import COPY_PART_SIZE as COPY_PART_SIZE
from promotion.deploy.copy_target import MAX_COPY_OBJECT_SIZE as MAX_COPY_OBJECT_SIZE
from promotion.deploy.copy_target import MAX_PRESIGN as MAX_PRESIGN
from promotion.deploy.copy_target import CopyMethod as CopyMethod
from promotion.deploy.copy_target import CopyResult as CopyResult
from promotion.deploy.copy_target import GiB as GiB
from promotion.deploy.copy_target import MiB as MiB
from promotion.deploy.copy_target import VerificationMethod as VerificationMethod
from promotion.deploy.copy_target import copy_to_target as copy_to_target
from promotion.deploy.copy_target import presign_blob as presign_blob
from promotion.deploy.copy_target import read_target_digest as read_target_digest
from promotion.deploy.copy_target import target_key as target_key
from promotion.deploy.copy_target import verify_target as verify_target
from promotion.deploy.redaction import redact_url as redact_url
from promotion.deploy.webhook import BODY_EXCERPT as BODY_EXCERPT
from promotion.deploy.webhook import DeployPayload as DeployPayload
from promotion.deploy.webhook import WebhookResult as WebhookResult
from promotion.deploy.webhook import call_deploy_webhook as call_deploy_webhook

# The errors of deploying live in promotion.errors; re-exported under their old address, which
# tests and promotion.sweep import them from.
from promotion.errors import DeployError as DeployError
from promotion.errors import DeployFailed as DeployFailed
from promotion.errors import KeyTemplateError as KeyTemplateError
from promotion.errors import SourceChanged as SourceChanged
from promotion.errors import TargetBucketNotFound as TargetBucketNotFound
from promotion.errors import TargetCorrupt as TargetCorrupt
from promotion.errors import WebhookSecretError as WebhookSecretError
