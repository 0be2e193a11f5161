"""Helpers shared by the benchmark scripts in ``bench/``.

The scripts run as ``.venv/bin/python bench/NAME.py``, so this directory is first on ``sys.path``
and they import this module as ``_common`` (as they import ``pg``). Everything here is what the
scripts did identically: the facts of the machine, percentile statistics, the latency summary,
the lines of a report that every script prints (samples, load averages, checks), argument
defaults of ``--quick`` runs, the SIGTERM handler, Prefect's console, and the
JSON result file; and what several scripts had a copy of: :class:`BenchError`, the S3 request
counter, the pattern of ids in Prefect API paths, stopping a process group.

It also puts the repository's root on ``sys.path``, so that the scripts can import the test
suite's helpers (``tests/``) instead of keeping copies of them: the servers the tests run on
(``tests.local_servers``: the Prefect test server, the S3 keys in the environment) and the SARIF
generator (``tests.sarif_gen``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from promotion.local_s3 import weed_binary

if TYPE_CHECKING:
    import pg  # bench/pg.py, beside this module; imported where used, since it imports this one
    from mypy_boto3_s3 import S3Client

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
REPO = BENCH_DIR.parent
# A script runs as ``python bench/NAME.py``: only bench/ is on the path, and the installed project
# does not include the test suite, whose helpers (``tests.sarif_gen``) the scripts reuse.
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))


class BenchError(RuntimeError):
    """A measurement did not measure what it claims, or a server or a side could not be set up."""


# -- machine facts ---------------------------------------------------------------------------------


def package_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or ``None`` when it is not installed."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def seaweedfs_version() -> str:
    """The first line of ``weed version`` (``"unknown (...)"`` when it cannot be run)."""
    try:
        return subprocess.run(
            [weed_binary(), "version"], capture_output=True, text=True, timeout=20, check=False
        ).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError) as exc:
        return f"unknown ({exc})"


def machine_facts(packages: Sequence[str], *, nested_loadavg: bool = False) -> dict[str, Any]:
    """Date, CPUs, memory, load average, platform, Python, ``packages``' versions, SeaweedFS.

    The load average at start is ``"loadavg_at_start"``, or ``"loadavg": {"start": ...}`` with
    ``nested_loadavg`` (for a script that records it at several points). The versions of
    ``packages`` follow ``"python"`` in the given order, keyed by package name.
    """
    weed = seaweedfs_version()
    loadavg = os.getloadavg()
    return {
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "mem_total_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        **({"loadavg": {"start": loadavg}} if nested_loadavg else {"loadavg_at_start": loadavg}),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        **{p: package_version(p) for p in packages},
        "seaweedfs": weed,
    }


# -- statistics ------------------------------------------------------------------------------------


def percentile(samples: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), ``p`` in 0..100."""
    if not samples:
        return math.nan
    xs = sorted(samples)
    pos = (len(xs) - 1) * p / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(samples: Sequence[float]) -> float:
    """The 50th percentile (``nan`` for no samples)."""
    return percentile(samples, 50)


def latency_summary(samples_s: Sequence[float], keep: bool = True) -> dict[str, Any]:
    """n, p50/p99/mean/max in milliseconds of samples in seconds; the samples too with ``keep``."""
    ms = [s * 1000 for s in samples_s]
    out: dict[str, Any] = {
        "n": len(ms),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "mean_ms": sum(ms) / len(ms) if ms else math.nan,
        "max_ms": max(ms) if ms else math.nan,
    }
    if keep:
        out["samples_ms"] = [round(x, 3) for x in ms]
    return out


# -- counting requests ----------------------------------------------------------------------------

#: A UUID, as Prefect's API paths carry them: replaced by a placeholder to group requests by route.
UUID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass
class S3RequestCounter:
    """S3 requests of the clients it is attached to, by operation (``PutObject``...).

    ``calls`` counts API calls once each (botocore ``after-call``, after its retries), and
    ``precondition_failed`` those answered 412; ``attempts`` counts every HTTP request sent
    (``before-send``: retries included).
    """

    calls: Counter[str] = field(default_factory=Counter)
    precondition_failed: Counter[str] = field(default_factory=Counter)
    attempts: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def attach(self, client: S3Client) -> None:
        client.meta.events.register("after-call.s3", self._after_call)
        client.meta.events.register("before-send.s3", self._before_send)

    def _after_call(self, http_response: Any, model: Any, **_: Any) -> None:
        with self._lock:
            self.calls[model.name] += 1
            if http_response.status_code == 412:
                self.precondition_failed[model.name] += 1

    def _before_send(self, event_name: str, **_: Any) -> None:
        with self._lock:
            self.attempts[event_name.rsplit(".", 1)[-1]] += 1

    def take_attempts(self) -> Counter[str]:
        """The attempts counted so far, and count afresh from zero."""
        with self._lock:
            out, self.attempts = self.attempts, Counter()
        return out


# -- running both sides --------------------------------------------------------------------------

Ours = TypeVar("Ours")
Baseline = TypeVar("Baseline")


def paired(i: int, ours: Callable[[], Ours], baseline: Callable[[], Baseline]) -> tuple[Ours, Baseline]:
    """Run both sides back to back, ours first on even ``i`` and baseline first on odd ``i``
    (so that neither always gets the warmer caches or the quieter machine); both results."""
    if i % 2 == 0:
        a = ours()
        b = baseline()
    else:
        b = baseline()
        a = ours()
    return a, b


# -- report lines ----------------------------------------------------------------------------------


def fmt_samples(xs: Sequence[float], scale: float = 1.0) -> str:
    """Samples times ``scale``, 3 decimals, separated by spaces."""
    return " ".join(f"{x * scale:.3f}" for x in xs)


def rounded_load(loadavg: Sequence[float]) -> tuple[float, ...]:
    """A load average rounded to 2 decimals, as the reports print it (a tuple)."""
    return tuple(round(x, 2) for x in loadavg)


class RecordsChecks:
    """``check()`` for a script's ``Bench``: records into ``self.checks`` (a list the class
    defines) what :func:`render_checks` prints and the JSON keeps; with ``print_failures`` it
    prints a failed check at once too (for long runs)."""

    checks: list[dict[str, Any]]
    print_failures: ClassVar[bool] = False

    def check(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append({"name": name, "ok": ok, "detail": detail})
        if not ok and self.print_failures:
            print(f"  check FAILED: {name}: {detail}", flush=True)
        return ok


def render_checks(
    checks: Sequence[Mapping[str, Any]], add: Callable[[str], None], every: bool = False
) -> None:
    """``checks: K/N ok``, then each failed check (each check, marked, with ``every``)."""
    failed = [c for c in checks if not c["ok"]]
    add(f"checks: {len(checks) - len(failed)}/{len(checks)} ok")
    for c in checks if every else failed:
        mark = ("ok    " if c["ok"] else "FAILED") if every else "FAILED"
        add(f"  {mark} {c['name']}: {c['detail']}")


def load_and_total_line(machine: Mapping[str, Any], total_s: float) -> str:
    """The last line of a report: load average at end (``loadavg_at_end``) and the total time."""
    return f"load average at end {rounded_load(machine['loadavg_at_end'])}; total {total_s:.1f} s"


# -- running ---------------------------------------------------------------------------------------


def fill_defaults(args: argparse.Namespace, quick: Mapping[str, Any], full: Mapping[str, Any]) -> None:
    """Set each argument still ``None`` to its ``quick`` value with ``--quick``, else its ``full`` one."""
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def write_random_file(path: Path, size: int, chunk: int = 4 * 2**20) -> None:
    """``size`` random bytes (incompressible, never seen before) into ``path``, ``chunk`` at a time."""
    with path.open("wb") as f:
        left = size
        while left:
            n = min(chunk, left)
            f.write(os.urandom(n))
            left -= n


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (the OS's pick)."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = 10) -> None:
    """SIGTERM to the process group of ``proc`` (started in its own session), SIGKILL after
    ``grace_s`` seconds; then SIGKILL to whatever it left in its group."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used so far (``/proc/PID/stat``): what a
    server that shares the benchmark's cores spent meanwhile."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM handler: unwinds through the context managers, so the servers stop."""
    raise SystemExit(128 + signum)


def quiet_prefect_console() -> None:
    """Raise Prefect's console log handlers to WARNING (the logs still go to the API)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    for lg in loggers:
        for h in lg.handlers:
            if isinstance(h, PrefectConsoleHandler):
                h.setLevel(logging.WARNING)


SQLITE_DESCRIPTION = "prefect_test_harness(server_startup_timeout=180): uvicorn subprocess, SQLite"
POSTGRES_SERVER_DESCRIPTIONS: dict[pg.ServerMode, str] = {
    "harness": "uvicorn subprocess as prefect_test_harness starts it (no UI, ephemeral services)",
    "cli": "prefect server start (UI and every background service)",
}


@dataclass
class PrefectUnderTest:
    """The Prefect server a benchmark talks to; ``postgres`` is its database when not SQLite."""

    api_url: str
    description: str
    postgres: pg.LocalPostgres | None = None


@contextmanager
def prefect_on(database: str, postgres_server: pg.ServerMode = "harness") -> Iterator[PrefectUnderTest]:
    """A Prefect server on ``database`` that this process's client talks to, stopped on exit.

    ``"sqlite"``: the tests' server (:func:`tests.local_servers.prefect_test_server`); otherwise a
    PostgreSQL (``bench/pg.py``) and a Prefect server on it started as ``postgres_server`` says.
    """
    import pg

    from tests.local_servers import prefect_test_server  # on the path from the top of this module

    if database == "sqlite":
        with prefect_test_server() as api_url:
            yield PrefectUnderTest(api_url, SQLITE_DESCRIPTION)
        return
    started = POSTGRES_SERVER_DESCRIPTIONS[postgres_server]
    with pg.local_postgres(database="prefect") as db:
        print(
            f"PostgreSQL {db.version} at 127.0.0.1:{db.port} (data in {db.root}); starting a Prefect server "
            "on it (migrations, ~20-30 s)...",
            flush=True,
        )
        with pg.prefect_server(db.url(), postgres_server) as server, pg.use_prefect_api(server.api_url):
            yield PrefectUnderTest(
                server.api_url,
                f"{started}, PostgreSQL {db.version} (postgresql+asyncpg, initdb defaults)",
                db,
            )


def write_results(out: Path, res: Mapping[str, Any], default: Callable[[Any], Any] | None = None) -> None:
    """Write ``res`` as indented JSON to ``out`` (parents created), then print ``wrote OUT``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, default=default) + "\n", encoding="utf-8")
    print(f"\nwrote {out}")
