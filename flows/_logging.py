"""Expected outcomes are not crashes: log them as one line, without a traceback.

Prefect logs every exception that ends a flow run with its traceback. A gate that fails, a
rejected approval or a refused rollback is the product working as intended, so for
:class:`~promotion.errors.PromotionError` (and a pause timeout) the record keeps its message and
loses the traceback, in the terminal and in the run logs the UI shows.
"""

from __future__ import annotations

import logging

from prefect.exceptions import FlowPauseTimeout

from promotion.errors import PromotionError

EXPECTED = (PromotionError, FlowPauseTimeout)


class ExpectedFailureFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, EXPECTED):
            record.msg = f"{record.getMessage()} {type(exc).__name__}: {exc}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def install() -> None:
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, ExpectedFailureFilter) for f in logger.filters):
            logger.addFilter(ExpectedFailureFilter())
