"""Drift: an environment's copy (``target.copy_to``) compared with the ledger's digest, and corrected."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence

from promotion.config import CopyTarget, Environment, Pipeline
from promotion.deploy import (
    DeployError,
    KeyTemplateError,
    copy_to_target,
    read_target_digest,
    target_key,
    verify_target,
)
from promotion.digest import Digest
from promotion.errors import (
    BucketNotFound,
    DigestMismatch,
    InfrastructureError,
    InvalidDigest,
    PromotionError,
)
from promotion.models import LedgerState
from promotion.s3 import S3
from promotion.store import ArtifactStore
from promotion.sweep.report import DriftAction, DriftFinding, ServiceReport


def find_drift(
    store: ArtifactStore,
    pipeline: Pipeline,
    service: str,
    state: LedgerState,
    bad: Mapping[str, str],
    errors: list[str],
) -> list[DriftFinding]:
    """Environments whose copy differs from the ledger; ``bad`` digests (corrupt) are not re-copied.

    A copy that cannot be read because of S3 (an infrastructure error) is not drift: it goes to
    ``errors``, so no ``drift.detected`` event cries wolf over a 503.
    """
    findings: list[DriftFinding] = []
    for env in pipeline.environments:
        target = env.target.copy_to
        if target is None:
            continue
        cur = state.environments.get(env.name)
        expected = cur.digest if cur else None
        version = cur.version if cur else None
        try:
            where = f"s3://{target.bucket}/{target_key(target, service, version, None)}"
        except KeyTemplateError as exc:
            if expected is not None:
                findings.append(_finding(env, expected, None, version, "(unknown key)", str(exc), "report"))
            continue  # nothing deployed and no key to look at: nothing to compare
        try:
            actual, checksum = _read_copy(store, target, service, version, env.name)
        except InfrastructureError as exc:
            errors.append(f"drift {env.name}: cannot read the copy {where}: {type(exc).__name__}: {exc}")
            continue
        except PromotionError as exc:
            findings.append(
                _finding(env, expected, None, version, where, f"cannot read the copy: {exc}", "report")
            )
            continue
        if actual == expected:
            if expected is None:
                continue
            if checksum is not None:
                # The server's full-object SHA-256 of the copy, from the same HEAD: no download.
                if checksum == expected.b64:
                    continue
                got = Digest("sha256:" + base64.b64decode(checksum).hex())
                detail = f"the copy is tagged {expected.short} but its bytes differ: got {got} (checksum)"
            else:
                try:
                    verify_target(store, target, service, version, expected, environment=env.name)
                    continue
                except DigestMismatch as exc:
                    detail = f"the copy is tagged {expected.short} but its bytes differ: got {exc.actual}"
                except InfrastructureError as exc:
                    errors.append(
                        f"drift {env.name}: cannot verify the copy {where}: {type(exc).__name__}: {exc}"
                    )
                    continue
                except PromotionError as exc:
                    findings.append(
                        _finding(
                            env, expected, actual, version, where, f"cannot verify the copy: {exc}", "report"
                        )
                    )
                    continue
        elif expected is None:
            detail = f"the ledger says nothing runs in {env.name}, but the copy holds {actual}"
        elif actual is None:
            detail = f"the copy is missing (or not written by a promotion); the ledger says {expected.short}"
        else:
            detail = f"the copy holds {actual.short}, the ledger says {expected.short}"
        action: DriftAction = "report"
        if env.on_drift == "correct":
            if expected is None:
                detail += "; not corrected: there is no ledger digest to restore"
            elif str(expected) in bad:
                detail += f"; not corrected: the ledger's digest failed its re-check ({bad[str(expected)]})"
            else:
                action = "correct"
        findings.append(_finding(env, expected, actual, version, where, detail, action))
    return findings


def _read_copy(
    store: ArtifactStore, target: CopyTarget, service: str, version: str | None, environment: str
) -> tuple[Digest | None, str | None]:
    """(digest tag, full-object SHA-256 checksum) of an environment's copy, in one HEAD.

    The tag is what :func:`~promotion.deploy.read_target_digest` reads; the checksum (None when
    the server keeps none, or only a multipart composite) lets the bytes be checked without a
    download. A missing object or a tag that is not a digest gets ``read_target_digest``'s own
    answer (None, or its error naming the bucket or the object).
    """
    key = target_key(target, service, version, None)
    dest = S3(store.s3.cfg.model_copy(update={"bucket": target.bucket, "prefix": ""}), client=store.s3.client)
    try:
        head = dest.head(key)
    except BucketNotFound:
        head = None
    tag = head.metadata.get("sha256") if head is not None else None
    if head is None or tag is None:
        return read_target_digest(store, target, service, version, environment=environment), None
    try:
        digest = Digest("sha256:" + tag)
    except InvalidDigest:
        return read_target_digest(store, target, service, version, environment=environment), None
    checksum = head.checksum_sha256
    return digest, checksum if checksum and "-" not in checksum else None


def _finding(
    env: Environment,
    expected: Digest | None,
    actual: Digest | None,
    version: str | None,
    where: str,
    detail: str,
    action: DriftAction,
) -> DriftFinding:
    return DriftFinding(
        environment=env.name,
        expected=expected,
        actual=actual,
        version=version,
        location=where,
        detail=detail,
        on_drift=env.on_drift,
        action=action,
    )


def correct_drift(store: ArtifactStore, service: str, finding: DriftFinding) -> DriftFinding:
    """Re-copy the ledger's digest into the environment, then check the copy again."""
    if finding.action != "correct" or finding.expected is None:
        return finding
    target = store.pipeline.environment(finding.environment).target.copy_to
    assert target is not None
    d, env = finding.expected, finding.environment
    try:
        copy_to_target(store, target, service, d, finding.version, environment=env, full_verify=True)
        again = read_target_digest(store, target, service, finding.version, environment=env)
        if again != d:
            raise DeployError(f"after the copy the object is tagged {again}, not {d}")
        check = verify_target(store, target, service, finding.version, d, environment=env)
    except PromotionError as exc:
        return finding.model_copy(
            update={"action": "correction_failed", "detail": f"{finding.detail}; correction failed: {exc}"}
        )
    return finding.model_copy(
        update={"action": "corrected", "detail": f"{finding.detail}; re-copied {d.short}, {check.detail}"}
    )


def correct_all(store: ArtifactStore, reports: Sequence[ServiceReport]) -> list[ServiceReport]:
    """Every report with its ``correct`` drift findings applied (:func:`correct_drift`)."""
    out: list[ServiceReport] = []
    for r in reports:
        if any(f.action == "correct" for f in r.drift):
            fixed = [correct_drift(store, r.service, f) for f in r.drift]
            r = r.model_copy(update={"drift": fixed})
        out.append(r)
    return out
