"""The ``promote`` executable.

A publish of a large file starts its hash pass and upload first (:mod:`promotion.publish_ahead`),
before the command line (typer, pydantic, the pipeline's models) is imported; every other command
goes straight to :func:`promotion.cli.main`. Whatever the command did, the upload started ahead is
aborted at the end unless the command adopted it.
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


if __name__ == "__main__":
    main()
