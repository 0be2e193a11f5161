"""Write deployments/prefect.yaml from the deployments the code defines (flows/serve.py).

    python deployments/generate.py                 # rewrite it from ./promotion.yaml's sweep.schedule
    python deployments/generate.py --check         # exit 1 if the checked-in file drifted
    python deployments/generate.py -c other.yaml -o /tmp/prefect.yaml

``promote serve`` serves the same definition, so the two cannot disagree once this has run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flows.serve import REPO, prefect_yaml
from promotion.cli import exit_code_for
from promotion.config import load_pipeline
from promotion.errors import DeploymentsOutOfDate, PromotionError

DEFAULT_OUTPUT = REPO / "deployments" / "prefect.yaml"


def generate(config: str, output: Path, check: bool) -> str:
    """Write (or with ``check`` compare) ``output``; returns what was done, for the user."""
    # apply_env=False: the file must not depend on who runs this (PROMOTION_S3_* only move the store).
    pipeline = load_pipeline(Path(config), apply_env=False)
    text = prefect_yaml(pipeline, config=config)
    current = output.read_text() if output.exists() else None
    if check:
        if current != text:
            raise DeploymentsOutOfDate(
                f"{output} is not what the code's deployments give for {config}"
                f"{' (missing)' if current is None else ''}: run python deployments/generate.py"
            )
        return f"{output} is up to date"
    if current == text:
        return f"{output} is up to date"
    output.write_text(text)
    return f"wrote {output}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "-c",
        "--config",
        default="promotion.yaml",
        help="pipeline file (its sweep.schedule; also the path the deployments' runs open, "
        "relative to $PROMOTION_HOME)",
    )
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if it differs")
    args = parser.parse_args(argv)
    try:
        print(generate(args.config, args.output, args.check))
    except PromotionError as exc:
        sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
        sys.exit(exit_code_for(exc))


if __name__ == "__main__":
    main()
