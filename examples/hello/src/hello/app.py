"""A minimal WSGI "hello" service: GET /healthz and GET /hello?name=..."""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable, Iterable
from urllib.parse import parse_qs

MAX_NAME_LENGTH = 64
DEFAULT_NAME = "world"

StartResponse = Callable[[str, list[tuple[str, str]]], object]


def make_request_id(length: int = 12) -> str:
    """Return a short correlation id for log lines (not a secret, so `random` is fine)."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(random.choice(alphabet) for _ in range(length))


def greet(name: str | None = None) -> str:
    """Build the greeting for ``name``; blank or missing names fall back to the default."""
    cleaned = (name or "").strip()
    if not cleaned:
        cleaned = DEFAULT_NAME
    if len(cleaned) > MAX_NAME_LENGTH:
        raise ValueError(f"name longer than {MAX_NAME_LENGTH} characters")
    return f"Hello, {cleaned}!"


def _respond(
    start_response: StartResponse, status: str, payload: dict[str, object], request_id: str
) -> list[bytes]:
    body = json.dumps(payload, sort_keys=True).encode("utf-8")
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("X-Request-Id", request_id),
    ]
    start_response(status, headers)
    return [body]


def application(environ: dict[str, object], start_response: StartResponse) -> Iterable[bytes]:
    """WSGI entry point."""
    request_id = make_request_id()
    method = str(environ.get("REQUEST_METHOD", "GET")).upper()
    path = str(environ.get("PATH_INFO", "/")) or "/"

    if method != "GET":
        return _respond(start_response, "405 Method Not Allowed", {"error": "method not allowed"}, request_id)
    if path == "/healthz":
        return _respond(start_response, "200 OK", {"status": "ok"}, request_id)
    if path == "/hello":
        query = parse_qs(str(environ.get("QUERY_STRING", "")))
        names = query.get("name")
        try:
            message = greet(names[0] if names else None)
        except ValueError as exc:
            return _respond(start_response, "400 Bad Request", {"error": str(exc)}, request_id)
        return _respond(start_response, "200 OK", {"message": message}, request_id)
    return _respond(start_response, "404 Not Found", {"error": "not found"}, request_id)


def main(host: str = "127.0.0.1", port: int = 8000) -> None:
    from wsgiref.simple_server import make_server

    with make_server(host, port, application) as server:
        print(f"serving on http://{host}:{port}")
        server.serve_forever()


if __name__ == "__main__":
    main()
