"""Every Prefect command of the CLI fails in one line, exit 1, when Prefect is unreachable or refuses.

Run as a user runs them (a subprocess), against: nothing listening; a real Prefect server started
with basic auth (``PREFECT_SERVER_API_AUTH_STRING``) and a missing or wrong credential; a server
of another API version. stdout and stderr are both checked: one line on stderr, nothing else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from promotion.local_s3 import LocalS3
from tests.prefect_auth import AUTH, auth_prefect_server

DIGEST = "sha256:" + "ab" * 32
RUN_ID = str(uuid.UUID(int=7))
#: Every command that talks to Prefect, with arguments that pass its own input checks.
PREFECT_COMMANDS: list[list[str]] = [
    ["run", "api", DIGEST],
    ["run", "api", DIGEST, "--dry-run"],
    ["approve", RUN_ID, "--as", "alice"],
    ["reject", RUN_ID, "--as", "alice", "--reason", "no"],
    ["rollback", "api", "--env", "dev"],
    ["setup"],
    ["sweep"],
    ["sweep", "--dry-run"],
    ["serve"],
    ["webhook", "serve", "--port", "0"],
]


@pytest.fixture
def cli_config(tmp_path: Path, s3_server: LocalS3, prefix: str) -> Path:
    """A pipeline file on the real S3 server (setup checks the bucket before Prefect)."""
    path = tmp_path / "promotion.yaml"
    path.write_text(
        f"""
store: {{endpoint_url: "{s3_server.endpoint_url}", bucket: {s3_server.bucket}, prefix: "{prefix}"}}
services: [{{name: api}}]
environments: [{{name: dev}}, {{name: prod}}]
webhooks: {{sources: {{standard: {{secret_env: PROMOTION_TEST_WEBHOOK_SECRET}}}}}}
"""
    )
    return path


def promote(config: Path, args: list[str], **env: str | None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PROMOTION_TEST_WEBHOOK_SECRET": "whsec_" + "A" * 32}
    for k, v in env.items():
        if v is None:
            full.pop(k, None)
        else:
            full[k] = v
    return subprocess.run(
        [sys.executable, "-m", "promotion.cli", "-c", str(config), *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=180,
    )


def run_all(config: Path, **env: str | None) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every Prefect command, a few at a time (each pays Prefect's ~2.4 s import)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        done = pool.map(lambda a: promote(config, a, **env), PREFECT_COMMANDS)
        return {" ".join(a): r for a, r in zip(PREFECT_COMMANDS, done, strict=True)}


def assert_one_line(results: dict[str, subprocess.CompletedProcess[str]], start: str, *has: str) -> None:
    for cmd, r in results.items():
        shown = f"promote {cmd}: exit {r.returncode}\nstdout: {r.stdout!r}\nstderr: {r.stderr[-3000:]}"
        assert r.returncode == 1, shown
        # setup checks the bucket (S3) before Prefect and says so; nothing else prints on stdout.
        assert (
            r.stdout in ("", "ok bucket promotion-test is reachable\n") if cmd == "setup" else r.stdout == ""
        ), shown
        assert "Traceback" not in r.stderr, shown
        lines = r.stderr.splitlines()
        assert len(lines) == 1, shown
        assert lines[0].startswith(start), shown
        for text in has:
            assert text in lines[0], shown


def test_nothing_listening_every_prefect_command_one_line(cli_config: Path) -> None:
    url = "http://127.0.0.1:9/api"
    results = run_all(cli_config, PREFECT_API_URL=url, PREFECT_API_AUTH_STRING=None)
    assert_one_line(results, f"PrefectUnreachable: cannot reach the Prefect API at {url}: ")


# --- a real server with basic auth -------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Prefect server of its own (SQLite in tmp) that requires ``AUTH``; yields its API URL."""
    with auth_prefect_server(tmp_path_factory.mktemp("prefect-auth")) as url:
        yield url


@pytest.mark.parametrize("credential", [None, "admin:wrong"], ids=["missing", "wrong"])
def test_refused_authentication_every_prefect_command_one_line(
    cli_config: Path, auth_server: str, credential: str | None
) -> None:
    results = run_all(cli_config, PREFECT_API_URL=auth_server, PREFECT_API_AUTH_STRING=credential)
    assert_one_line(
        results,
        f"PrefectRefused: the Prefect API at {auth_server} refused the request: authentication was refused",
        "PREFECT_API_AUTH_STRING",
    )
    for r in results.values():
        assert "wrong" not in r.stderr and "s3cret" not in r.stderr  # no credential is echoed


def test_the_right_credential_gets_through(cli_config: Path, auth_server: str) -> None:
    """The control: the same server and command, with the credential, reach the API."""
    r = promote(cli_config, ["approve", RUN_ID, "--as", "alice"], PREFECT_API_URL=auth_server,
                PREFECT_API_AUTH_STRING=AUTH)  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert r.stderr == f"UsageError: no flow run {RUN_ID} on {auth_server}\n"


# --- a server of another API version, and a URL that is not an API -----------------------------------


@pytest.fixture
def fake_prefect() -> Iterator[str]:
    """An HTTP server answering ``/api/admin/version`` with another major version; 404 elsewhere."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _answer(self) -> None:
            if self.path.rstrip("/").endswith("/api/admin/version"):
                body, status = json.dumps("2.20.0").encode(), 200
            else:
                body, status = b'{"detail": "Not Found"}', 404
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_another_api_version_and_a_wrong_url_are_one_line(cli_config: Path, fake_prefect: str) -> None:
    for args in (["approve", RUN_ID, "--as", "alice"], ["run", "api", DIGEST]):
        r = promote(cli_config, args, PREFECT_API_URL=f"{fake_prefect}/api", PREFECT_API_AUTH_STRING=None)
        assert_one_line(
            {" ".join(args): r},
            f"PrefectRefused: the Prefect API at {fake_prefect}/api refused the request: "
            "Found incompatible versions",
        )
    wrong = f"{fake_prefect}/nope"
    r = promote(cli_config, ["approve", RUN_ID, "--as", "alice"], PREFECT_API_URL=wrong)
    assert_one_line({"approve": r}, f"PrefectUnreachable: cannot reach the Prefect API at {wrong}: HTTP 404")
