"""The demo behind `make demo`: a real S3 server, a real artifact with real evidence, the real CLI.

It starts SeaweedFS on 127.0.0.1 (free ports, data in a temporary directory), builds the example
artifact deterministically, publishes it with the evidence in examples/evidence, publishes it
again (nothing is uploaded), re-verifies it, and shows `promote status` and `promote history`.
Everything it started is stopped on exit, Ctrl-C included.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from promotion.local_s3 import LocalS3  # noqa: E402
from scripts.build_example_artifact import build  # noqa: E402

PROMOTE = str(Path(sys.executable).parent / "promote")
EVIDENCE = REPO / "examples" / "evidence"


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def run(env: dict[str, str], *args: str, capture: bool = False) -> str:
    print(f"$ promote {' '.join(shlex.quote(a) for a in args)}", flush=True)
    r = subprocess.run([PROMOTE, *args], env=env, text=True, stdout=subprocess.PIPE if capture else None)
    if r.returncode != 0:
        raise SystemExit(f"demo: 'promote {args[0]}' exited {r.returncode}")
    if capture:
        print(r.stdout, end="", flush=True)
        return r.stdout.strip()
    return ""


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="promotion-demo-") as tmp, LocalS3(bucket="promotion") as s3:
        say(f"SeaweedFS S3 is up at {s3.endpoint_url} (bucket {s3.bucket}, data in a temp dir)")
        env = {**os.environ, **s3.env(), "PROMOTION_CONFIG": str(REPO / "promotion.yaml")}
        env.pop("PROMOTION_S3_PREFIX", None)

        say("The pipeline file")
        run(env, "config", "validate")

        say("CI builds the artifact (deterministic tar.gz: same sources, same digest)")
        artifact = build(Path(tmp) / "hello-1.0.0.tar.gz")
        print(f"built {artifact.name}, {artifact.stat().st_size} bytes")

        say("CI publishes it with its evidence; the digest is the artifact's only name")
        publish = [
            "publish", str(artifact), "--service", "hello", "--version", "1.0.0",
            "--evidence", f"junit={EVIDENCE / 'junit.xml'}",
            "--evidence", f"coverage={EVIDENCE / 'coverage.xml'}",
            "--evidence", f"sarif={EVIDENCE / 'bandit.sarif'}",
            "--commit", "4f3c2a1e9b8d7c6f5a4b3c2d1e0f9a8b7c6d5e4f",
            "--commit-author", "dana",
            "--build-url", "https://ci.example.com/hello/builds/42",
            "--builder", "demo-ci", "--as", "ci-bot",
        ]  # fmt: skip
        digest = run(env, *publish, capture=True)

        say("Publishing the same bytes again uploads nothing and records nothing")
        run(env, *publish, capture=True)

        say("Re-check the stored bytes against the digest (cheap: S3's checksum; full: re-hash)")
        run(env, "verify", digest, "--service", "hello")
        run(env, "verify", digest, "--full")

        say("Where everything is (environments fill in as the pipeline promotes)")
        run(env, "status")

        say("The ledger: every event, hash-chained")
        run(env, "history", "hello")
        run(env, "ledger", "verify")

        say(f"Done in {time.monotonic() - started:.1f}s; stopping SeaweedFS")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: everything the demo started has been stopped", file=sys.stderr)
        sys.exit(130)
