"""Flow-run heartbeats, so that a run whose process died is marked Crashed, not left Running.

Prefect 3.9's flow engine (``prefect/flow_engine.py``, ``_send_heartbeats``) emits a
``prefect.flow-run.heartbeat`` event every ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds (at least
30; default 180) from a thread of the process that runs the flow, for every flow run it executes
in-process: top-level runs and subflows alike, paused ones included (the process is still there).
The runner (``promote serve``) and workers pass the setting on to the runs they start.

Heartbeats alone change nothing: ``promote setup`` creates the automation that expects another
heartbeat (or a final state) within ``CRASH_AFTER_S`` of each heartbeat and otherwise sets the run
Crashed (``flows/setup.py``). The window must exceed the frequency, or healthy runs would be
crashed: the automation only matches this product's flows, whose processes run with
``HEARTBEAT_S`` (``promote run`` and ``promote serve`` set it unless it is set already, and
``deployments/prefect.yaml`` passes it to work-pool runs).

Prefect is not imported here: the setting must be in the environment before Prefect loads its
settings, i.e. before ``import prefect``.
"""

from __future__ import annotations

import os

#: Seconds between heartbeats (Prefect's minimum).
HEARTBEAT_S = 30
#: A run that missed three heartbeats in a row is presumed dead.
CRASH_AFTER_S = 3 * HEARTBEAT_S

_SETTING = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"
_LEGACY = "PREFECT_RUNNER_HEARTBEAT_FREQUENCY"


def enable() -> None:
    """Turn heartbeats on at ``HEARTBEAT_S`` for the flow runs of this process and its children,
    unless the operator chose a frequency (under either of Prefect's names)."""
    if not os.environ.get(_SETTING) and not os.environ.get(_LEGACY):
        os.environ[_SETTING] = str(HEARTBEAT_S)
