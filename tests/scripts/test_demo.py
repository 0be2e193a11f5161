"""`make demo` is the product's front door: run it as a user would and check what it shows."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_demo_runs_end_to_end_and_cleans_up(tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    r = subprocess.run(
        [sys.executable, "-u", str(REPO / "scripts" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env={**os.environ, "DEMO_COUNTDOWN": "1", "DEMO_REPORT": str(report)},
    )
    out = r.stdout
    assert r.returncode == 0, out[-4000:] + r.stderr[-4000:]
    digest = re.search(r"^(sha256:[0-9a-f]{64})$", out, flags=re.M)
    assert digest is not None
    assert "POST /hooks/standard -> 202" in out
    assert "the same delivery again -> 202, same run" in out
    # dev and staging promoted before the approval; the pipeline run (of the deployment the
    # webhook started) suspended at prod with no process left, then approved from the CLI
    assert re.search(r"hello sha256:\w{12}… → dev: Completed", out)
    assert re.search(r"hello sha256:\w{12}… → staging: Completed", out)
    assert re.search(r"hello sha256:\w{12}… → end: Suspended", out)
    assert "the pipeline run is suspended: no process waits for the answer" in out
    assert re.search(r"hello\s+prod\s+sha256:\w{12}", out)  # promote pending lists the request
    assert "approval by alice sent to" in out
    assert f"pipeline run: Completed: promoted {digest.group(1)[:19]} to prod" in out
    for env in ("dev", "staging", "prod"):
        assert re.search(rf"hello\s+│\s+{env}\s+│\s+{digest.group(1)}", out), env
    assert re.search(r"ok\s+hello: 6 records", out)  # published, promoted x3, approval_requested, approval
    # it ends with the dashboard, its path printed, showing the three promotions of hello
    assert out.index("$ promote metrics") < out.index(f"report written: {report}\n")
    page = report.read_text(encoding="utf-8")
    assert "<h2>hello</h2>" in page and "1 deployment(s) to prod" in page and "alice approved" in page
    ports = [int(p) for p in re.findall(r"http://127\.0\.0\.1:(\d+)", out)]
    assert ports and all(_closed(p) for p in set(ports))


def test_ctrl_c_stops_everything_the_demo_started() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-u", str(REPO / "scripts" / "demo.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        start_new_session=True,
    )
    assert proc.stdout is not None
    ports: list[int] = []
    for line in proc.stdout:  # wait until both servers are up, by what the demo says
        ports += [int(p) for p in re.findall(r"http://127\.0\.0\.1:(\d+)", line)]
        if "Prefect UI:" in line:
            break
    assert len(ports) >= 2
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert all(_closed(p) for p in ports)
