"""A stand-in deployment environment: receives signed deploy webhooks and answers health checks.

It records when each deploy request starts and ends (to show that deploys are serialized) and
checks the GitHub-style signature against the secret it was given.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass
class Deploy:
    digest: str
    body: bytes
    headers: dict[str, str]
    signed_ok: bool
    started: float
    ended: float = 0.0


@dataclass
class EnvServer:
    secret: str
    health_status: int = 200
    #: How long a deploy takes: long enough that overlapping deploys would be visible.
    deploy_seconds: float = 0.0
    deploys: list[Deploy] = field(default_factory=list)

    def __post_init__(self) -> None:
        env = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._answer(env.health_status, b"ok" if env.health_status == 200 else b"unhealthy")

            def do_POST(self) -> None:
                started = time.monotonic()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                expected = "sha256=" + hmac.new(env.secret.encode(), body, hashlib.sha256).hexdigest()
                got = self.headers.get("X-Promotion-Signature-256") or ""
                rec = Deploy(
                    digest=json.loads(body)["digest"],
                    body=body,
                    headers=dict(self.headers.items()),
                    signed_ok=hmac.compare_digest(expected, got),
                    started=started,
                )
                if env.deploy_seconds:
                    time.sleep(env.deploy_seconds)  # simulated deploy work, not synchronisation
                rec.ended = time.monotonic()
                env.deploys.append(rec)
                self._answer(
                    202 if rec.signed_ok else 401, b"accepted" if rec.signed_ok else b"bad signature"
                )

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> EnvServer:
        self.thread.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
