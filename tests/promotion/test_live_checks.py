"""Live checks against real HTTP servers on 127.0.0.1: a health endpoint and a Prometheus API."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from promotion.config import HttpCheckGate, PrometheusGate
from promotion.live_checks import check_http, check_prometheus

Answer = tuple[int, str, bytes]  # status, content type, body


@dataclass
class Server:
    """A real HTTP server in a thread; ``handle(method, path)`` decides each answer."""

    handle: Callable[[str, str], Answer]
    requests: list[tuple[str, str]] = field(default_factory=list)
    url: str = ""


@contextmanager
def serve(handle: Callable[[str, str], Answer]) -> Iterator[Server]:
    server = Server(handle)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            server.requests.append((self.command, self.path))
            status, ctype, body = server.handle(self.command, self.path)
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            if 300 <= status < 400:
                self.send_header("Location", "/login")
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the check under test stopped reading (its size limit, or its timeout)

    # The constructor binds and listens: connections made before serve_forever runs wait in the
    # backlog, so the server is usable as soon as this returns (no sleep needed).
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@contextmanager
def refused_port() -> Iterator[int]:
    """A port bound but not listening: connecting is refused, and no one else can take it."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


def http_gate(url: str, **kw: Any) -> HttpCheckGate:
    return HttpCheckGate.model_validate({"kind": "http", "url": url, **kw})


def prom_gate(url: str, query: str, op: str = "<=", threshold: float = 0.5, **kw: Any) -> PrometheusGate:
    return PrometheusGate.model_validate(
        {"kind": "prometheus", "url": url, "query": query, "op": op, "threshold": threshold, **kw}
    )


# --- http check -----------------------------------------------------------------------------


@dataclass
class Health:
    status: int = 200
    body: bytes = b'{"status": "ok"}'

    def __call__(self, method: str, path: str) -> Answer:
        return self.status, "application/json", self.body


def test_http_check_passes_on_expected_status_and_body() -> None:
    with serve(Health()) as srv:
        r = check_http(http_gate(srv.url + "/healthz", contains='"ok"', name="health"))
    assert r.passed and not r.errored
    assert (r.gate, r.kind) == ("health", "http")
    assert r.measured["status"] == 200 and r.measured["body_contains"] == "yes"
    assert r.thresholds["expect_status"] == 200
    assert srv.requests == [("GET", "/healthz")]


def test_http_check_fails_on_other_status() -> None:
    with serve(Health(status=503, body=b"warming up")) as srv:
        r = check_http(http_gate(srv.url + "/healthz"))
    assert not r.passed and not r.errored
    assert r.measured["status"] == 503
    assert "HTTP 503, expected 200" in r.reasons[0] and "warming up" in r.reasons[0]


def test_http_check_fails_when_body_lacks_text() -> None:
    with serve(Health(body=b'{"status": "degraded"}')) as srv:
        r = check_http(http_gate(srv.url + "/", contains='"ok"'))
    assert not r.passed and r.measured["body_contains"] == "no"
    assert r.reasons == [f"the body of {srv.url}/ does not contain '\"ok\"'"]


def test_http_check_expects_a_redirect_without_following_it() -> None:
    with serve(Health(status=302, body=b"")) as srv:
        assert check_http(http_gate(srv.url + "/", expect_status=302)).passed
        # A redirect (to a login page, say) is not health.
        assert not check_http(http_gate(srv.url + "/")).passed
    assert srv.requests == [("GET", "/"), ("GET", "/")]


def test_http_check_connection_refused_is_a_failed_result_not_an_exception() -> None:
    with refused_port() as port:
        r = check_http(http_gate(f"http://127.0.0.1:{port}/healthz?token=s3cr3t-t0ken"))
    assert not r.passed and r.errored
    assert r.measured["status"] is None
    assert r.reasons[0].startswith(f"cannot reach http://127.0.0.1:{port}/healthz?[redacted]")
    assert "s3cr3t-t0ken" not in json.dumps(r.model_dump())


def test_http_check_timeout_is_a_failed_result() -> None:
    release = threading.Event()

    def hang(method: str, path: str) -> Answer:
        release.wait(10)
        return 200, "text/plain", b"too late"

    with serve(hang) as srv:
        try:
            r = check_http(http_gate(srv.url + "/", timeout=0.3))
        finally:
            release.set()
    assert not r.passed and r.errored
    assert r.reasons == [f"no answer from {srv.url}/ within 0.3s"]


# --- prometheus -----------------------------------------------------------------------------


def vector(*values: tuple[dict[str, str], str]) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": m, "value": [1700000000.123, v]} for m, v in values],
        },
    }


ANSWERS: dict[str, tuple[int, Any]] = {
    "one": (200, vector(({"__name__": "error_rate", "job": "api"}, "0.02"))),
    "high": (200, vector(({"__name__": "error_rate", "job": "api"}, "0.75"))),
    "scalar": (200, {"status": "success", "data": {"resultType": "scalar", "result": [1700000000, "0.25"]}}),
    "empty": (200, vector()),
    "several_ok": (200, vector(({"pod": "a"}, "0.1"), ({"pod": "b"}, "0.2"), ({"pod": "c"}, "0.4"))),
    "several_one_bad": (200, vector(({"pod": "a"}, "0.1"), ({"pod": "b"}, "0.9"), ({"pod": "c"}, "0.4"))),
    "nan": (200, vector(({"job": "api"}, "NaN"))),
    "matrix": (200, {"status": "success", "data": {"resultType": "matrix", "result": []}}),
    "bad_query": (
        400,
        {"status": "error", "errorType": "bad_data", "error": 'parse error: unexpected "}"'},
    ),
    "bad_shape": (200, {"status": "success", "data": {"resultType": "vector", "result": [{"value": 3}]}}),
}


def prometheus(method: str, path: str) -> Answer:
    """A tiny Prometheus HTTP API: the answer depends on the query."""
    parts = urlsplit(path)
    if parts.path != "/api/v1/query":
        return 404, "text/plain", b"404 page not found"
    query = parse_qs(parts.query).get("query", [""])[0]
    if query == "not_json":
        return 200, "text/html", b"<html><body>Grafana login</body></html>"
    status, doc = ANSWERS.get(query, (200, vector(({"q": query}, "0"))))
    return status, "application/json", json.dumps(doc).encode()


@pytest.fixture
def prom() -> Iterator[Server]:
    with serve(prometheus) as srv:
        yield srv


def test_prometheus_single_value_passes(prom: Server) -> None:
    r = check_prometheus(prom_gate(prom.url, "one", "<=", 0.05))
    assert r.passed and not r.errored
    assert r.measured == {"series": 1, "value": 0.02}
    assert r.thresholds == {"query": "one", "op": "<=", "threshold": 0.05}


def test_prometheus_single_value_fails(prom: Server) -> None:
    r = check_prometheus(prom_gate(prom.url, "high", "<=", 0.05))
    assert not r.passed and not r.errored
    assert r.measured["value"] == 0.75
    assert r.reasons == ['error_rate{job="api"} = 0.75, not <= 0.05']


def test_prometheus_scalar(prom: Server) -> None:
    assert check_prometheus(prom_gate(prom.url, "scalar", ">", 0.2)).passed
    assert not check_prometheus(prom_gate(prom.url, "scalar", ">", 0.3)).passed
    assert check_prometheus(prom_gate(prom.url, "scalar", "==", 0.25)).passed


@pytest.mark.parametrize(
    ("op", "threshold", "passed"),
    [("<", 0.3, True), ("<", 0.25, False), ("<=", 0.25, True), (">=", 0.25, True), (">=", 0.3, False)],
)
def test_prometheus_operators(prom: Server, op: str, threshold: float, passed: bool) -> None:
    assert check_prometheus(prom_gate(prom.url, "scalar", op, threshold)).passed is passed


def test_prometheus_empty_vector_fails_with_no_data(prom: Server) -> None:
    r = check_prometheus(prom_gate(prom.url, "empty"))
    assert not r.passed and not r.errored
    assert r.reasons == ["query returned no data"]
    assert r.measured == {"series": 0, "value": None}


def test_prometheus_several_series_all_compared(prom: Server) -> None:
    ok = check_prometheus(prom_gate(prom.url, "several_ok", "<", 0.5))
    assert ok.passed and ok.measured == {"series": 3, "value": 0.4}  # the worst series
    bad = check_prometheus(prom_gate(prom.url, "several_one_bad", "<", 0.5))
    assert not bad.passed and bad.measured == {"series": 3, "value": 0.9}
    assert bad.reasons == ['{pod="b"} = 0.9, not < 0.5']
    # With ">" the worst series is the lowest one.
    low = check_prometheus(prom_gate(prom.url, "several_one_bad", ">", 0.2))
    assert not low.passed and low.measured["value"] == 0.1 and low.reasons == ['{pod="a"} = 0.1, not > 0.2']


def test_prometheus_nan_fails(prom: Server) -> None:
    r = check_prometheus(prom_gate(prom.url, "nan", "<=", 1))
    assert not r.passed and r.reasons == ['{job="api"} = nan, not <= 1']


def test_prometheus_query_is_sent_url_encoded(prom: Server) -> None:
    q = 'sum(rate(http_requests_total{job="api",code=~"5.."}[5m])) / sum(rate(http_requests_total[5m]))'
    check_prometheus(prom_gate(prom.url + "/", q))
    ((method, path),) = prom.requests
    assert method == "GET" and urlsplit(path).path == "/api/v1/query"
    assert parse_qs(urlsplit(path).query)["query"] == [q]


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("not_json", "with a body that is not JSON (starts '<html><body>Grafana login"),
        ("bad_query", "Prometheus refused the query (HTTP 400, status 'error'): bad_data: parse error"),
        ("matrix", "the query returned a 'matrix' result; use an instant query"),
        ("bad_shape", "unexpected Prometheus answer from"),
    ],
)
def test_prometheus_unusable_answers_are_errored(prom: Server, query: str, reason: str) -> None:
    r = check_prometheus(prom_gate(prom.url, query))
    assert not r.passed and r.errored
    assert reason in r.reasons[0]


def test_prometheus_wrong_base_url_is_errored(prom: Server) -> None:
    r = check_prometheus(prom_gate(prom.url + "/grafana", "one"))
    assert not r.passed and r.errored and "not JSON" in r.reasons[0]


def test_prometheus_unreachable_is_errored() -> None:
    with refused_port() as port:
        r = check_prometheus(prom_gate(f"http://127.0.0.1:{port}", "one"))
    assert not r.passed and r.errored
    assert r.reasons[0].startswith(f"cannot reach http://127.0.0.1:{port}/api/v1/query")
