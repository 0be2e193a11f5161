"""Runs whose process died end Crashed (heartbeats + the automation `promote setup` creates)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flows.setup import CRASH_AUTOMATION
from promotion.digest import Digest
from promotion.heartbeats import CRASH_AFTER_S
from tests.flows.harness import Run, Setup, resume

REPO = Path(__file__).resolve().parents[2]


def promote(api: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "promotion.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PREFECT_API_URL": api},
        timeout=180,
    )


def _runs_named(client: Any, text: str) -> list[Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    return [
        r for r in client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=text)))
    ]


def _wait(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(1)  # polling Prefect's API for a condition, with a deadline
    raise AssertionError(f"{what} did not happen within {timeout:.0f}s")


def _paused_stage(client: Any, digest: Digest) -> Any:
    from prefect.client.schemas.objects import StateType

    runs = _runs_named(client, f"{str(digest)[:19]}… → prod")
    return next((r for r in runs if r.state_type == StateType.PAUSED and r.parent_task_run_id), None)


def _ended(proc: subprocess.Popen[Any], log: Path) -> bool:
    """False while the process runs; a clear failure with its output once it ended."""
    if proc.poll() is not None:
        raise AssertionError(
            f"promote run ended ({proc.returncode}) before pausing:\n{log.read_text()[-3000:]}"
        )
    return False


def test_setup_twice_creates_one_automation(prefect_api: str, config_file: Path) -> None:
    from prefect.client.orchestration import get_client

    for _ in range(2):
        r = promote(prefect_api, "-c", str(config_file), "setup")
        assert r.returncode == 0, r.stderr
        assert f"ok automation {CRASH_AUTOMATION!r} (1)" in r.stdout
    with get_client(sync_client=True) as client:
        (automation,) = client.read_automations_by_name(CRASH_AUTOMATION)
    assert automation.enabled
    trigger: Any = automation.trigger
    assert trigger.posture == "Proactive" and trigger.within.total_seconds() == CRASH_AFTER_S
    assert trigger.after == {"prefect.flow-run.heartbeat"}


def test_a_killed_promote_run_ends_crashed_with_its_paused_stage(
    make_setup: Callable[..., Setup], tmp_path: Path, prefect_api: str
) -> None:
    """kill -9 of `promote run` while prod waits for approval: pipeline run and stage run end
    Crashed; a healthy run paused as long beside it stays Paused (no false alarms)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType

    from flows.pipeline import promote_pipeline

    s = make_setup(timeout="30m")
    assert promote(prefect_api, "-c", str(s.config), "setup").returncode == 0
    doomed = s.publish(tmp_path)
    output = (tmp_path / "run.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "promotion.cli", "-c", str(s.config), "run", "api", str(doomed)],
        cwd=REPO,
        stdout=output,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PREFECT_API_URL": prefect_api},
    )
    control: Run | None = None
    try:
        with get_client(sync_client=True) as client:
            stage = _wait(
                lambda: _paused_stage(client, doomed) or _ended(proc, tmp_path / "run.log"),
                120,
                "the killed run's prod stage pausing",
            )
            parent_id = client.read_task_run(stage.parent_task_run_id).flow_run_id
            assert parent_id is not None
            # Published and started after the doomed run paused: a newer build, so it may pass it.
            healthy = s.publish(tmp_path)
            control = Run(promote_pipeline, service="api", digest=str(healthy), config=str(s.config))
            calm = _wait(lambda: _paused_stage(client, healthy), 120, "the healthy run's prod stage pausing")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            killed = time.monotonic()

            def crashed() -> bool:
                ids = (stage.id, parent_id)
                return all(client.read_flow_run(i).state_type == StateType.CRASHED for i in ids)

            _wait(crashed, CRASH_AFTER_S + 60, "both runs of the killed process ending Crashed")
            took = time.monotonic() - killed
            final = client.read_flow_run(stage.id).state
            assert final is not None and "no heartbeat" in (final.message or "")
            assert client.read_flow_run(calm.id).state_type == StateType.PAUSED
        print(f"killed run and its stage Crashed {took:.0f}s after kill -9")
        assert took < 120, took
    finally:
        if proc.poll() is None:
            proc.kill()
        if control is not None and control.thread.is_alive():
            with get_client(sync_client=True) as client:
                calm_stage = _paused_stage(client, healthy)
            if calm_stage is not None:
                resume(str(calm_stage.id), "reject", "alice", "test over")
    assert control is not None and not control.join().is_completed()  # rejected, as the test asked
