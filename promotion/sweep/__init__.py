"""The nightly sweep's steps, without Prefect: what to promote, what drifted, what rotted, what may go.

The steps are here; the order of the night is ``flows.sweep.nightly_sweep``'s (one Prefect task per
step): :func:`sweep_services`, :func:`correct_all`, :func:`run_retention`, :func:`runs_to_start`.

Per service (:func:`sweep_service`), in this order:

1. **State** from the ledger's last record (:meth:`Ledger.tip`: 3 requests whatever its length).
2. **History index**: what the sweep remembers of the ledger (every digest an environment ever
   ran, rejections and rollbacks, publish times and evidence), stored at
   ``{prefix}sweep/index/{service}.json`` together with the sequence number and hash of the last
   record it folded in. Each night only the records appended since are read, and they must chain
   onto that hash; otherwise the index is rebuilt from the whole ledger (and the report says so).
   It is a cache derived from the ledger, never a source of truth: deleting it costs one full read.
3. **Re-verify**: every digest an environment runs, and a first-stage candidate, is re-hashed in
   full. A corrupted one is recorded as a ``flagged`` ledger event (never promoted again); so is
   one whose evidence expired (``max_age`` on an evidence gate of an environment it runs in).
4. **Drift**: an environment's copy (``target.copy_to``) is compared with the ledger's digest.
5. **Decisions**: for each environment with ``auto_promote``, the digest of the previous
   environment (for the first one, the latest published) is proposed when every pre-deploy gate
   passes now: ``promote``, or ``open_approval`` when the stage has an approval policy; else
   ``skip`` with the reason.

Across services (:func:`run_retention`): blobs under ``{prefix}blobs/sha256/`` that nothing
references and that are older than ``sweep.retention`` are listed, and deleted only with
``apply``. Referenced means: running in an environment, the latest published, every digest an
environment ever ran (a rollback may return to it), digests with approval decisions, and the
evidence of all of these and of every artifact young enough to keep. When anything is unclear (a
ledger that cannot be read, artifacts of a service without a ledger), nothing is deleted.

Dry run reads only: no ledger writes, no index writes, no copies, no deletes.

Modules: ``report`` (the report's models), ``index`` (the history index), ``records`` (artifact
records read once), ``verify`` (re-check and flag), ``drift`` (find and correct), ``decisions``
(promote what soaked), ``retention`` (references, blobs that may go), ``service`` (one service,
and all of them in parallel), ``runs`` (the pipeline runs to start).
"""

from __future__ import annotations

from promotion.sweep.drift import correct_all, correct_drift
from promotion.sweep.index import HistoryIndex, fold, index_key, load_index, save_index, update_index
from promotion.sweep.report import (
    ACTOR,
    BlobAction,
    BlobVerdict,
    Check,
    CheckOutcome,
    DecisionAction,
    DriftAction,
    DriftFinding,
    PublishedRef,
    RetentionReport,
    ServiceRefs,
    ServiceReport,
    SweepDecision,
    SweepPipelineRun,
    SweepReport,
)
from promotion.sweep.retention import (
    MIN_RETENTION,
    BlobObject,
    list_blobs,
    plan_retention,
    run_retention,
)
from promotion.sweep.runs import runs_to_start, sweep_date
from promotion.sweep.service import sweep_service, sweep_services

__all__ = [
    "ACTOR",
    "MIN_RETENTION",
    "BlobAction",
    "BlobObject",
    "BlobVerdict",
    "Check",
    "CheckOutcome",
    "DecisionAction",
    "DriftAction",
    "DriftFinding",
    "HistoryIndex",
    "PublishedRef",
    "RetentionReport",
    "ServiceRefs",
    "ServiceReport",
    "SweepDecision",
    "SweepPipelineRun",
    "SweepReport",
    "correct_all",
    "correct_drift",
    "fold",
    "index_key",
    "list_blobs",
    "load_index",
    "plan_retention",
    "run_retention",
    "runs_to_start",
    "save_index",
    "sweep_date",
    "sweep_service",
    "sweep_services",
    "update_index",
]
