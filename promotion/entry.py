"""The ``promote`` executable.

A publish of a large file starts its hash pass and upload first (:mod:`promotion.publish_ahead`),
before the command line (typer, pydantic, the pipeline's models) is imported; every other command
goes straight to :func:`promotion.cli.main`. Whatever the command did, the upload started ahead is
aborted at the end unless the command adopted it. Then the heap is frozen, so that the
interpreter's finalisation does not spend a quarter of a second collecting it.
"""

from __future__ import annotations

import gc
import sys


def main() -> None:
    from promotion import publish_ahead

    ahead = publish_ahead.start(sys.argv[1:])
    if ahead is not None:
        # The CLI's start-up now runs while the parts are sent, on the same two cores as the S3
        # server: its CPU is the upload's. Importing and building pydantic's models makes many
        # objects but little cyclic garbage, so the cyclic collector is off until the command
        # begins its upload (promotion.cli turns it back on): ~50 ms less CPU per publish.
        gc.disable()
    try:
        from promotion.cli import main as cli_main

        cli_main(publish_ahead=ahead)
    finally:
        if ahead is not None:
            ahead.close()
        # The process ends here. Finalising the interpreter collects the cyclic garbage of the
        # whole heap (pydantic's schemas, botocore's models, typer's, Prefect's), twice: ~0.25 s
        # of CPU after the command's last output, ~10 % of a 256 MiB publish (from the last
        # atexit handler to the process's end: 0.26-0.30 s, frozen 0.02-0.03 s, 4 runs each).
        # Frozen objects are left out of those collections; all that must still happens:
        # atexit handlers (Prefect's log and event workers drain there), weakref finalizers,
        # flushing and closing the standard streams.
        gc.freeze()


if __name__ == "__main__":
    main()
