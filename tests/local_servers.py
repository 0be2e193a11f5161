"""The servers the test suite runs on, started the way bench/ starts them too (issue 9 item 7).

``tests/conftest.py``'s session fixtures and the benchmarks (``bench/_common.py``) call these, so
a benchmark measures the same Prefect test server the tests talk to. Importing this module has no
side effect and does not import Prefect (``tests.flows.harness`` turns heartbeats on when
imported: a benchmark must not inherit that). :func:`children` finds what a server or a
``promote serve`` left running, for the tests and benchmarks that check nothing was.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from promotion.local_s3 import LocalS3

CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


@contextmanager
def prefect_test_server() -> Iterator[str]:
    """``prefect_test_harness`` (SQLite); yields its API URL; stopped even when the body raises.

    Sets ``PREFECT_SERVER_ANALYTICS_ENABLED=false`` unless it is set already.
    """
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    # Telemetry writes to the database while the server starts: a source of "database is locked".
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    server: SubprocessASGIServer | None = None
    try:
        # The default 30 s start-up timeout is tight on a 2-core machine (start-up takes ~20 s).
        with prefect_test_harness(server_startup_timeout=180):
            # The harness stops its server only when its body returns normally (and at exit).
            server = SubprocessASGIServer._instances.get(None)
            url = PREFECT_API_URL.value()
            if not url:
                raise RuntimeError("prefect_test_harness started no server: PREFECT_API_URL is empty")
            yield str(url)
    finally:
        if server is not None:
            server.stop()


@contextmanager
def aws_credentials(server: LocalS3) -> Iterator[None]:
    """The S3 server's keys in this process's environment (boto3 and the CLI subprocesses read
    them there), the previous values back on exit."""
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update({k: server.env()[k] for k in CREDENTIALS})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def children(pid: int) -> list[int]:
    """The live descendants of ``pid``, children before their own (empty when it is gone).

    Read from ``/proc/<pid>/task/*/children`` (Linux): a process that exits meanwhile is skipped.
    """
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            kids = [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            continue
        for k in kids:
            out += [k, *children(k)]
    return out


def run_processes(serve_pid: int) -> list[int]:
    """What :func:`children` finds of ``promote serve`` but its two standing helpers, started
    with serve and one whatever waits: the forkserver its flow runs are forked from and
    multiprocessing's resource tracker (flows/serve.py). The forkserver's children (flow runs,
    which keep its command line) are counted."""
    helpers: set[int] = set()
    for task in Path(f"/proc/{serve_pid}/task").glob("*/children"):
        try:
            kids = task.read_text().split()
        except OSError:  # the thread ended meanwhile
            continue
        for kid in kids:
            try:
                cmd = Path(f"/proc/{kid}/cmdline").read_bytes()
            except OSError:  # exited meanwhile
                continue
            if b"multiprocessing.forkserver import main" in cmd or b"multiprocessing.resource_tracker" in cmd:
                helpers.add(int(kid))
    return [pid for pid in children(serve_pid) if pid not in helpers]
