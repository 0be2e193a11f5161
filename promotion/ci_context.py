"""Who is acting and what CI built the artifact, from the environment CI systems set."""

from __future__ import annotations

import datetime as dt
import getpass
import os
import subprocess

from promotion.errors import UsageError
from promotion.settings import settings


def current_actor(explicit: str | None = None) -> str:
    """``--as`` if given, else PROMOTION_ACTOR, the CI user, or the login name."""
    for value in (
        explicit,
        settings().actor,
        os.environ.get("GITHUB_ACTOR"),
        os.environ.get("GITLAB_USER_LOGIN"),
    ):
        if value:
            return value
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def ci_builder() -> str | None:
    if os.environ.get("GITHUB_ACTIONS") == "true":
        return "github-actions"
    if os.environ.get("GITLAB_CI") == "true":
        return "gitlab-ci"
    if os.environ.get("BUILDKITE") == "true":
        return "buildkite"
    if os.environ.get("JENKINS_URL"):
        return "jenkins"
    return None


def ci_build_url() -> str | None:
    gh = [os.environ.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")]
    if all(gh):
        return f"{gh[0]}/{gh[1]}/actions/runs/{gh[2]}"
    return (
        os.environ.get("CI_JOB_URL") or os.environ.get("BUILDKITE_BUILD_URL") or os.environ.get("BUILD_URL")
    )


def ci_commit() -> str | None:
    return (
        os.environ.get("GITHUB_SHA") or os.environ.get("CI_COMMIT_SHA") or os.environ.get("BUILDKITE_COMMIT")
    )


def ci_commit_author() -> str | None:
    return os.environ.get("CI_COMMIT_AUTHOR") or None


def parse_commit_time(value: str, source: str = "--commit-time") -> dt.datetime:
    """An ISO 8601 time with its UTC offset (``2026-11-30T14:03:00+01:00``, ``...Z``).

    A time without an offset is refused: it could be any of 24 hours, and lead time is an
    arithmetic on it.
    """
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise UsageError(
            f"{source}: {value!r} is not an ISO 8601 time (e.g. 2026-11-30T14:03:00+01:00)"
        ) from None
    if parsed.tzinfo is None:
        raise UsageError(f"{source}: {value!r} has no UTC offset (add Z or +HH:MM)")
    return parsed


def ci_commit_time() -> dt.datetime | None:
    """The commit time CI gives (GitLab's CI_COMMIT_TIMESTAMP), else that of ``git log -1`` in
    a checkout (GitHub Actions sets no variable for it), else None.

    git is asked only when the current directory is inside a work tree; any failure (no git, no
    repository, a shallow clone without the commit) means no commit time, never a failed publish.
    """
    stamp = os.environ.get("CI_COMMIT_TIMESTAMP")
    if stamp:
        return parse_commit_time(stamp, "CI_COMMIT_TIMESTAMP")
    try:
        out = subprocess.run(
            ["git", "log", "-1", "--format=%cI", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    try:
        return parse_commit_time(out.stdout.strip(), "git log -1 --format=%cI")
    except UsageError:
        return None
