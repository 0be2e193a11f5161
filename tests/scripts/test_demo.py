"""`make demo` is the product's front door: run it as a user would and check what it shows."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_demo_runs_end_to_end_and_cleans_up() -> None:
    r = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    digests = re.findall(r"^sha256:[0-9a-f]{64}$", r.stdout, flags=re.M)
    # published twice (the second time uploads nothing), same digest both times
    assert len(digests) == 2 and digests[0] == digests[1]
    assert "0 bytes uploaded" in r.stderr
    assert "every byte re-hashed" in r.stdout
    assert re.search(r"ok\s+hello: 1 records", r.stdout)
    assert "(latest published)" in r.stdout and digests[0] in r.stdout
    # the server it started is gone: its S3 port no longer answers
    port = re.search(r"S3 is up at http://127\.0\.0\.1:(\d+)", r.stdout)
    assert port is not None
    import socket

    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", int(port.group(1)))) != 0


def test_ctrl_c_stops_everything_the_demo_started() -> None:
    import os
    import signal
    import socket

    proc = subprocess.Popen(
        [sys.executable, "-u", str(REPO / "scripts" / "demo.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        start_new_session=True,
    )
    assert proc.stdout is not None
    port = None
    for line in proc.stdout:  # wait for the server to be up, by what the demo says
        if m := re.search(r"S3 is up at http://127\.0\.0\.1:(\d+)", line):
            port = int(m.group(1))
            break
    assert port is not None
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
