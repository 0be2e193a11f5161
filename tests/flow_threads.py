"""A flow run in a background thread, for the flow tests and the benchmarks (issue 9, near-copies).

Importing this module has no side effect and does not import Prefect: ``tests.flows.harness``
re-exports :class:`FlowThread` as ``Run`` (and turns heartbeats on when imported, which a
benchmark must not inherit); ``bench/bench_flows.py`` imports it from here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any
from uuid import UUID


class FlowThread:
    """A flow run in a background thread, as a worker would run it.

    ``fn`` is called with ``kwargs`` and ``return_state=True``; :meth:`join` returns that state or
    re-raises what the call raised. ``paused_id`` is for the caller to note the run's paused stage
    once it finds one (a clean-up can then answer it).
    """

    def __init__(self, fn: Callable[..., Any], **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.state: Any = None
        self.error: BaseException | None = None
        self.paused_id: UUID | None = None

        def target() -> None:
            try:
                self.state = fn(**kwargs, return_state=True)
            except BaseException as exc:  # noqa: BLE001 - re-raised by join(); a thread must not die silently
                self.error = exc

        self.thread = threading.Thread(target=target, name="flow-run", daemon=True)
        self.thread.start()

    def join(self, timeout: float = 120) -> Any:
        """The run's final state; :class:`TimeoutError` if it has not finished within ``timeout`` s."""
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError(f"the flow run did not finish within {timeout:.0f}s")
        if self.error is not None:
            raise self.error
        return self.state
