"""Serving the app with uvicorn: in the foreground (``promote webhooks serve``) or in a thread."""

from __future__ import annotations

import contextvars
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from promotion.config import Pipeline
from promotion.webhook.app import create_app

if TYPE_CHECKING:
    pass


# Every part of the receiver logs under the one name operators filter on (and the package's own).
logger = logging.getLogger("promotion.webhook")

DEFAULT_PORT = 8787


#: uvicorn settings shared by :func:`serve`, :func:`serve_in_thread` and the benchmark.
UVICORN_SETTINGS: dict[str, Any] = {
    "proxy_headers": False,
    "server_header": False,
    "timeout_keep_alive": 5,
}


def serve(pipeline: Pipeline, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
    """Run the receiver with uvicorn until interrupted (``promote webhook serve``)."""
    import copy

    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    # uvicorn configures only its own loggers; without this, the receiver's INFO lines (each
    # delivery accepted or ignored) would never reach the operator.
    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config["loggers"][logger.name] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    uvicorn.run(
        create_app(pipeline),
        host=host,
        port=port,
        log_level="info",
        log_config=log_config,
        **UVICORN_SETTINGS,
    )


@contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a background thread; yields the base URL (``port=0``: free port).

    The thread runs in a copy of the caller's context, so Prefect settings set by the caller
    (e.g. a test harness) apply to the app.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, log_level="warning", **UVICORN_SETTINGS)
    server = uvicorn.Server(config)
    ctx = contextvars.copy_context()
    thread = threading.Thread(
        target=ctx.run, args=(server.run,), kwargs={"sockets": [sock]}, daemon=True, name="webhook-uvicorn"
    )
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the webhook server did not start")
            time.sleep(0.01)  # waiting for uvicorn's started flag, with a deadline
        yield f"http://{host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
