"""Who is acting and what CI built the artifact, from the environment CI systems set."""

from __future__ import annotations

import getpass
import os

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
