"""Tests for the hello WSGI service."""

from __future__ import annotations

import json
import string

import pytest

from hello import application, greet, make_request_id
from hello.app import MAX_NAME_LENGTH


class _Recorder:
    """Captures what the app passes to WSGI's start_response."""

    def __init__(self) -> None:
        self.status: str | None = None
        self.headers: dict[str, str] = {}

    def __call__(self, status: str, headers: list[tuple[str, str]]) -> None:
        self.status = status
        self.headers = dict(headers)


def _call(path: str, method: str = "GET", query: str = "") -> tuple[_Recorder, dict[str, object]]:
    recorder = _Recorder()
    environ: dict[str, object] = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query}
    body = b"".join(application(environ, recorder))
    assert recorder.headers["Content-Length"] == str(len(body))
    return recorder, json.loads(body)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Ada", "Hello, Ada!"),
        ("  Grace  ", "Hello, Grace!"),
        ("", "Hello, world!"),
        ("   ", "Hello, world!"),
        (None, "Hello, world!"),
    ],
)
def test_greet(name: str | None, expected: str) -> None:
    assert greet(name) == expected


def test_greet_rejects_overlong_name() -> None:
    with pytest.raises(ValueError, match="longer than"):
        greet("x" * (MAX_NAME_LENGTH + 1))


def test_greet_accepts_name_at_limit() -> None:
    assert greet("y" * MAX_NAME_LENGTH) == f"Hello, {'y' * MAX_NAME_LENGTH}!"


def test_request_id_shape() -> None:
    rid = make_request_id()
    assert len(rid) == 12
    assert set(rid) <= set(string.ascii_lowercase + string.digits)
    assert len(make_request_id(4)) == 4


def test_healthz() -> None:
    recorder, payload = _call("/healthz")
    assert recorder.status == "200 OK"
    assert recorder.headers["Content-Type"] == "application/json"
    assert len(recorder.headers["X-Request-Id"]) == 12
    assert payload == {"status": "ok"}


def test_hello_with_name() -> None:
    recorder, payload = _call("/hello", query="name=Linus")
    assert recorder.status == "200 OK"
    assert payload == {"message": "Hello, Linus!"}


def test_hello_without_name() -> None:
    recorder, payload = _call("/hello")
    assert recorder.status == "200 OK"
    assert payload == {"message": "Hello, world!"}


def test_unknown_path_is_404() -> None:
    recorder, payload = _call("/nope")
    assert recorder.status == "404 Not Found"
    assert payload == {"error": "not found"}


def test_post_is_405() -> None:
    recorder, payload = _call("/hello", method="POST")
    assert recorder.status == "405 Method Not Allowed"
    assert payload == {"error": "method not allowed"}


def test_hello_with_overlong_name_is_400() -> None:
    recorder, payload = _call("/hello", query="name=" + "z" * (MAX_NAME_LENGTH + 1))
    assert recorder.status == "400 Bad Request"
    assert payload == {"error": f"name longer than {MAX_NAME_LENGTH} characters"}
