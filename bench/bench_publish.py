"""Benchmark ``promote publish`` as a user runs it against boto3 ``upload_file``, whole processes.

Run it from the repository root::

    .venv/bin/python bench/bench_publish.py                     # 256 MiB and 2 GiB, 3 repeats
    .venv/bin/python bench/bench_publish.py --sizes 256 --repeats 5
    .venv/bin/python bench/bench_publish.py --quick             # smoke run: 32 MiB, 1 repeat
    .venv/bin/python bench/bench_publish.py --stack blob,wheel,oci --sizes 256 --repeats 3

The script starts its own SeaweedFS (:class:`promotion.local_s3.LocalS3`, as the other benchmarks
do) and, for each size and repeat, runs two processes back to back, alternating which goes first:

- *ours*: ``.venv/bin/promote -c FILE publish ARTIFACT --service api``, the real CLI in its own
  process (the upload started ahead of the CLI, see ``promotion/publish_ahead.py``: hash pass,
  multipart upload with a CRC32 per part; meanwhile the CLI's start-up, imports and config, then
  its checks, the completion, the ledger event and the artifact record). Before each run the
  artifact gets fresh random bytes in its first MiB of payload (below), so its digest is new and
  nothing is skipped as already published;
- *baseline*: ``python -c ...`` that creates a plain boto3 client and runs ``upload_file`` of the
  same file with the default ``TransferConfig`` to a fresh key, its own process too.

``--stack`` (default ``blob``; a comma-separated list) says what the artifact is, built once per
stack and size before its repeats:

- ``blob``: random bytes; the refresh rewrites the file's first MiB;
- ``wheel``: ``benchpkg-1.0.0-py3-none-any.whl``, a zip with ``benchpkg/__init__.py``, one big
  stored member ``benchpkg/_data.bin`` of random bytes (the whole size; stored, as deflate would
  only spend the build's time on incompressible bytes), then ``benchpkg-1.0.0.dist-info/``
  METADATA, WHEEL and RECORD (sha256 and size of every member). The refresh rewrites the first MiB
  of the big member and patches its CRC-32 in the local header and the central directory, so the
  zip stays valid (RECORD's line for that member then names the old hash: nothing here reads it);
- ``oci``: an OCI image layout tarball (uncompressed, ustar): the layer blob first (random bytes,
  the whole size, so the adapter walks past it), then the config and image manifest blobs,
  ``oci-layout`` and ``index.json``. The refresh rewrites the layer's first MiB, renames it to its
  new sha256 and writes the tail again (config, manifest, index), so every digest stays true.

For each repeat a third process times the adapter alone: ``python -c`` that imports
:mod:`promotion.stacks` (and every adapter), then calls :func:`promotion.stacks.detect` on the
file twice, and reports each call's time and ``rchar``/``syscr`` deltas from ``/proc/self/io``
(bytes and calls through read syscalls, page-cache hits included: ``read_bytes`` would count only
disk reads, nothing for a file just written). The first call includes any import it triggers.
For the two measured processes ``rchar`` is read from ``/proc/PID/io`` after the child exited and
before it is reaped (``waitid(WNOWAIT)``): every byte each read, the file and its Python modules.

Wall time is ``time.perf_counter`` around the child (spawn to exit); peak RSS is the child's
``ru_maxrss`` from ``os.wait4``, both taken by a small launcher process whose child it is (a child
forked from the benchmark itself would count the benchmark's own RSS in its peak). CPU time is
the child's user + system time from the same ``wait4``, and the SeaweedFS process's over the
child's run (``/proc/PID/stat``): the two share this machine's cores. Figures are
medians over the repeats, every sample kept; MB/s means 10^6 bytes per second; ratio = baseline
time / our time (goal >= 0.9), memory ratio = our peak RSS / baseline's (goal <= 2). JSON goes
to ``bench/results/publish.json``. Exit status 1 when a correctness check failed (a publish that
printed another digest, or skipped the upload, or an adapter that did not recognise the stack).
"""

from __future__ import annotations

import argparse
import base64
import compileall
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
import zipfile
import zlib
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from _common import (
    RESULTS_DIR,
    BenchError,
    RecordsChecks,
    exit_on_sigterm,
    fill_defaults,
    fmt_samples,
    load_and_total_line,
    machine_facts,
    median,
    paired,
    process_cpu_s,
    render_checks,
    rounded_load,
    write_random_file,
    write_results,
)

from promotion.digest import Digest
from promotion.local_s3 import LocalS3

MiB = 1024 * 1024
MB = 1_000_000
GOAL_RATIO = 0.9
GOAL_RSS = 2.0
DEFAULT_OUT = RESULTS_DIR / "publish.json"
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PROMOTE = str(BIN / "promote")
UPLOAD_FILE = """
import sys
import boto3
from botocore.config import Config
endpoint, bucket, key, path = sys.argv[1:5]
client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      config=Config(s3={"addressing_style": "path"}))
client.upload_file(path, bucket, key)
"""
PIPELINE = """
store:
  endpoint_url: {endpoint}
  bucket: {bucket}
  prefix: bench-publish/
services:
  - name: api
environments:
  - name: dev
"""


#: Runs argv[2:] and writes its wall time and rusage to argv[1]. The measured process must be the
#: child of a small process: Linux carries the RSS a child had before exec (a fork of its parent,
#: which for the benchmark itself is tens of MiB) into its ``ru_maxrss``.
#: The child's /proc/PID/io is read while it is a zombie (exited, not yet reaped): its totals.
LAUNCHER = """
import json, os, subprocess, sys, time
t = time.perf_counter()
p = subprocess.Popen(sys.argv[2:])
os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)
wall = time.perf_counter() - t
with open(f"/proc/{p.pid}/io") as f:
    io = {k: int(v) for k, v in (line.split(": ") for line in f.read().splitlines())}
_, status, ru = os.wait4(p.pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"wall_s": wall, "maxrss_kib": ru.ru_maxrss, "exit": os.waitstatus_to_exitcode(status),
               "rchar": io["rchar"], "cpu_s": ru.ru_utime + ru.ru_stime}, f)
"""


#: Times :func:`promotion.stacks.detect` on argv[1] twice, with the bytes each call read.
DETECT = """
import json, sys, time
from pathlib import Path
from promotion import stacks
stacks.stack_names()  # imports every adapter before counting
def io():
    with open("/proc/self/io") as f:
        c = {k: int(v) for k, v in (line.split(": ") for line in f.read().splitlines())}
    return c["rchar"], c["syscr"]
calls = []
for _ in range(2):
    r0, s0 = io()
    t = time.perf_counter()
    info = stacks.detect(Path(sys.argv[1]))
    elapsed = time.perf_counter() - t
    r1, s1 = io()
    calls.append({"seconds": elapsed, "rchar": r1 - r0, "syscr": s1 - s0})
print(json.dumps({"calls": calls, "info": info.model_dump()}))
"""


def run_child(cmd: Sequence[str], env: dict[str, str], server_pid: int | None = None) -> dict[str, Any]:
    """Run one process through :data:`LAUNCHER`; wall time, peak RSS (MiB), CPU time (its own
    and, given ``server_pid``, the S3 server's meanwhile), exit code, output."""
    # The run before wrote hundreds of MiB (the artifact's refresh, the server's copy of the last
    # upload): let the kernel write them back now, not during this run's timing, whichever side.
    os.sync()
    server_cpu0 = process_cpu_s(server_pid) if server_pid else 0.0
    with tempfile.NamedTemporaryFile(suffix=".json") as report:
        proc = subprocess.run(
            [sys.executable, "-S", "-c", LAUNCHER, report.name, *cmd],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        measured = json.loads(Path(report.name).read_text() or "{}")
    return {
        "wall_s": measured.get("wall_s", float("nan")),
        "cpu_s": measured.get("cpu_s", float("nan")),
        "server_cpu_s": process_cpu_s(server_pid) - server_cpu0 if server_pid else None,
        "peak_rss_mib": measured.get("maxrss_kib", 0) / 1024,  # KiB on Linux
        "exit": measured.get("exit", proc.returncode),
        "rchar_mib": measured.get("rchar", 0) / MiB,
        "stdout": proc.stdout[-500:],
        "stderr": proc.stderr[-500:],
    }


STACKS = ("blob", "wheel", "oci")
WHEEL_NAME = "benchpkg-1.0.0-py3-none-any.whl"
WHEEL_DATA = "benchpkg/_data.bin"
OCI_LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _random_into(f: BinaryIO, size: int, chunk: int = 4 * MiB) -> tuple[str, int]:
    """``size`` random bytes written to ``f``; their sha256 hex and CRC-32 (computed while writing)."""
    h, crc, left = hashlib.sha256(), 0, size
    while left:
        block = os.urandom(min(chunk, left))
        f.write(block)
        h.update(block)
        crc = zlib.crc32(block, crc)
        left -= len(block)
    return h.hexdigest(), crc


def _hash_range(path: Path, start: int, size: int) -> tuple[str, int]:
    """sha256 hex and CRC-32 of ``size`` bytes of ``path`` from ``start``."""
    h, crc, left = hashlib.sha256(), 0, size
    with path.open("rb") as f:
        f.seek(start)
        while left:
            block = f.read(min(4 * MiB, left))
            if not block:
                raise BenchError(f"{path}: ends before byte {start + size}")
            h.update(block)
            crc = zlib.crc32(block, crc)
            left -= len(block)
    return h.hexdigest(), crc


def _rewrite(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)


class Artifact:
    """A file of one stack to publish again and again: :meth:`refresh` gives it a new digest."""

    stack = "blob"

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        write_random_file(path, size)

    def refresh(self) -> Digest:
        """New bytes in the first MiB (a new digest), then the digest, computed outside any timing."""
        _rewrite(self.path, 0, os.urandom(min(MiB, self.size)))
        return self.digest()

    def digest(self) -> Digest:
        with self.path.open("rb") as f:
            return Digest.of_stream(f)


class Wheel(Artifact):
    stack = "wheel"

    def __init__(self, path: Path, size: int) -> None:
        self.path = path.with_name(WHEEL_NAME)
        self.size = size
        dist = "benchpkg-1.0.0.dist-info"
        small = {
            "benchpkg/__init__.py": b'"""A package built by bench/bench_publish.py."""\n',
            f"{dist}/METADATA": b"Metadata-Version: 2.1\nName: benchpkg\nVersion: 1.0.0\n"
            b"Summary: A big wheel for the publish benchmark\n",
            f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: bench_publish\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n",
        }
        record: list[str] = []
        with zipfile.ZipFile(self.path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("benchpkg/__init__.py", small["benchpkg/__init__.py"])
            info = zipfile.ZipInfo(WHEEL_DATA, date_time=(2026, 12, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.file_size = size  # decides zip64 before the data is written (2 GiB and more)
            with zf.open(info, "w") as member:
                data_hex, _crc = _random_into(member, size)  # type: ignore[arg-type]
            for name in (f"{dist}/METADATA", f"{dist}/WHEEL"):
                zf.writestr(name, small[name])
            hashes = {n: _b64(bytes.fromhex(_sha256_hex(d))) for n, d in small.items()}
            hashes[WHEEL_DATA] = _b64(bytes.fromhex(data_hex))
            sizes = {**{n: len(d) for n, d in small.items()}, WHEEL_DATA: size}
            record = [f"{n},sha256={hashes[n]},{sizes[n]}" for n in sorted(hashes)]
            zf.writestr(f"{dist}/RECORD", "\n".join([*record, f"{dist}/RECORD,,"]) + "\n")
        with zipfile.ZipFile(self.path) as zf:
            header = zf.getinfo(WHEEL_DATA).header_offset
            central = zf.start_dir
        with self.path.open("rb") as f:
            f.seek(header)
            local = f.read(30)
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            f.seek(central)
            directory = f.read()
        self.data_offset = header + 30 + name_len + extra_len
        self.crc_offsets = [header + 14, central + _central_entry(directory, WHEEL_DATA) + 16]

    def refresh(self) -> Digest:
        """New bytes in the big member's first MiB, its CRC-32 patched in both headers."""
        _rewrite(self.path, self.data_offset, os.urandom(min(MiB, self.size)))
        _hex, crc = _hash_range(self.path, self.data_offset, self.size)
        for at in self.crc_offsets:
            _rewrite(self.path, at, struct.pack("<I", crc))
        return self.digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _central_entry(directory: bytes, name: str) -> int:
    """Offset of ``name``'s entry within a zip's central directory bytes."""
    at = 0
    while directory[at : at + 4] == b"PK\x01\x02":
        name_len, extra_len, comment_len = struct.unpack("<HHH", directory[at + 28 : at + 34])
        if directory[at + 46 : at + 46 + name_len].decode() == name:
            return at
        at += 46 + name_len + extra_len + comment_len
    raise BenchError(f"{name} is not in the central directory")


def _tar_member(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 1_764_547_200
    return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")


def _tar_pad(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)


class OciLayout(Artifact):
    stack = "oci"

    def __init__(self, path: Path, size: int) -> None:
        self.path = path.with_name(f"image-{size // MiB}.oci.tar")
        self.size = size
        with self.path.open("wb") as f:
            f.write(_tar_member("blobs/sha256/" + "0" * 64, size))  # renamed once hashed
            self.data_offset = f.tell()
            layer_hex, _crc = _random_into(f, size)
            f.write(_tar_pad(size))
        self._name_layer_and_write_tail(layer_hex)

    def _name_layer_and_write_tail(self, layer_hex: str) -> None:
        """The layer's header under its sha256, then config, manifest, oci-layout and index.json."""
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_hex}"]},
                "config": {"Cmd": ["/bin/app"]},
            }
        ).encode()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": f"sha256:{_sha256_hex(config)}",
                    "size": len(config),
                },
                "layers": [{"mediaType": OCI_LAYER_TYPE, "digest": f"sha256:{layer_hex}", "size": self.size}],
            }
        ).encode()
        index = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": f"sha256:{_sha256_hex(manifest)}",
                        "size": len(manifest),
                        "annotations": {
                            "io.containerd.image.name": "registry.example/bench/app:1.0.0",
                            "org.opencontainers.image.ref.name": "1.0.0",
                        },
                    }
                ],
            }
        ).encode()
        tail = [
            (f"blobs/sha256/{_sha256_hex(config)}", config),
            (f"blobs/sha256/{_sha256_hex(manifest)}", manifest),
            ("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'),
            ("index.json", index),
        ]
        with self.path.open("r+b") as f:
            f.write(_tar_member(f"blobs/sha256/{layer_hex}", self.size))
            f.seek(self.data_offset + self.size + len(_tar_pad(self.size)))
            for name, data in tail:
                f.write(_tar_member(name, len(data)) + data + _tar_pad(len(data)))
            f.write(b"\0" * 2 * tarfile.BLOCKSIZE)  # the end-of-archive marker
            f.truncate()

    def refresh(self) -> Digest:
        """New bytes in the layer's first MiB; the layer renamed, the tail rewritten."""
        _rewrite(self.path, self.data_offset, os.urandom(min(MiB, self.size)))
        layer_hex, _crc = _hash_range(self.path, self.data_offset, self.size)
        self._name_layer_and_write_tail(layer_hex)
        return self.digest()


ARTIFACTS: dict[str, type[Artifact]] = {"blob": Artifact, "wheel": Wheel, "oci": OciLayout}


def detect_alone(path: Path, env: dict[str, str]) -> dict[str, Any]:
    """:data:`DETECT` in its own process: each call's seconds, bytes read, read calls; the info."""
    proc = subprocess.run(
        [sys.executable, "-c", DETECT, str(path)], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise BenchError(f"detect on {path.name} failed: {proc.stderr.strip()[-300:]}")
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


class Bench(RecordsChecks):
    def __init__(self, server: LocalS3, cfg: Path, env: dict[str, str]) -> None:
        self.server = server
        self.cfg = cfg
        self.env = env
        self.checks: list[dict[str, Any]] = []
        self.client = server.client()
        self.server_pid = server.proc.pid if server.proc is not None else None
        self.baseline_keys: list[str] = []

    def ours(self, artifact: Artifact, label: str) -> dict[str, Any]:
        expected = artifact.refresh()
        path = artifact.path
        r = run_child(
            [PROMOTE, "-c", str(self.cfg), "publish", str(path), "--service", "api"],
            self.env,
            self.server_pid,
        )
        ok = (
            r["exit"] == 0 and r["stdout"].strip() == str(expected) and "already published" not in r["stderr"]
        )
        self.check(f"{label}: promote publish uploaded {expected.short}", ok, r["stderr"].strip()[-200:])
        return r

    def baseline(self, artifact: Artifact, label: str) -> dict[str, Any]:
        path = artifact.path
        key = f"bench-baseline/{uuid.uuid4().hex}"
        cmd = [
            sys.executable,
            "-c",
            UPLOAD_FILE,
            self.server.endpoint_url,
            self.server.bucket,
            key,
            str(path),
        ]
        r = run_child(cmd, self.env, self.server_pid)
        size = path.stat().st_size
        stored = (
            self.client.head_object(Bucket=self.server.bucket, Key=key)["ContentLength"]
            if r["exit"] == 0
            else -1
        )
        self.check(f"{label}: upload_file stored {size} bytes", stored == size, r["stderr"].strip()[-200:])
        self.baseline_keys.append(key)
        return r

    def delete_baseline_uploads(self) -> None:
        """Delete what the baseline uploaded, once a size's repeats are done (keeps the disk from
        filling): never between measured runs, where the server's work for the delete would be
        timed as part of the next run."""
        for key in self.baseline_keys:
            self.client.delete_object(Bucket=self.server.bucket, Key=key)
        self.baseline_keys.clear()

    def adapter(self, artifact: Artifact, label: str) -> dict[str, Any]:
        """The adapter alone on the file as it is now; checks that it recognised the stack."""
        r = detect_alone(artifact.path, self.env)
        got = r["info"]["stack"]
        self.check(f"{label}: detect() says {artifact.stack}", got == artifact.stack, f"it said {got}")
        return r


def summarize(samples: list[dict[str, Any]], size: int) -> dict[str, Any]:
    walls = [s["wall_s"] for s in samples]
    rss = [s["peak_rss_mib"] for s in samples]
    rchar = [s["rchar_mib"] for s in samples]
    cpu = [s["cpu_s"] for s in samples]
    server_cpu = [s["server_cpu_s"] for s in samples if s["server_cpu_s"] is not None]
    m = median(walls)
    return {
        "median_s": m,
        "median_mb_per_s": size / MB / m,
        "samples_s": walls,
        "median_cpu_s": median(cpu),
        "cpu_samples_s": cpu,
        "median_server_cpu_s": median(server_cpu) if server_cpu else None,
        "server_cpu_samples_s": server_cpu,
        "median_peak_rss_mib": median(rss),
        "peak_rss_samples_mib": rss,
        "median_read_mib": median(rchar),
        "median_reads_of_file": median(rchar) * MiB / size,
    }


def summarize_adapter(samples: list[dict[str, Any]]) -> dict[str, Any]:
    first = [s["calls"][0] for s in samples]
    second = [s["calls"][1] for s in samples]
    return {
        "first_call_median_ms": median([c["seconds"] * 1000 for c in first]),
        "first_call_median_read_kib": median([c["rchar"] / 1024 for c in first]),
        "second_call_median_ms": median([c["seconds"] * 1000 for c in second]),
        "second_call_median_read_kib": median([c["rchar"] / 1024 for c in second]),
        "second_call_median_read_syscalls": median([c["syscr"] for c in second]),
        "info": samples[-1]["info"],
        "samples": samples,
    }


def bench_size(b: Bench, tmp: Path, stack: str, size_mib: int, repeats: int) -> dict[str, Any]:
    print(f"  building a {size_mib} MiB {stack}...", flush=True)
    artifact = ARTIFACTS[stack](tmp / f"artifact-{size_mib}.bin", size_mib * MiB)
    size = artifact.path.stat().st_size  # a wheel or a layout is a few KiB more than its payload
    ours: list[dict[str, Any]] = []
    base: list[dict[str, Any]] = []
    adapter: list[dict[str, Any]] = []
    for i in range(repeats):
        label = f"{stack} {size_mib} MiB #{i + 1}"
        one_ours, one_base = paired(i, partial(b.ours, artifact, label), partial(b.baseline, artifact, label))
        ours.append(one_ours)
        base.append(one_base)
        adapter.append(b.adapter(artifact, label))
        print(
            f"  #{i + 1}: ours {ours[-1]['wall_s']:.2f} s {ours[-1]['peak_rss_mib']:.0f} MiB, "
            f"upload_file {base[-1]['wall_s']:.2f} s {base[-1]['peak_rss_mib']:.0f} MiB, "
            f"detect {adapter[-1]['calls'][0]['seconds'] * 1000:.1f} ms",
            flush=True,
        )
    artifact.path.unlink()
    b.delete_baseline_uploads()
    o, bl = summarize(ours, size), summarize(base, size)
    ratio = bl["median_s"] / o["median_s"]
    rss_ratio = o["median_peak_rss_mib"] / bl["median_peak_rss_mib"]
    return {
        "stack": stack,
        "size_mib": size_mib,
        "file_bytes": size,
        "ours_promote_publish": o,
        "baseline_upload_file": bl,
        "adapter_detect": summarize_adapter(adapter),
        "ratio_baseline_over_ours": ratio,
        "paired_ratios": [y["wall_s"] / x["wall_s"] for x, y in zip(ours, base, strict=True)],
        "meets_goal": ratio >= GOAL_RATIO,
        "rss_ratio_ours_over_baseline": rss_ratio,
        "meets_rss_goal": rss_ratio <= GOAL_RSS,
        "runs": {"ours": ours, "baseline": base},
    }


def startup(b: Bench) -> dict[str, Any]:
    """``promote publish --help`` (imports and argument parsing) vs ``python -c 'import boto3'``."""
    ours = [run_child([PROMOTE, "publish", "--help"], b.env) for _ in range(3)]
    base = [run_child([sys.executable, "-c", "import boto3"], b.env) for _ in range(3)]
    return {
        "promote_publish_help_s": median([r["wall_s"] for r in ours]),
        "python_import_boto3_s": median([r["wall_s"] for r in base]),
        # What start-up alone reads (modules, config): the rest of a run's ``read`` is the file.
        "promote_publish_help_read_mib": median([r["rchar_mib"] for r in ours]),
        "python_import_boto3_read_mib": median([r["rchar_mib"] for r in base]),
    }


def render(res: dict[str, Any]) -> str:
    m, p = res["machine"], res["params"]
    lines: list[str] = []
    add = lines.append
    add(
        f"prefect-promotion publish benchmark  {m['date_utc']}  {m['cpu_count']} CPUs  Python {m['python']}  "
        f"boto3 {m['boto3']}  SeaweedFS {m['seaweedfs'].removeprefix('version ')}"
    )
    add(
        f"whole processes; {p['repeats']} repeat(s), order alternating; median [samples]; MB = 10^6 bytes; "
        f"load average at start {rounded_load(m['loadavg_at_start'])}"
    )
    s = res["startup"]
    add(
        f"start-up: promote publish --help {s['promote_publish_help_s']:.2f} s, "
        f"python -c 'import boto3' {s['python_import_boto3_s']:.2f} s; reading "
        f"{s['promote_publish_help_read_mib']:.1f} and {s['python_import_boto3_read_mib']:.1f} MiB"
    )
    for r in res["sizes"]:
        o, bl = r["ours_promote_publish"], r["baseline_upload_file"]
        add("")
        add(
            f"{r.get('stack', 'blob')} {r['size_mib']} MiB ({r.get('file_bytes', r['size_mib'] * MiB)} bytes)"
        )
        for label, x in (("ours: promote publish", o), ("baseline: boto3 upload_file", bl)):
            add(
                f"  {label:<30} {x['median_s']:7.2f} s {x['median_mb_per_s']:7.1f} MB/s   "
                f"peak RSS {x['median_peak_rss_mib']:6.0f} MiB   read {x['median_read_mib']:7.1f} MiB "
                f"({x['median_reads_of_file']:.2f}x the file)   [{fmt_samples(x['samples_s'])}]"
            )
        # This machine's cores are shared with the S3 server: CPU either side spends is time
        # the other waits for, so it explains what wall time alone does not.
        server = {k: x["median_server_cpu_s"] for k, x in (("ours", o), ("baseline", bl))}
        add(
            f"  CPU: ours {o['median_cpu_s']:.2f} s + SeaweedFS {server['ours'] or 0:.2f} s, "
            f"baseline {bl['median_cpu_s']:.2f} s + SeaweedFS {server['baseline'] or 0:.2f} s "
            f"(user + system, medians)"
        )
        a, info = r["adapter_detect"], r["adapter_detect"]["info"]
        said = " ".join(str(x) for x in (info["stack"], info.get("name"), info.get("version")) if x)
        add(
            f"  adapter: detect() {a['first_call_median_ms']:.1f} ms, "
            f"{a['first_call_median_read_kib']:.1f} KiB read (imports it triggers included); "
            f"again {a['second_call_median_ms']:.1f} ms, {a['second_call_median_read_kib']:.1f} KiB "
            f"in {a['second_call_median_read_syscalls']:.0f} reads; says {said}"
        )
        add(
            f"  ratio baseline/ours {r['ratio_baseline_over_ours']:.3f} (goal >= {GOAL_RATIO}: "
            f"{'meets goal' if r['meets_goal'] else 'BELOW GOAL'}); "
            f"paired [{fmt_samples(r['paired_ratios'])}]"
        )
        add(
            f"  peak RSS ours/baseline {r['rss_ratio_ours_over_baseline']:.2f} (goal <= {GOAL_RSS}: "
            f"{'meets goal' if r['meets_rss_goal'] else 'ABOVE GOAL'})"
        )
    add("")
    render_checks(res["checks"], add)
    add(load_and_total_line(m, res["total_s"]))
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--sizes", default=None, help="comma-separated sizes in MiB (default 256,2048)")
    ap.add_argument("--repeats", type=int, default=None, help="repeats per size (default 3)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    ap.add_argument("--quick", action="store_true", help="smoke run: 32 MiB, 1 repeat")
    ap.add_argument(
        "--stack",
        default="blob",
        help=f"comma-separated stacks of the artifact: {', '.join(STACKS)} (default blob)",
    )
    args = ap.parse_args(argv)
    args.stack_list = [x.strip() for x in str(args.stack).split(",") if x.strip()]
    unknown = [x for x in args.stack_list if x not in STACKS]
    if unknown or not args.stack_list:
        ap.error(f"--stack: expected some of {', '.join(STACKS)} (got {args.stack!r})")
    fill_defaults(args, {"sizes": "32", "repeats": 1}, {"sizes": "256,2048", "repeats": 3})
    try:
        args.size_list = [int(x) for x in str(args.sizes).split(",") if x.strip()]
    except ValueError:
        ap.error(f"--sizes: expected comma-separated whole MiB, e.g. 256,2048 (got {args.sizes!r})")
    if not args.size_list or min(args.size_list) < 1 or args.repeats < 1:
        ap.error("--sizes must be >= 1 MiB each and --repeats >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    started = time.perf_counter()
    # The CLI as installed: byte-compiled (pip compiles a wheel's modules; `make install` compiles
    # this checkout's). Without it, where PYTHONDONTWRITEBYTECODE is set, each timed run would
    # compile the project's modules again, a cost no installed CLI pays.
    compileall.compile_dir(REPO / "promotion", quiet=1)
    machine = machine_facts(("boto3", "botocore", "s3transfer"))
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp_s:
        tmp = Path(tmp_s)
        # The artifact, each repeat's upload of ours (they stay: they are the store), and the
        # baseline's uploads of one size (deleted once its repeats are done).
        need = max(args.size_list) * MiB * (args.repeats + 1) + sum(args.size_list) * MiB * (
            args.repeats + 1
        ) * len(args.stack_list)
        free = shutil.disk_usage(tmp).free
        if free < need * 1.2:
            print(f"not enough disk in {tmp}: {free / 2**30:.1f} GiB free, ~{need / 2**30:.1f} GiB needed")
            return 2
        with LocalS3(bucket="bench") as server:
            env = {**os.environ, **server.env()}
            cfg = tmp / "promotion.yaml"
            cfg.write_text(PIPELINE.format(endpoint=server.endpoint_url, bucket=server.bucket))
            b = Bench(server, cfg, env)
            print(f"SeaweedFS at {server.endpoint_url}; start-up...", flush=True)
            start = startup(b)
            # One untimed pair so that neither side pays the server's first-write costs.
            warm = Artifact(tmp / "warm.bin", 32 * MiB)
            b.ours(warm, "warm-up")
            b.baseline(warm, "warm-up")
            sizes = []
            for stack in args.stack_list:
                for size_mib in args.size_list:
                    print(f"{stack} {size_mib} MiB x {args.repeats}...", flush=True)
                    sizes.append(bench_size(b, tmp, stack, size_mib, args.repeats))
    machine["loadavg_at_end"] = os.getloadavg()
    res: dict[str, Any] = {
        "machine": machine,
        "params": {
            "stacks": args.stack_list,
            "sizes_mib": args.size_list,
            "repeats": args.repeats,
            "quick": args.quick,
        },
        "startup": start,
        "sizes": sizes,
        "checks": b.checks,
        "total_s": time.perf_counter() - started,
    }
    print()
    print(render(res))
    write_results(args.out, res)
    return 0 if all(c["ok"] for c in b.checks) else 1


if __name__ == "__main__":
    sys.exit(main())
