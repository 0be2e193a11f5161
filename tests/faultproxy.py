"""A small HTTP reverse proxy in front of the S3 server, to inject faults on the real HTTP stack.

Rules match a method and a path regex (searched in the request line's path, query included) and
act ``times`` times (``times=-1``: always):

- ``status``: answer ``status`` without forwarding (the request body is read and dropped);
- ``slowdown``: answer 503 with S3's XML ``SlowDown`` error body, as a throttled S3 does (botocore
  retries it as throttling);
- ``reset``: close the client's connection with a TCP reset, before forwarding anything;
- ``delay``: wait ``delay_s``, then forward;
- ``drop_response``: forward, let the server act on it, then close the client's connection
  without answering (the client cannot know whether the write landed);
- ``hold``: do not forward; set ``rule.arrived`` and block until ``rule.release()`` (or the proxy
  shuts down), then forward, or with ``then="reset"`` reset the connection. A test uses it to stop
  a client exactly at one request, e.g. to change a file or kill -9 the process there.

``proxy.random_faults(rate, seed, kinds, methods, path)`` gives each matching request (that no
rule took) a fault with probability ``rate``, drawn from a seeded generator; ``proxy.stats`` counts
injected faults by kind. Bodies are streamed both ways (Content-Length, chunked, and aws-chunked
inside either), so large uploads and downloads go through without being held in memory.
"""

from __future__ import annotations

import http.client
import random
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from promotion.config import Pipeline
    from promotion.local_s3 import LocalS3

ACTIONS = ("status", "slowdown", "reset", "delay", "drop_response", "hold")
COPY_CHUNK = 1024 * 1024
SLOWDOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message>"
    b"<RequestId>faultproxy</RequestId></Error>"
)
# Headers that describe one hop, not the message: never copied from one side to the other.
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "expect", "proxy-connection"}


@dataclass
class Rule:
    method: str
    path: str
    action: str  # one of ACTIONS
    status: int = 503
    times: int = 1
    hits: int = 0
    delay_s: float = 1.0
    then: str = "forward"  # after a hold: "forward" or "reset"
    arrived: threading.Event = field(default_factory=threading.Event)
    _released: threading.Event = field(default_factory=threading.Event, repr=False)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}; known: {', '.join(ACTIONS)}")
        if self.then not in ("forward", "reset"):
            raise ValueError(f"then must be 'forward' or 'reset', not {self.then!r}")

    def release(self) -> None:
        """Let the held request(s) go on."""
        self._released.set()

    def wait_arrived(self, timeout: float = 30.0) -> None:
        if not self.arrived.wait(timeout):
            raise TimeoutError(f"no {self.method} matching {self.path!r} arrived within {timeout} s")


@dataclass
class _Random:
    rate: float
    rng: random.Random
    kinds: tuple[str, ...]
    methods: frozenset[str] | None
    path: str | None
    delay_s: float


@dataclass
class FaultProxy:
    upstream: str
    rules: list[Rule] = field(default_factory=list)
    log: list[tuple[str, str, int]] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        up = urlsplit(self.upstream)
        self._up_host, self._up_port = up.hostname or "127.0.0.1", up.port or 80
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._random: _Random | None = None
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _copy_body(self, sink: socket.socket | None) -> None:
                """Stream the request body to ``sink`` (None: read and drop it), framing kept."""

                def out(data: bytes) -> None:
                    if sink is not None:
                        sink.sendall(data)

                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    while True:
                        line = self.rfile.readline(65537)
                        out(line)
                        size = int(line.split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            # trailers (aws-chunked checksums may sit here) until a blank line
                            while True:
                                t = self.rfile.readline(65537)
                                out(t)
                                if t in (b"\r\n", b"\n", b""):
                                    return
                        left = size + 2  # the chunk and its CRLF
                        while left:
                            data = self.rfile.read(min(left, COPY_CHUNK))
                            if not data:
                                raise ConnectionError("client closed mid-body")
                            out(data)
                            left -= len(data)
                left = int(self.headers.get("Content-Length") or 0)
                while left:
                    data = self.rfile.read(min(left, COPY_CHUNK))
                    if not data:
                        raise ConnectionError("client closed mid-body")
                    out(data)
                    left -= len(data)

            def _reset(self) -> None:
                # SO_LINGER 0: close() sends RST, the client sees "connection reset by peer".
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()

            def _answer(self, status: int, body: bytes, content_type: str = "application/xml") -> None:
                self._copy_body(None)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self) -> None:
                rule = proxy._match(self.command, self.path)
                action = rule.action if rule else None
                if rule is not None and action == "hold":
                    rule.arrived.set()
                    while not rule._released.wait(0.05) and not proxy._closing.is_set():
                        pass
                    if rule.then == "reset" or proxy._closing.is_set():
                        proxy._record(self.command, self.path, -1)
                        return self._reset()
                if rule is not None and action == "reset":
                    proxy._record(self.command, self.path, -1)
                    return self._reset()
                if rule is not None and action == "status":
                    proxy._record(self.command, self.path, rule.status)
                    return self._answer(rule.status, b"")
                if rule is not None and action == "slowdown":
                    proxy._record(self.command, self.path, 503)
                    return self._answer(503, SLOWDOWN_BODY)
                if rule is not None and action == "delay":
                    time.sleep(rule.delay_s)  # the injected fault itself, not synchronisation
                self._forward(drop_response=action == "drop_response")

            def _forward(self, *, drop_response: bool) -> None:
                conn = http.client.HTTPConnection(proxy._up_host, proxy._up_port, timeout=120)
                try:
                    conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    for k, v in self.headers.items():
                        if k.lower() not in ("connection", "expect", "proxy-connection", "keep-alive"):
                            conn.putheader(k, v)
                    conn.endheaders()
                    assert conn.sock is not None
                    self._copy_body(conn.sock)
                    resp = conn.getresponse()
                    if drop_response:
                        resp.read()
                        proxy._record(self.command, self.path, resp.status)
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    proxy._record(self.command, self.path, resp.status)
                    length = resp.getheader("Content-Length")
                    body: bytes | None = None
                    if length is None and self.command != "HEAD":
                        body = resp.read()  # upstream chunked: small answers (errors, listings)
                    self.send_response(resp.status)
                    for k, v in resp.getheaders():
                        if k.lower() not in _HOP:
                            self.send_header(k, v)
                    if body is not None:
                        self.send_header("Content-Length", str(len(body)))
                    elif length is not None:
                        # HEAD keeps the object's length: botocore reads ContentLength from it.
                        self.send_header("Content-Length", length)
                    self.end_headers()
                    if body is not None:
                        self.wfile.write(body)
                    elif self.command != "HEAD":
                        while data := resp.read(COPY_CHUNK):
                            self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _record(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.log.append((method, path, status))

    def _match(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if (
                    rule.method == method
                    and re.search(rule.path, path)
                    and (rule.times < 0 or rule.hits < rule.times)
                ):
                    rule.hits += 1
                    self.stats[rule.action] += 1
                    return rule
            rnd = self._random
            if rnd is None or (rnd.methods is not None and method not in rnd.methods):
                return None
            if rnd.path is not None and not re.search(rnd.path, path):
                return None
            # Two draws per matching request, whatever the outcome, keep the sequence reproducible.
            hit, kind = rnd.rng.random() < rnd.rate, rnd.rng.choice(rnd.kinds)
            if not hit:
                return None
            self.stats[kind] += 1
            return Rule(method, path, kind, times=1, hits=1, delay_s=rnd.delay_s)

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def random_faults(
        self,
        rate: float = 0.2,
        seed: int = 1234,
        kinds: Sequence[str] = ("slowdown", "reset", "drop_response", "delay"),
        methods: Sequence[str] | None = None,
        path: str | None = None,
        delay_s: float = 0.2,
    ) -> None:
        """Give each matching request a fault with probability ``rate`` (0 turns it off)."""
        bad = [k for k in kinds if k not in ACTIONS or k == "hold"]
        if bad:
            raise ValueError(f"random faults cannot be {bad}; choose from {ACTIONS[:-1]}")
        with self._lock:
            self._random = (
                _Random(
                    rate,
                    random.Random(seed),
                    tuple(kinds),
                    frozenset(methods) if methods is not None else None,
                    path,
                    delay_s,
                )
                if rate > 0
                else None
            )

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self.server.shutdown()
        self.server.server_close()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # A client that vanished (killed, or a connection this proxy reset on purpose) is the
        # point of the exercise, not an error to print.
        pass


def proxied_pipeline(s3_server: LocalS3, prefix: str, proxy: FaultProxy) -> Pipeline:
    """The test pipeline (services api and web) on ``s3_server``'s bucket, reached through ``proxy``."""
    from tests.conftest import make_pipeline

    return make_pipeline(proxy.url, s3_server.bucket, prefix)
