"""A real Prefect server of its own that requires basic auth (``PREFECT_SERVER_API_AUTH_STRING``).

Shared by the test modules that need one: each wraps :func:`auth_prefect_server` in a
module-scoped fixture (a server costs ~20 s to start here, so one per module, not per test).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

#: The one shared credential of the server, ``user:password`` as Prefect expects it.
AUTH = "admin:s3cret-pass"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def basic_auth(credential: str = AUTH) -> tuple[str, str]:
    user, _, password = credential.partition(":")
    return user, password


@contextmanager
def auth_prefect_server(home: Path, timeout: float = 180) -> Iterator[str]:
    """Start ``prefect server start`` (SQLite in ``home``) requiring :data:`AUTH`; yield its API URL."""
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_API_AUTH_STRING": AUTH,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    env.pop("PREFECT_API_AUTH_STRING", None)
    log_path = home / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}/api"
        try:
            deadline = time.monotonic() + timeout
            while True:
                assert proc.poll() is None, log_path.read_text()[-3000:]
                try:
                    if httpx.get(f"{url}/admin/version", auth=basic_auth(), timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the Prefect server with basic auth did not start"
                time.sleep(0.5)  # polling the server for readiness, with a deadline
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
