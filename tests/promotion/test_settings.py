"""The PROMOTION_* variables: one settings object, read through it everywhere; cron at load."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from promotion.ci_context import current_actor
from promotion.config import StoreConfig, config_path, load_pipeline, parse_pipeline
from promotion.errors import ConfigError
from promotion.s3 import make_client
from promotion.settings import VARIABLES, settings

REPO = Path(__file__).resolve().parents[2]

#: CLI option defaults (typer's envvar=), not settings fields; the README table lists them too.
CLI_ENVVARS = ("PROMOTION_SERVICE", "PROMOTION_DIGEST", "PROMOTION_TO")
#: Read by Prefect's templating in the deployments, not by our Python code.
TEMPLATE_VARS = ("PROMOTION_HOME",)

PIPELINE = """
store: {{bucket: artifacts, endpoint_url: "http://127.0.0.1:1"}}
services: [{{name: api}}]
environments: [{{name: dev}}]
sweep: {{schedule: {schedule!r}}}
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in VARIABLES:
        monkeypatch.delenv(var, raising=False)


def test_defaults() -> None:
    s = settings()
    assert (s.s3_max_attempts, s.approval_poll_seconds, s.webhook_max_in_flight) == (5, 1, 2)
    assert s.store_overrides() == {}
    assert s.actor is None and s.config is None


def test_every_variable_is_read_through_the_object(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "PROMOTION_ACTOR": "alice",
        "PROMOTION_CONFIG": "/tmp/other.yaml",
        "PROMOTION_S3_ENDPOINT_URL": "http://127.0.0.1:9999",
        "PROMOTION_S3_BUCKET": "other-bucket",
        "PROMOTION_S3_PREFIX": "team-a",
        "PROMOTION_S3_REGION": "eu-central-1",
        "PROMOTION_S3_MAX_ATTEMPTS": "3",
        "PROMOTION_APPROVAL_POLL_SECONDS": "7",
        "PROMOTION_WEBHOOK_MAX_IN_FLIGHT": "4",
    }
    assert set(values) == set(VARIABLES)
    for var, value in values.items():
        monkeypatch.setenv(var, value)
    s = settings()
    assert s.store_overrides() == {
        "endpoint_url": "http://127.0.0.1:9999",
        "bucket": "other-bucket",
        "prefix": "team-a",
        "region": "eu-central-1",
    }
    # ... and by the code that uses each of them
    assert current_actor() == "alice"
    assert current_actor("bob") == "bob"
    assert config_path() == Path("/tmp/other.yaml")
    client = make_client(
        StoreConfig.model_validate({"bucket": "artifacts", "endpoint_url": "http://127.0.0.1:1"})
    )
    assert client.meta.config.retries["total_max_attempts"] == 3  # type: ignore[attr-defined]

    from flows.approval import poll_interval
    from promotion.webhook import PrefectTrigger

    assert poll_interval() == 7
    assert PrefectTrigger("promote/promote").max_in_flight == 4


def test_a_changed_environment_is_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMOTION_S3_MAX_ATTEMPTS", "2")
    first = settings()
    assert settings() is first  # parsed once while the values stay the same
    monkeypatch.setenv("PROMOTION_S3_MAX_ATTEMPTS", "9")
    assert settings().s3_max_attempts == 9


def test_set_but_empty_store_override_still_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    # As before: a variable that is set (even to "") overrides; the store's validation judges it.
    monkeypatch.setenv("PROMOTION_S3_BUCKET", "")
    assert settings().store_overrides() == {"bucket": ""}
    monkeypatch.setenv("PROMOTION_ACTOR", "")
    assert current_actor() != ""


def test_poll_seconds_below_one_is_raised_to_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.approval import poll_interval

    monkeypatch.setenv("PROMOTION_APPROVAL_POLL_SECONDS", "0")
    assert poll_interval() == 1


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("PROMOTION_S3_MAX_ATTEMPTS", "abc", "must be a whole number of at least 1 (got 'abc')"),
        ("PROMOTION_S3_MAX_ATTEMPTS", "0", "must be a whole number of at least 1 (got '0')"),
        ("PROMOTION_S3_MAX_ATTEMPTS", "2.5", "must be a whole number of at least 1 (got '2.5')"),
        ("PROMOTION_APPROVAL_POLL_SECONDS", "soon", "must be a whole number (got 'soon')"),
        ("PROMOTION_WEBHOOK_MAX_IN_FLIGHT", "0", "must be a whole number of at least 1 (got '0')"),
        ("PROMOTION_WEBHOOK_MAX_IN_FLIGHT", "many", "must be a whole number of at least 1 (got 'many')"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as exc:
        settings()
    assert str(exc.value) == f"{var}: {expected}"


def test_several_bad_values_still_make_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMOTION_S3_MAX_ATTEMPTS", "x")
    monkeypatch.setenv("PROMOTION_WEBHOOK_MAX_IN_FLIGHT", "y")
    with pytest.raises(ConfigError) as exc:
        settings()
    text = str(exc.value)
    assert "\n" not in text
    assert "PROMOTION_S3_MAX_ATTEMPTS" in text and "PROMOTION_WEBHOOK_MAX_IN_FLIGHT" in text


def test_cli_bad_value_exits_2_with_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "promotion.yaml"
    cfg.write_text(PIPELINE.format(schedule="0 2 * * *"))
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    r = subprocess.run(
        [sys.executable, "-m", "promotion.cli", "--config", str(cfg), "history", "api"],
        capture_output=True,
        text=True,
        env={**env, "PROMOTION_S3_MAX_ATTEMPTS": "abc"},
        timeout=60,
    )
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.strip() == (
        "ConfigError: PROMOTION_S3_MAX_ATTEMPTS: must be a whole number of at least 1 (got 'abc')"
    )


# --- sweep.schedule: checked as cron when the file loads, the way Prefect's CronSchedule would


@pytest.mark.parametrize("expr", ["0 2 * * *", "*/15 * * * 1-5", "0 0 * * MON-FRI", "@daily", "0 3 1,15 * *"])
def test_cron_accepted_as_prefect_accepts_it(expr: str) -> None:
    from prefect.client.schemas.schedules import CronSchedule

    CronSchedule(cron=expr)  # Prefect accepts it ...
    assert parse_pipeline(PIPELINE.format(schedule=expr)).sweep.schedule == expr  # ... and so do we


@pytest.mark.parametrize(
    ("expr", "why"),
    [
        ("not a cron", "Wrong number of fields"),
        ("61 * * * *", "Bad minute"),
        ("* * * *", "Wrong number of fields"),
        ("0 25 * * *", "Bad hour"),
    ],
)
def test_cron_refused_as_prefect_refuses_it(expr: str, why: str) -> None:
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        CronSchedule(cron=expr)
    with pytest.raises(ConfigError) as exc:
        parse_pipeline(PIPELINE.format(schedule=expr), "pipe.yaml")
    assert exc.value.problems == [
        f"sweep.schedule: not a cron expression ({why}); e.g. '0 2 * * *' for 02:00 every day (got {expr!r})"
    ]


def test_config_validate_refuses_a_bad_cron_with_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "promotion.yaml"
    cfg.write_text(PIPELINE.format(schedule="61 * * * *"))
    r = subprocess.run(
        [sys.executable, "-m", "promotion.cli", "config", "validate", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert lines[0].startswith(f"ConfigError: {cfg}: sweep.schedule: not a cron expression"), lines


def test_load_pipeline_checks_the_cron_too(tmp_path: Path) -> None:
    cfg = tmp_path / "promotion.yaml"
    cfg.write_text(PIPELINE.format(schedule="0 2 * * 8"))
    with pytest.raises(ConfigError, match="sweep.schedule: not a cron expression"):
        load_pipeline(cfg)


# --- one place


#: Modules that read PROMOTION_* variables raw, and why that cannot decide anything.
RAW_READERS = {
    # `promote publish` guesses the store before pydantic is imported, to start its upload; the
    # store adopts that upload only if the guess equals what the settings object validated
    # (tests/promotion/test_publish_ahead.py checks that the two agree).
    "promotion/publish_ahead.py",
}


def test_no_module_reads_a_promotion_variable_from_os_environ() -> None:
    """Only promotion/settings.py reads them (typer's envvar= options are CLI defaults)."""
    read = re.compile(r"""(environ(\.get)?\(|environ\[|getenv\()\s*["']PROMOTION_""")
    offenders = [
        f"{path.relative_to(REPO)}:{n}"
        for top in ("promotion", "flows", "tasks", "deployments")
        for path in sorted((REPO / top).rglob("*.py"))
        if str(path.relative_to(REPO)) not in RAW_READERS
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if read.search(line)
    ]
    assert offenders == []


def test_readme_table_lists_every_variable() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    rows = {m.group(1) for m in re.finditer(r"^\| `(PROMOTION_[A-Z0-9_]+)` \|", readme, re.MULTILINE)}
    assert set(VARIABLES) | set(CLI_ENVVARS) | set(TEMPLATE_VARS) <= rows
