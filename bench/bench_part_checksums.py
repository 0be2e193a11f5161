"""What each part's checksum costs a multipart upload: SHA-256 (what publish sent until
2026-12-01) against CRC32 (what it sends now), on the same bytes and the same server.

Run it from the repository root::

    .venv/bin/python bench/bench_part_checksums.py               # 256 MiB, 6 rounds
    .venv/bin/python bench/bench_part_checksums.py --size 64 --rounds 2

The script starts its own SeaweedFS (:class:`promotion.local_s3.LocalS3`) and holds a file of
random bytes in memory. Each round uploads it once per algorithm, in an order that alternates
from round to round, exactly as ``ArtifactStore`` does (16 MiB parts, 8 at a time, each with its
checksum precomputed and sent in the request, ``ChecksumAlgorithm`` on the upload), and times:

- *hash*: computing every part's checksum on the client (``hashlib.sha256`` or ``zlib.crc32``);
- *upload*: CreateMultipartUpload to CompleteMultipartUpload;
- *server CPU*: the SeaweedFS process's user + system time over the upload (``/proc/PID/stat``),
  i.e. what checking the parts cost the server that shares this machine's cores.

Medians over the rounds, every sample kept, in ``bench/results/part_checksums.json``. Exit status
1 when an upload's composite checksum is not the one computed from its parts.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import time
import uuid
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _common import RESULTS_DIR, exit_on_sigterm, machine_facts, median, process_cpu_s, write_results

from promotion.config import StoreConfig
from promotion.local_s3 import LocalS3
from promotion.s3 import make_client
from promotion.store import PART_SIZE, UPLOAD_THREADS

MiB = 1024 * 1024
DEFAULT_OUT = RESULTS_DIR / "part_checksums.json"

#: Raw checksum of one part, per algorithm (the S3 header is its base64).
CHECKSUMS: dict[str, Callable[[bytes], bytes]] = {
    "SHA256": lambda b: hashlib.sha256(b).digest(),
    "CRC32": lambda b: zlib.crc32(b).to_bytes(4, "big"),
}


def upload_once(client: Any, bucket: str, data: bytes, algorithm: str, server_pid: int) -> dict[str, Any]:
    """One multipart upload of ``data`` with ``algorithm`` part checksums; its figures."""
    key = f"part-checksums/{uuid.uuid4().hex}"
    header = f"Checksum{algorithm}"
    t0 = time.perf_counter()
    parts = [data[o : o + PART_SIZE] for o in range(0, len(data), PART_SIZE)]
    sums = [base64.b64encode(CHECKSUMS[algorithm](p)).decode() for p in parts]
    t1 = time.perf_counter()
    cpu0 = process_cpu_s(server_pid)
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm=algorithm)[
        "UploadId"
    ]

    def send(i: int) -> dict[str, Any]:
        r = client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=i + 1, Body=parts[i], **{header: sums[i]}
        )
        return {"PartNumber": i + 1, "ETag": r["ETag"], header: sums[i]}

    with ThreadPoolExecutor(max_workers=UPLOAD_THREADS) as pool:
        done = list(pool.map(send, range(len(parts))))
    r = client.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": done}
    )
    t2 = time.perf_counter()
    cpu = process_cpu_s(server_pid) - cpu0
    raw = b"".join(base64.b64decode(s) for s in sums)
    expected = base64.b64encode(CHECKSUMS[algorithm](raw)).decode() + f"-{len(parts)}"
    client.delete_object(Bucket=bucket, Key=key)
    return {
        "hash_s": t1 - t0,
        "upload_s": t2 - t1,
        "server_cpu_s": cpu,
        "composite_ok": r.get(header) == expected,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256, help="MiB to upload (default 256)")
    ap.add_argument("--rounds", type=int, default=6, help="rounds, each uploading once per algorithm")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    import signal

    args = parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    machine = machine_facts(("boto3", "botocore"))
    data = os.urandom(args.size * MiB)
    samples: dict[str, list[dict[str, Any]]] = {a: [] for a in CHECKSUMS}
    with LocalS3(bucket="bench") as server:
        assert server.proc is not None
        # The product's own client (config, retries, no payload signing), as publish makes it.
        os.environ.update(server.env())
        client = make_client(
            StoreConfig.model_validate({"endpoint_url": server.endpoint_url, "bucket": server.bucket})
        )
        upload_once(client, server.bucket, data[: 32 * MiB], "CRC32", server.proc.pid)  # warm-up
        for i in range(args.rounds):
            order = list(CHECKSUMS) if i % 2 == 0 else list(reversed(CHECKSUMS))
            for algorithm in order:
                s = upload_once(client, server.bucket, data, algorithm, server.proc.pid)
                samples[algorithm].append(s)
                print(
                    f"  #{i + 1} {algorithm:6s} hash {s['hash_s']:.3f} s  upload {s['upload_s']:.2f} s  "
                    f"server CPU {s['server_cpu_s']:.2f} s",
                    flush=True,
                )
    summary = {
        a: {k: median([s[k] for s in v]) for k in ("hash_s", "upload_s", "server_cpu_s")}
        for a, v in samples.items()
    }
    machine["loadavg_at_end"] = os.getloadavg()
    ok = all(s["composite_ok"] for v in samples.values() for s in v)
    res = {
        "machine": machine,
        "params": {"size_mib": args.size, "rounds": args.rounds, "part_mib": PART_SIZE // MiB},
        "medians": summary,
        "samples": samples,
        "composites_ok": ok,
    }
    print(
        f"\npart checksums, {args.size} MiB in {PART_SIZE // MiB} MiB parts, {args.rounds} rounds, medians:"
    )
    for a, m in summary.items():
        print(
            f"  {a:6s} client hash {m['hash_s']:.3f} s   upload {m['upload_s']:.2f} s   "
            f"server CPU {m['server_cpu_s']:.2f} s"
        )
    s, c = summary["SHA256"], summary["CRC32"]
    print(
        f"  CRC32 saves {s['hash_s'] - c['hash_s']:.3f} s of client hashing, "
        f"{s['upload_s'] - c['upload_s']:.2f} s of upload, "
        f"{s['server_cpu_s'] - c['server_cpu_s']:.2f} s of server CPU"
    )
    print(f"checks: composite checksums {'ok' if ok else 'WRONG'}")
    write_results(args.out, res)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
