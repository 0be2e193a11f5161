"""One definition of the deployments (flows/serve.py): `promote serve` serves it, and
deployments/prefect.yaml is generated from it (deployments/generate.py), so they cannot drift."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from promotion.config import Pipeline, load_pipeline
from promotion.heartbeats import HEARTBEAT_S

REPO = Path(__file__).resolve().parents[2]
PREFECT_YAML = REPO / "deployments" / "prefect.yaml"
GENERATE = REPO / "deployments" / "generate.py"


def generate(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GENERATE), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def repo_pipeline() -> Pipeline:
    return load_pipeline(REPO / "promotion.yaml", apply_env=False)


def pipeline_file(tmp_path: Path, **sweep: str) -> Path:
    """The repository's pipeline file with other sweep settings."""
    doc = yaml.safe_load((REPO / "promotion.yaml").read_text())
    doc["sweep"].update(sweep)
    path = tmp_path / "promotion.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_the_checked_in_prefect_yaml_is_what_the_code_generates() -> None:
    from flows.serve import prefect_yaml

    assert PREFECT_YAML.read_text() == prefect_yaml(repo_pipeline(), config="promotion.yaml")
    r = generate("--check")
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    assert r.stdout.strip() == f"{PREFECT_YAML} is up to date"


def test_check_fails_on_a_drifted_file_and_generate_rewrites_it(tmp_path: Path) -> None:
    drifted = tmp_path / "prefect.yaml"
    drifted.write_text(PREFECT_YAML.read_text().replace("cron: 0 2 * * *", "cron: 0 3 * * *"))
    before = drifted.read_text()
    r = generate("--check", "-o", str(drifted))
    assert r.returncode == 1
    assert r.stderr.startswith("DeploymentsOutOfDate: ") and r.stderr.count("\n") == 1, r.stderr
    assert "run python deployments/generate.py" in r.stderr
    assert drifted.read_text() == before  # --check changes nothing
    missing = tmp_path / "absent.yaml"
    r = generate("--check", "-o", str(missing))
    assert r.returncode == 1 and "(missing)" in r.stderr and not missing.exists()
    r = generate("-o", str(drifted))
    assert r.returncode == 0 and r.stdout.strip() == f"wrote {drifted}"
    assert drifted.read_text() == PREFECT_YAML.read_text()
    assert generate("--check", "-o", str(drifted)).returncode == 0


def test_an_invalid_pipeline_file_is_a_one_line_config_error(tmp_path: Path) -> None:
    out = tmp_path / "prefect.yaml"
    # The time zone is refused when the file loads; the cron only when Prefect's Cron reads it.
    cases: list[tuple[dict[str, str], str]] = [
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"schedule": "not a cron"}, "schedule"),
    ]
    for sweep, named in cases:
        bad = pipeline_file(tmp_path, **sweep)
        r = generate("-c", str(bad), "-o", str(out))
        assert r.returncode == 2 and r.stderr.startswith("ConfigError: "), r.stderr
        assert r.stderr.count("\n") == 1 and named in r.stderr and not out.exists()


def test_the_schedule_comes_from_the_pipeline_file_in_both(tmp_path: Path) -> None:
    from flows.serve import runner_deployments

    cfg = pipeline_file(tmp_path, schedule="30 4 * * 1", timezone="Europe/Paris")
    out = tmp_path / "prefect.yaml"
    r = generate("-c", str(cfg), "-o", str(out))
    assert r.returncode == 0, r.stderr
    (nightly,) = [d for d in yaml.safe_load(out.read_text())["deployments"] if d["name"] == "nightly"]
    assert nightly["schedules"] == [{"cron": "30 4 * * 1", "timezone": "Europe/Paris"}]
    assert nightly["parameters"] == {"config": str(cfg)}
    served = runner_deployments(load_pipeline(cfg, apply_env=False), cfg)
    (schedule,) = next(d for d in served if d.name == "nightly").schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("30 4 * * 1", "Europe/Paris")


def _resolve(entrypoint: str) -> Any:
    path, _, attr = entrypoint.partition(":")
    return getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), attr)


def test_serve_and_prefect_yaml_give_the_same_deployments() -> None:
    from prefect import Flow
    from prefect.client.schemas.schedules import CronSchedule

    from flows.serve import WORK_POOL, runner_deployments

    pipeline = repo_pipeline()
    listed = yaml.safe_load(PREFECT_YAML.read_text())["deployments"]
    served = runner_deployments(pipeline, REPO / "promotion.yaml")
    assert [(d.flow_name, d.name) for d in served] == [
        ("promote-pipeline", "pipeline"),
        ("rollback", "rollback"),
        ("close-expired-approvals", "approval-deadlines"),
        ("nightly-sweep", "nightly"),
    ]
    assert [d["name"] for d in listed] == [d.name for d in served]
    for entry, runner in zip(listed, served, strict=True):
        flow = _resolve(entry["entrypoint"])
        assert isinstance(flow, Flow) and flow.name == runner.flow_name
        assert entry["description"] == runner.description
        assert set(entry["parameters"]) == set(runner.parameters) == {"config"}
        assert set(entry["parameters"]) <= set(flow.parameters.properties)
        assert runner.parameters["config"] == str((REPO / "promotion.yaml").resolve())
        assert entry.get("concurrency_limit") == runner.concurrency_limit
        # Prefect's own schedule model, from the file's fields, equals what serve registers.
        assert [CronSchedule(**s) for s in entry.get("schedules", [])] == [
            s.schedule for s in runner.schedules
        ]
        # Work-pool runs heartbeat as often as the crash-detection automation expects (serve's
        # child processes inherit the same setting from heartbeats.enable()).
        assert entry["work_pool"]["name"] == WORK_POOL
        assert entry["work_pool"]["job_variables"]["env"] == {
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S)
        }
    assert f"{served[0].flow_name}/{served[0].name}" == pipeline.webhooks.deployment
    nightly = listed[3]
    assert nightly["schedules"] == [{"cron": pipeline.sweep.schedule, "timezone": pipeline.sweep.timezone}]
    assert nightly["concurrency_limit"] == 1


def test_the_pipeline_deployment_is_named_by_webhooks_deployment(tmp_path: Path) -> None:
    from flows.serve import deployments
    from promotion.errors import ConfigError

    doc = yaml.safe_load((REPO / "promotion.yaml").read_text())
    doc["webhooks"]["deployment"] = "promote-pipeline/main"
    (tmp_path / "renamed.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    specs = deployments(load_pipeline(tmp_path / "renamed.yaml", apply_env=False))
    assert specs[0].name == "main"
    doc["webhooks"]["deployment"] = "other-flow/main"
    (tmp_path / "wrong.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    try:
        deployments(load_pipeline(tmp_path / "wrong.yaml", apply_env=False))
    except ConfigError as exc:
        assert "names flow 'other-flow'; the pipeline flow is 'promote-pipeline'" in str(exc)
    else:
        raise AssertionError("a webhooks.deployment of another flow was accepted")


def test_prefect_deploys_the_generated_file_as_serve_defines_it(prefect_api: str) -> None:
    """`prefect deploy --all` of the checked-in file, on a real server, registers what serve would."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    from flows.serve import WORK_POOL, deployments, runner_deployments

    specs = deployments(repo_pipeline())
    served = runner_deployments(repo_pipeline(), REPO / "promotion.yaml")
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PROMOTION_HOME": str(REPO)}
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=WORK_POOL, type="process"), overwrite=True)
        try:
            r = subprocess.run(
                [str(Path(sys.executable).with_name("prefect")), "--no-prompt", "deploy", "--all",
                 "--prefect-file", str(PREFECT_YAML)],
                cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            assert r.returncode == 0, r.stdout + r.stderr
            for spec, want in zip(specs, served, strict=True):
                got = client.read_deployment_by_name(f"{want.flow_name}/{want.name}")
                assert got.entrypoint == spec.entrypoint
                assert got.description == want.description
                assert got.parameters == {"config": "promotion.yaml"}
                assert got.work_pool_name == WORK_POOL
                assert got.job_variables == {"env": {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S)}}
                assert [s.schedule for s in got.schedules] == [s.schedule for s in want.schedules]
                limit = got.global_concurrency_limit.limit if got.global_concurrency_limit else None
                assert limit == want.concurrency_limit
        finally:
            # The session's server is shared with the tests after this one, which serve these names.
            for want in served:
                try:
                    client.delete_deployment(
                        client.read_deployment_by_name(f"{want.flow_name}/{want.name}").id
                    )
                except ObjectNotFound:  # a deploy that failed half-way registered fewer
                    pass
            client.delete_work_pool(WORK_POOL)
