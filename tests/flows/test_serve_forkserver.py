"""``promote serve`` forks its flow runs from one warm process (flows/serve.py, issue 8's latency).

What Prefect's runner starts for a run held in memory goes through ``prefect.flow_engine``'s
``multiprocessing``; after :func:`flows.serve._fork_flow_runs` that is the forkserver, which has
imported the flow code once. Checked in a fresh interpreter (the change is process-wide): a
process started the way Prefect starts a run is a child of the forkserver, not of serve, and
finds ``flows.pipeline`` already imported. The end to end (resumed runs deploy, nothing runs
for a waiting one but the forkserver) is tests/flows/test_suspended_approval.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHILD = """
import json, sys
from pathlib import Path
from flows.serve import _fork_flow_runs
import prefect.flow_engine as engine
from tests.flows.test_serve_forkserver import report

assert _fork_flow_runs(), "the flow engine is not the one expected"
ctx = engine.multiprocessing.get_context("spawn")  # what run_flow_in_subprocess asks for
p = ctx.Process(target=report, args=(sys.argv[1],))
p.start()
p.join(60)
print(json.dumps({"method": ctx.get_start_method(), "exitcode": p.exitcode}))
"""


def report(path: str) -> None:
    """Runs in the started process: who its parent is, and whether the flow code was preloaded."""
    parent = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    Path(path).write_text(json.dumps({"parent": parent, "preloaded": "flows.pipeline" in sys.modules}))


def test_serve_starts_flow_runs_from_the_preloaded_forkserver(tmp_path: Path) -> None:
    out = tmp_path / "child.json"
    r = subprocess.run(
        [sys.executable, "-c", CHILD, str(out)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    parent = json.loads(r.stdout.strip().splitlines()[-1])
    assert parent == {"method": "forkserver", "exitcode": 0}
    child = json.loads(out.read_text())
    assert child["preloaded"] is True
    # Forked by the forkserver (started with the preload list), not spawned by the interpreter.
    assert "multiprocessing.forkserver import main" in child["parent"]
    assert "flows.pipeline" in child["parent"]
