"""Start the upload of ``promote publish`` before the command line is imported.

Why: a publish of a large file could not send its first part before ~0.7 s. Its process first
imported typer, pydantic and pydantic-settings, validated the pipeline file, read the artifact's
stack, and made boto3's client, all Python code on one GIL (the hash pass ran alongside, but the
client waited for the rest). ``upload_file``'s process sends from ~0.3 s: import boto3, make a
client, go. The upload itself is mostly the S3 server's work, so the CLI's own start-up can run
while the parts are in flight, instead of before them.

What :func:`start` does: for ``promote [-c FILE] publish PATH ...`` (recognised from the
arguments alone) of a regular file above the multipart threshold, it starts the hash pass
(:class:`~promotion.hash_ahead.HashAhead`), then on one thread reads where the store is from the
pipeline file and the ``PROMOTION_S3_*`` variables as plain values (no validation), makes the S3
client, and, once the file is hashed and unless its blob is already there, creates the multipart
upload under the digest's key and starts sending the parts. The caller waits (at most
:data:`READY_WAIT` seconds) for the client to exist before importing the CLI: two threads of
imports on one GIL would each run at half speed, and the upload would start no sooner.

Nothing is decided here, and nothing is completed here. The command parses and validates its
arguments and the pipeline as always; the store adopts the upload (:meth:`PublishAhead.adopt`)
only if the store it validated is the one the parts went to (endpoint, region, bucket, prefix,
retries, no credentials block), the key is the digest's, and the file is the one hashed; then it
checks what it always checks before completing. Anything else (a publish refused, another
store, an error on this thread) leaves the upload unadopted: :meth:`PublishAhead.close` aborts it
(an incomplete upload is invisible), and the command does its own upload. Errors met here are
never reported: the command meets and reports them itself.

This module imports neither pydantic nor the CLI (botocore on its thread only).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promotion.digest import Digest
from promotion.hash_ahead import UPLOAD_THREADS, FilePart, FileState, HashAhead
from promotion.s3_client import endpoint_for, new_client

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

    from promotion.config import StoreConfig

#: The pipeline file when neither --config nor $PROMOTION_CONFIG names one (as promotion.config).
DEFAULT_CONFIG = "promotion.yaml"
#: Where blobs are, under the store's prefix (as :meth:`promotion.store.ArtifactStore.blob_key`).
BLOB_FOLDER = "blobs/sha256/"
#: botocore's tries per request when $PROMOTION_S3_MAX_ATTEMPTS is not set (as promotion.settings).
DEFAULT_MAX_ATTEMPTS = 5
#: How long the command waits for this module's client before it goes on regardless.
READY_WAIT = 2.0
#: How long the command waits for the upload to be under way (HEAD, CreateMultipartUpload) before
#: it gives up on it and uploads by itself; as long as its own client's retries would take.
STARTED_WAIT = 120.0
#: How long :meth:`PublishAhead.close` lets parts in flight finish before it aborts the upload.
CLOSE_WAIT = 10.0

#: ``publish`` options that take a value (``--name VALUE``, ``--name=VALUE``, ``-sVALUE``).
PUBLISH_VALUE_OPTIONS = frozenset(
    {
        "--service",
        "-s",
        "--version",
        "--evidence",
        "-e",
        "--commit",
        "--commit-author",
        "--commit-time",
        "--build-url",
        "--builder",
        "--as",
        "--stack",
    }
)
#: ``publish`` options that take none.
PUBLISH_FLAGS = frozenset({"--follow-symlinks", "--json"})

ProgressCallback = Callable[[int], None]


def publish_args(argv: Sequence[str]) -> tuple[str | None, Path] | None:
    """``(--config value or None, artifact path)`` when ``argv`` is a publish, else None.

    Conservative: anything this does not know (another root option, an unknown publish option,
    ``--help``, a second positional argument) is None, and the command runs as it always does.
    """
    config: str | None = None
    i = 0
    while i < len(argv) and argv[i] != "publish":
        arg = argv[i]
        if arg in ("-c", "--config") and i + 1 < len(argv):
            config = argv[i + 1]
            i += 2
        elif arg.startswith("--config="):
            config = arg.partition("=")[2]
            i += 1
        else:
            return None
    if i == len(argv):
        return None
    rest = argv[i + 1 :]
    path: str | None = None
    j = 0
    while j < len(rest):
        arg = rest[j]
        if arg == "--":
            tail = rest[j + 1 :]
            if path is not None or len(tail) != 1:
                return None
            path = tail[0]
            break
        if arg.startswith("--") and "=" in arg:
            if arg.partition("=")[0] not in PUBLISH_VALUE_OPTIONS:
                return None
        elif arg in PUBLISH_VALUE_OPTIONS:
            j += 1  # its value
        elif arg in PUBLISH_FLAGS:
            pass
        elif arg.startswith("-") and arg != "-":
            if arg[:2] not in PUBLISH_VALUE_OPTIONS or len(arg) == 2:
                return None  # -sVALUE and -eVALUE are the only short forms
        elif path is None:
            path = arg
        else:
            return None
        j += 1
    if path is None or j > len(rest):
        return None
    return config, Path(path)


@dataclass(frozen=True)
class StoreTarget:
    """Where a blob's parts go: everything about the client and key that the config decides."""

    endpoint: str | None
    region: str
    bucket: str
    prefix: str
    max_attempts: int

    def blob_key(self, digest: Digest) -> str:
        return self.prefix + BLOB_FOLDER + digest.hex


def target_of(cfg: StoreConfig, max_attempts: int) -> StoreTarget | None:
    """The validated store config as a target; None when it has credentials of its own (a
    Prefect block, which this module never reads)."""
    if cfg.credentials_block:
        return None
    return StoreTarget(endpoint_for(cfg.endpoint_url), cfg.region, cfg.bucket, cfg.prefix, max_attempts)


_STORE_FIELDS = ("endpoint_url", "bucket", "prefix", "region")


def speculative_target(config: str | None, environ: Mapping[str, str]) -> StoreTarget | None:
    """The store as the pipeline file and ``PROMOTION_S3_*`` say, read as plain values; None
    where that is not plain (a credentials block, other keys, a variable in lower case, which
    pydantic-settings would read but this does not)."""
    if any(k.upper().startswith("PROMOTION_") and k != k.upper() for k in environ):
        return None
    import yaml

    path = Path(config or environ.get("PROMOTION_CONFIG") or DEFAULT_CONFIG)
    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506 - a safe loader
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    store = doc.get("store") if isinstance(doc, dict) else None
    if not isinstance(store, dict) or not set(store) <= set(_STORE_FIELDS):
        return None
    values: dict[str, Any] = dict(store)
    for field in _STORE_FIELDS:
        override = environ.get("PROMOTION_S3_" + field.upper())
        if override is not None:
            values[field] = override
    endpoint, bucket = values.get("endpoint_url"), values.get("bucket")
    prefix, region = values.get("prefix", ""), values.get("region", "us-east-1")
    if not (endpoint is None or isinstance(endpoint, str)) or not isinstance(bucket, str):
        return None
    if not isinstance(prefix, str) or not isinstance(region, str) or not bucket:
        return None
    prefix = prefix.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    raw_attempts = environ.get("PROMOTION_S3_MAX_ATTEMPTS")
    try:
        attempts = int(raw_attempts) if raw_attempts is not None else DEFAULT_MAX_ATTEMPTS
    except ValueError:
        return None
    return StoreTarget(endpoint_for(endpoint), region, bucket, prefix, attempts)


@dataclass(frozen=True)
class InFlight:
    """An upload adopted by the store: its id and one future per part (the part's entry for
    CompleteMultipartUpload, or botocore's error)."""

    upload_id: str
    parts: list[Future[CompletedPartTypeDef]]


class PublishAhead:
    """One publish's hash pass, client and multipart upload, started before the CLI."""

    def __init__(self, path: Path, hashed: HashAhead, config: str | None) -> None:
        self.path = path
        self.hashed = hashed
        self._config = config
        #: Set once the client exists or this gave up: the CPU-bound part is over.
        self.ready = threading.Event()
        #: Set once the parts are being sent or this gave up.
        self.started = threading.Event()
        self.target: StoreTarget | None = None
        self.client: S3Client | None = None
        self.key: str | None = None
        self.upload_id: str | None = None
        self._futures: list[Future[CompletedPartTypeDef]] = []
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._adopted = False
        self._sent = 0
        self._progress: ProgressCallback | None = None
        threading.Thread(target=self._run, name="publish-ahead", daemon=True).start()

    # -- the thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            target = speculative_target(self._config, os.environ)
            if target is None:
                return
            self.client = new_client(
                endpoint=target.endpoint, region=target.region, max_attempts=target.max_attempts
            )
            self.target = target
            self.ready.set()
            self._start_upload(self.client, target)
        except Exception:  # noqa: BLE001, S110 - the command makes its own client and uploads itself
            pass
        finally:
            self.ready.set()
            self.started.set()

    def _start_upload(self, client: S3Client, target: StoreTarget) -> None:
        from botocore.exceptions import ClientError

        digest, crcs, read = self.hashed.result()
        size = self.hashed.state[0]
        if read != size:
            return
        key = target.blob_key(digest)
        try:
            client.head_object(Bucket=target.bucket, Key=key)
            return  # already there: nothing to send (the store finds it too)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                return
        upload_id = client.create_multipart_upload(
            Bucket=target.bucket, Key=key, ChecksumAlgorithm="CRC32", Metadata={"sha256": digest.hex}
        )["UploadId"]
        with self._lock:
            self.key, self.upload_id = key, upload_id
            if self._closed:  # the command ended meanwhile: close() could not abort it
                self._abort()
                return
            part_bytes = self.hashed.part_size
            self._pool = ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="publish-ahead-part")
            for number, offset in enumerate(range(0, size, part_bytes), start=1):
                part = FilePart(self.hashed.fd, offset, min(part_bytes, size - offset), crcs[number - 1])
                self._futures.append(self._pool.submit(self._send, number, part))

    def _send(self, number: int, part: FilePart) -> CompletedPartTypeDef:
        assert self.client is not None and self.target is not None
        if self._closed:
            raise RuntimeError("publish ended")
        r = self.client.upload_part(
            Bucket=self.target.bucket,
            Key=self.key or "",
            UploadId=self.upload_id or "",
            PartNumber=number,
            Body=part,  # type: ignore[arg-type]
            ContentLength=part.length,
            ChecksumCRC32=part.checksum,
        )
        with self._lock:
            self._sent += part.length
            progress = self._progress
        if progress is not None:
            progress(part.length)
        return {"PartNumber": number, "ETag": r["ETag"], "ChecksumCRC32": part.checksum}

    # -- the command's side -----------------------------------------------------------------------

    def client_for(self, target: StoreTarget | None) -> S3Client | None:
        """This client, if it was made for ``target`` (the command's validated store)."""
        return self.client if target is not None and target == self.target else None

    def adopt(
        self, target: StoreTarget | None, key: str, state: FileState, progress: ProgressCallback | None
    ) -> InFlight | None:
        """The upload in flight, if it goes to ``key`` on ``target`` and the file's state at the
        hash pass is ``state``; from now on ``progress`` hears of every part sent (at once of
        those sent already). None otherwise: the caller uploads by itself."""
        if target is None or target != self.target:
            return None
        self.started.wait(STARTED_WAIT)
        with self._lock:
            if self._closed or self._adopted or self.upload_id is None:
                return None
            if self.key != key or self.hashed.state != state:
                return None
            self._adopted = True
            self._progress = progress
            sent = self._sent
            upload = InFlight(self.upload_id, list(self._futures))
        if progress is not None and sent:
            progress(sent)
        return upload

    @property
    def adopted(self) -> bool:
        """Whether the store took this upload over (:meth:`adopt`)."""
        return self._adopted

    def close(self) -> None:
        """At the end of the command: abort the upload unless the store adopted it (it then
        completed or aborted it itself), then close the file once no part reads it.

        It first lets a CreateMultipartUpload in flight answer (at most :data:`CLOSE_WAIT`), so
        that an upload created just as the command ended is aborted too, not left behind."""
        self.started.wait(CLOSE_WAIT)
        with self._lock:
            self._closed = True
            adopted = self._adopted
            pool = self._pool
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
            wait(self._futures, timeout=CLOSE_WAIT)
        if not adopted:
            with self._lock:
                self._abort()
        if all(f.done() for f in self._futures):
            self.hashed.close()
        # else: a part still reads the file; the descriptor closes with the process.

    def _abort(self) -> None:
        """Abort the upload (under the lock), best effort: an incomplete upload is invisible."""
        if self.upload_id is None or self.client is None or self.target is None:
            return
        upload_id, self.upload_id = self.upload_id, None
        try:
            self.client.abort_multipart_upload(
                Bucket=self.target.bucket, Key=self.key or "", UploadId=upload_id
            )
        except Exception:  # noqa: BLE001, S110 - best effort, as the store's own abort
            pass


def start(argv: Sequence[str]) -> PublishAhead | None:
    """A :class:`PublishAhead` when ``argv`` publishes a large regular file, once its client is
    made (or :data:`READY_WAIT` passed); None otherwise."""
    args = publish_args(argv)
    if args is None:
        return None
    config, path = args
    hashed = HashAhead.start(path)
    if hashed is None:
        return None
    ahead = PublishAhead(path, hashed, config)
    ahead.ready.wait(READY_WAIT)
    return ahead
