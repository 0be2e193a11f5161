"""A throw-away PostgreSQL server and a Prefect server on it, for the benchmarks.

``local_postgres()`` installs Debian's PostgreSQL server when no ``initdb`` is found (as root:
``apt-get update -qq && apt-get install -y -qq postgresql``), runs ``initdb --auth=trust`` as the
``postgres`` OS user into a temporary directory owned by that user, starts the server with
``pg_ctl`` on a free 127.0.0.1 port (its Unix socket in the same directory), creates one
database, and on exit (Ctrl-C and SIGTERM included, as long as they unwind the ``with``) stops it
with ``pg_ctl stop -m fast`` and deletes the directory.

``prefect_server()`` starts a Prefect server subprocess on that database
(``PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://postgres@127.0.0.1:PORT/DB``,
``PREFECT_HOME`` in a temporary directory, analytics off), waits for ``GET /api/health`` = 200,
and stops the server's whole process group on exit. Two ways to start it:

* ``"harness"``: the very command and settings ``prefect_test_harness`` uses for its SQLite
  server (uvicorn on ``prefect.server.api.server:create_app`` with ``PREFECT__SERVER_EPHEMERAL=1``:
  no UI, only the services an ephemeral server runs), so that a comparison with the harness
  differs in the database only;
* ``"cli"``: ``prefect server start --host 127.0.0.1 --port P``: UI and every background
  service (scheduler, late runs, foreman, ...), as a self-hosted server runs in production.

``use_prefect_api(url)`` points this process's Prefect client at a server: Prefect reads its
settings once at import, so setting ``os.environ["PREFECT_API_URL"]`` afterwards has no effect;
``temporary_settings`` does, and the global settings context makes threads started later (flow
runs in threads) see it too. It is what ``prefect_test_harness`` does for its own server.
"""

from __future__ import annotations

import contextlib
import glob
import inspect
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
from _common import free_port, stop_group

ServerMode = Literal["harness", "cli"]
SERVER_MODES: tuple[ServerMode, ...] = ("harness", "cli")
PG_USER = "postgres"


class PostgresError(RuntimeError):
    """PostgreSQL or the Prefect server on it could not be installed, started or reached."""


def _is_root() -> bool:
    return os.geteuid() == 0


def _as_postgres(cmd: Sequence[str]) -> list[str]:
    """Run as the ``postgres`` OS user when root (PostgreSQL refuses to run as root)."""
    return ["runuser", "-u", PG_USER, "--", *cmd] if _is_root() else list(cmd)


def _run(cmd: Sequence[str], what: str, timeout: float, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(
            list(cmd),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=cwd,
            start_new_session=True,  # a Ctrl-C on the terminal reaches us only; we stop it in order
        )
    except subprocess.TimeoutExpired as exc:
        raise PostgresError(f"{what}: no answer in {timeout:.0f} s") from exc
    if done.returncode != 0:
        raise PostgresError(f"{what} failed ({done.returncode}): {(done.stderr or done.stdout).strip()}")
    return done.stdout


def postgres_bin_dir(install: bool = True) -> Path:
    """The newest installed ``/usr/lib/postgresql/N/bin``; installs Debian's server if none."""

    def found() -> list[Path]:
        dirs = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
        return sorted(dirs, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)

    dirs = found()
    if not dirs and install:
        if not _is_root():
            raise PostgresError("no PostgreSQL server found; install it: apt-get install -y postgresql")
        print("installing PostgreSQL (apt-get install postgresql)...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "postgresql"]):
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, check=False)
            if done.returncode != 0:
                raise PostgresError(f"{' '.join(cmd)} failed: {done.stderr.strip()[-2000:]}")
        dirs = found()
    if not dirs:
        raise PostgresError("no /usr/lib/postgresql/*/bin/initdb")
    return dirs[-1]


@dataclass
class LocalPostgres:
    bin_dir: Path
    root: Path
    port: int
    database: str

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    @property
    def version(self) -> str:
        return self.bin_dir.parent.name

    def url(self, driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://{PG_USER}@127.0.0.1:{self.port}/{self.database}"

    def tool(self, name: str, *args: str) -> list[str]:
        return _as_postgres([str(self.bin_dir / name), *args])

    def sql(self, query: str, timeout: float = 30) -> str:
        """One query through ``psql`` (unaligned, tuples only)."""
        cmd = self.tool(
            "psql",
            "-h",
            str(self.root),
            "-p",
            str(self.port),
            "-U",
            PG_USER,
            "-d",
            self.database,
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            query,
        )
        return _run(cmd, "psql", timeout, cwd=self.root).strip()

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        """``pg_ctl stop -m fast``; if that fails, SIGQUIT (immediate shutdown) to the postmaster."""
        if self._postmaster_pid() is None:
            return
        try:
            _run(
                self.tool("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "30", "stop"),
                "pg_ctl stop",
                60,
                cwd=self.root,
            )
        except PostgresError as exc:
            pid = self._postmaster_pid()
            print(f"warning: {exc}; sending SIGQUIT to postmaster {pid}", file=sys.stderr)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGQUIT)
                    time.sleep(2)


@contextlib.contextmanager
def local_postgres(database: str = "prefect", install: bool = True) -> Iterator[LocalPostgres]:
    bin_dir = postgres_bin_dir(install)
    root = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    pg = LocalPostgres(bin_dir=bin_dir, root=root, port=free_port(), database=database)
    try:
        if _is_root():
            user = pwd.getpwnam(PG_USER)
            os.chown(root, user.pw_uid, user.pw_gid)
        root.chmod(0o700)
        _run(
            pg.tool(
                "initdb",
                "-D",
                str(pg.data_dir),
                "-U",
                PG_USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ),
            "initdb",
            180,
            cwd=root,
        )
        opts = f"-k {root} -p {pg.port} -c listen_addresses=127.0.0.1"
        _run(
            pg.tool(
                "pg_ctl",
                "-D",
                str(pg.data_dir),
                "-l",
                str(pg.log_file),
                "-o",
                opts,
                "-w",
                "-t",
                "60",
                "start",
            ),
            "pg_ctl start",
            120,
            cwd=root,
        )
        _run(
            pg.tool("createdb", "-h", str(root), "-p", str(pg.port), "-U", PG_USER, database),
            "createdb",
            60,
            cwd=root,
        )
        yield pg
    finally:
        try:
            pg.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)


@dataclass
class PrefectServer:
    mode: ServerMode
    api_url: str
    process: subprocess.Popen[bytes]
    log_file: Path

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _server_command(mode: ServerMode, port: int) -> tuple[list[str], dict[str, str]]:
    import prefect
    from prefect.settings import get_current_settings

    if mode == "harness":  # as prefect.server.api.server.SubprocessASGIServer._run_uvicorn_command
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(prefect.__module_path__.parent),
            "--factory",
            "prefect.server.api.server:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "error",
            "--lifespan",
            "on",
        ]
        extra = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        env = {**os.environ, **extra, **get_current_settings().to_environment_variables(exclude_unset=True)}
    else:
        cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
        env = dict(os.environ)
    return cmd, env


@contextlib.contextmanager
def prefect_server(
    database_url: str, mode: ServerMode = "harness", timeout: float = 300
) -> Iterator[PrefectServer]:
    """A Prefect server subprocess on ``database_url``; stopped (its process group) on exit."""
    home = Path(tempfile.mkdtemp(prefix="bench-prefect-home-"))
    port = free_port()
    cmd, env = _server_command(mode, port)
    for k in [k for k in env if k.endswith("DATABASE_CONNECTION_URL") or k == "PREFECT_API_URL"]:
        del env[k]  # no alias of the database URL from the environment or a profile may win over ours
    env.update(
        PREFECT_API_DATABASE_CONNECTION_URL=database_url,
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    log_file = home / "server.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        with log_file.open("wb") as log:
            proc = subprocess.Popen(
                cmd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=home,
                start_new_session=True,
            )
        server = PrefectServer(
            mode=mode, api_url=f"http://127.0.0.1:{port}/api", process=proc, log_file=log_file
        )
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=5) as client:
            while True:
                if proc.poll() is not None:
                    raise PostgresError(
                        f"the Prefect server exited with {proc.returncode}:\n{server.log_tail()}"
                    )
                try:
                    if client.get(f"{server.api_url}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise PostgresError(
                        f"the Prefect server was not healthy in {timeout:.0f} s:\n{server.log_tail()}"
                    )
                time.sleep(0.2)  # polling a starting server for health, with a deadline
        yield server
    finally:
        if proc is not None:
            stop_group(proc)
        shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def use_prefect_api(api_url: str) -> Iterator[None]:
    """Point this process's Prefect client (every thread) at ``api_url``; drain logs/events on exit."""
    import prefect.context
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings(updates={PREFECT_API_URL: api_url}),
        prefect.context._temporary_global_settings_context(prefect.context.get_settings_context()),
    ):
        try:
            yield
        finally:
            _drain_workers()


def _drain_workers() -> None:
    """Send buffered logs and events before the server goes (as ``prefect_test_harness`` does)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:
        with contextlib.suppress(RuntimeError):  # the worker was never started
            result = APILogWorker.instance().drain()
            if inspect.isawaitable(result):
                await result
        events = EventsWorker.drain_all()
        if inspect.isawaitable(events):
            await events

    try:
        run_coro_as_sync(drain())
    except Exception as exc:  # noqa: BLE001 - best effort on the way out
        print(f"warning: draining Prefect logs/events failed: {exc}", file=sys.stderr)
