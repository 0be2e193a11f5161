"""The promotion ledger: an append-only, hash-chained log of events per service, in S3.

Layout, per service::

    {prefix}ledger/{service}/000000000001.json   first record (prev = null)
    {prefix}ledger/{service}/000000000002.json   prev = sha256 of record 1's bytes
    ...
    {prefix}ledger/{service}/_head.json          hint: the last seq written (may lag, never trusted)

Records are written create-only (``If-None-Match: *``) on the next sequence number, so of two
concurrent writers exactly one takes a place; the other re-reads and tries the next one. Each
record carries an idempotency id: a writer that meets a 412 first checks whether the record in
its place is its own (a retried request whose first attempt landed) before moving on.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from promotion.digest import Digest
from promotion.errors import LedgerContention, LedgerCorrupt, LedgerError, PreconditionFailed
from promotion.models import (
    LedgerEvent,
    LedgerRecord,
    LedgerState,
    apply_event,
    utcnow,
)
from promotion.s3 import S3

HEAD = "_head.json"
SEQ_WIDTH = 12


@dataclass(frozen=True)
class Tip:
    """The last record of a ledger as read from S3 (seq 0: the ledger is empty)."""

    seq: int
    hash: Digest | None
    state: LedgerState
    record: LedgerRecord | None = None


EMPTY = Tip(seq=0, hash=None, state=LedgerState())


@dataclass
class VerifyReport:
    service: str
    records: int = 0
    head: Digest | None = None
    findings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


class Ledger:
    """Read and append the ledgers of all services in one store."""

    def __init__(self, s3: S3, *, max_attempts: int = 200) -> None:
        self.s3 = s3
        self.max_attempts = max_attempts
        # The last record this writer saw per service: the next append tries the place after it
        # directly (2 requests) and reads the ledger only when that place turns out to be taken.
        self._tips: dict[str, Tip] = {}

    # -- keys -------------------------------------------------------------------------------------

    def _root(self) -> str:
        return self.s3.key("ledger") + "/"

    def _dir(self, service: str) -> str:
        return self._root() + service + "/"

    def _key(self, service: str, seq: int) -> str:
        return f"{self._dir(service)}{seq:0{SEQ_WIDTH}d}.json"

    # -- reading ----------------------------------------------------------------------------------

    def _parse(self, service: str, seq: int, body: bytes) -> LedgerRecord:
        try:
            return LedgerRecord.model_validate_json(body)
        except ValidationError as exc:
            raise LedgerError(
                f"ledger record {seq} of {service} is unreadable ({exc.error_count()} problems, "
                f"first: {exc.errors()[0]['msg']}); run 'promote ledger verify {service}'"
            ) from None

    def _read(self, service: str, seq: int) -> tuple[bytes, LedgerRecord] | None:
        body = self.s3.get(self._key(service, seq))
        if body is None:
            return None
        return body, self._parse(service, seq, body)

    def tip(self, service: str, *, remember: bool = False) -> Tip:
        """The last record, found from the head hint and a probe forward: O(1) requests.

        ``remember``: the next :meth:`append` for ``service`` starts from this tip instead of
        finding it again (three requests saved). Safe when it is stale by then: the append's
        create-only write fails on a taken place, and it walks on to the real end.
        """
        tip = self._find_tip(service)
        if remember:
            self._tips[service] = tip
        return tip

    def _find_tip(self, service: str) -> Tip:
        start = self._hint(service)
        if start is None:
            keys = [k for k in self.s3.list_keys(self._dir(service)) if _seq_of(k) is not None]
            if not keys:
                return EMPTY
            start = max(_seq_of(k) or 0 for k in keys)
        tip = EMPTY
        seq = start
        read = self._read(service, seq)
        if read is None and seq > 0:
            # Hint points past the end (records removed?) - fall back to a listing.
            keys = [k for k in self.s3.list_keys(self._dir(service)) if _seq_of(k) is not None]
            if not keys:
                return EMPTY
            seq = max(_seq_of(k) or 0 for k in keys)
            read = self._read(service, seq)
        while read is not None:
            body, rec = read
            tip = Tip(seq=seq, hash=Digest.of_bytes(body), state=rec.state, record=rec)
            seq += 1
            read = self._read(service, seq)
        return tip

    def state(self, service: str) -> LedgerState:
        """Which digest is in which environment, derived from the ledger (its last record)."""
        return self.tip(service).state

    def _hint(self, service: str) -> int | None:
        hint = self._hint_full(service)
        return hint[0] if hint else None

    def _hint_full(self, service: str) -> tuple[int, str | None] | None:
        body = self.s3.get(self._dir(service) + HEAD)
        if body is None:
            return None
        try:
            data = json.loads(body)
            seq, digest = data["seq"], data.get("hash")
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        if not isinstance(seq, int) or seq < 1:
            return None
        return seq, digest if isinstance(digest, str) else None

    def records(self, service: str) -> list[LedgerRecord]:
        """Every record in order (reads the whole ledger; for history, not for hot paths)."""
        return [rec for _, _, rec in self._all(service)]

    def _all(self, service: str) -> Iterator[tuple[int, bytes, LedgerRecord]]:
        for seq, body in self._raw(service):
            yield seq, body, self._parse(service, seq, body)

    def services(self) -> set[str]:
        """Every service that has a ledger folder in the store (one listing, records not listed)."""
        return self.s3.list_folders(self._root())

    def read_range(self, service: str, first: int, last: int) -> list[LedgerRecord]:
        """Records ``first..last`` (inclusive) in order, read in parallel; a missing one is skipped.

        For readers that need part of the history (e.g. what a digest did since it was published)
        without listing the whole ledger.
        """
        return [
            self._parse(service, seq, body)
            for seq, body in self.read_range_raw(service, first, last)
            if body is not None
        ]

    def read_range_raw(
        self, service: str, first: int, last: int, *, workers: int = 16
    ) -> list[tuple[int, bytes | None]]:
        """``(seq, bytes)`` of records ``first..last`` (inclusive) in order, unparsed, read in
        parallel; None for a missing one. For readers that check the chain themselves (the bytes
        are what the next record's ``prev`` hashes) without knowing where records are kept."""
        seqs = list(range(max(first, 1), last + 1))
        if len(seqs) <= 1:
            return [(s, self.s3.get(self._key(service, s))) for s in seqs]
        with ThreadPoolExecutor(max_workers=min(workers, len(seqs))) as pool:
            bodies = list(pool.map(lambda s: self.s3.get(self._key(service, s)), seqs))
        return list(zip(seqs, bodies, strict=True))

    def _raw(self, service: str) -> list[tuple[int, bytes]]:
        seqs = sorted(s for k in self.s3.list_keys(self._dir(service)) if (s := _seq_of(k)) is not None)
        with ThreadPoolExecutor(max_workers=16) as pool:
            bodies = list(pool.map(lambda s: self.s3.get(self._key(service, s)), seqs))
        return [(s, b) for s, b in zip(seqs, bodies, strict=True) if b is not None]

    # -- writing ----------------------------------------------------------------------------------

    def append(
        self,
        service: str,
        event: LedgerEvent,
        digest: Digest,
        *,
        actor: str,
        environment: str | None = None,
        version: str | None = None,
        reason: str = "",
        gates: list[dict[str, Any]] | None = None,
        details: dict[str, Any] | None = None,
        idempotency_id: str | None = None,
        at: dt.datetime | None = None,
    ) -> LedgerRecord:
        """Append one record and return it (or the identical one an earlier try already wrote)."""
        idem = idempotency_id or uuid.uuid4().hex
        tip = self._tips.get(service) or self.tip(service)
        for attempt in range(1, self.max_attempts + 1):
            draft = LedgerRecord(
                seq=tip.seq + 1,
                prev=tip.hash,
                service=service,
                event=event,
                environment=environment,
                digest=digest,
                version=version,
                actor=actor,
                reason=reason,
                at=at or utcnow(),
                idempotency_id=idem,
                gates=gates or [],
                details=details or {},
                state=LedgerState(),
            )
            rec = draft.model_copy(update={"state": apply_event(tip.state, draft)})
            body = rec.canonical_bytes()
            try:
                self.s3.put(
                    self._key(service, rec.seq), body, create_only=True, content_type="application/json"
                )
            except PreconditionFailed:
                # The place is taken. It may be ours: a retried PUT whose first try landed.
                read = self._read(service, rec.seq)
                if read is None:  # deleted in between; try the same place again
                    continue
                theirs_body, theirs = read
                if theirs.idempotency_id == idem:
                    self._remember(service, theirs_body, theirs)
                    return theirs
                tip = Tip(theirs.seq, Digest.of_bytes(theirs_body), theirs.state, theirs)
                # Walk on to the real end before the next try: cheaper than colliding again.
                tip = self._advance(service, tip, idem)
                if tip.record is not None and tip.record.idempotency_id == idem:
                    self._tips[service] = tip
                    return tip.record
                if attempt > 3:
                    time.sleep(random.uniform(0, min(0.5, 0.01 * attempt)))
                continue
            self._remember(service, body, rec)
            return rec
        raise LedgerContention(service, self.max_attempts)

    def _remember(self, service: str, body: bytes, rec: LedgerRecord) -> None:
        digest = Digest.of_bytes(body)
        self._tips[service] = Tip(rec.seq, digest, rec.state, rec)
        self._write_hint(service, rec.seq, digest)

    def _advance(self, service: str, tip: Tip, idem: str) -> Tip:
        seq = tip.seq + 1
        while (read := self._read(service, seq)) is not None:
            body, rec = read
            tip = Tip(seq, Digest.of_bytes(body), rec.state, rec)
            if rec.idempotency_id == idem:
                return tip
            seq += 1
        return tip

    def _write_hint(self, service: str, seq: int, digest: Digest) -> None:
        body = json.dumps({"seq": seq, "hash": str(digest)}).encode()
        self.s3.put(self._dir(service) + HEAD, body, content_type="application/json")

    # -- verification -----------------------------------------------------------------------------

    def verify(self, service: str) -> VerifyReport:
        """Re-check the whole chain; name every record that was edited, removed or reordered."""
        report = VerifyReport(service=service)
        keys = list(self.s3.list_keys(self._dir(service)))
        stray = [k for k in keys if _seq_of(k) is None and not k.endswith("/" + HEAD)]
        for k in stray:
            report.findings.append(f"unexpected object {k} in the ledger folder")
        raw = self._raw(service)
        report.records = len(raw)
        if not raw:
            return report
        expected_seq = 1
        prev_hash: Digest | None = None
        prev_state = LedgerState()
        hashes: dict[int, Digest] = {}
        parsed: dict[int, LedgerRecord] = {}
        for seq, body in raw:
            if seq != expected_seq:
                missing = f"{expected_seq}" if seq == expected_seq + 1 else f"{expected_seq}..{seq - 1}"
                report.findings.append(f"record {missing} is missing (deleted)")
                prev_hash = None
            h = Digest.of_bytes(body)
            hashes[seq] = h
            try:
                rec = LedgerRecord.model_validate_json(body)
            except ValidationError as exc:
                report.findings.append(
                    f"record {seq} is not a valid ledger record (edited): {exc.errors()[0]['msg']}"
                )
                expected_seq = seq + 1
                prev_hash = h
                continue
            parsed[seq] = rec
            if rec.seq != seq:
                report.findings.append(
                    f"record {seq} holds the content of record {rec.seq} (records were reordered)"
                )
            if rec.service != service:
                report.findings.append(f"record {seq} belongs to service {rec.service!r}")
            if seq == 1 and rec.prev is not None:
                report.findings.append("record 1 names a previous record (edited)")
            elif seq > 1 and prev_hash is not None and rec.prev != prev_hash:
                report.findings.append(self._explain_break(seq, rec, hashes, parsed))
            elif rec.seq == seq and rec.state != apply_event(prev_state, rec):
                report.findings.append(
                    f"record {seq} claims a state that does not follow from the records before it (edited)"
                )
            prev_state = rec.state
            prev_hash = h
            expected_seq = seq + 1
        last = raw[-1][0]
        report.head = hashes[last]
        hint = self._hint_full(service)
        if hint is not None:
            hint_seq, hint_hash = hint
            if hint_seq > last:
                missing = f"{last + 1}" if hint_seq == last + 1 else f"{last + 1}..{hint_seq}"
                report.findings.append(
                    f"record {missing} is missing: the head pointer says the ledger reaches "
                    f"{hint_seq} (deleted)"
                )
            elif hint_hash and hint_seq in hashes and hashes[hint_seq] != hint_hash:
                report.findings.append(
                    f"record {hint_seq} was changed after it was written: the head pointer recorded "
                    f"{hint_hash}, it now hashes to {hashes[hint_seq]}"
                )
        return report

    @staticmethod
    def _explain_break(
        seq: int, rec: LedgerRecord, hashes: dict[int, Digest], parsed: dict[int, LedgerRecord]
    ) -> str:
        before = parsed.get(seq - 1)
        if before is not None and before.seq != seq - 1:
            return f"record {seq} does not follow record {seq - 1} (records were reordered)"
        return (
            f"record {seq - 1} was changed after it was written: record {seq} expects it to hash to "
            f"{rec.prev}, it now hashes to {hashes[seq - 1]}"
        )

    def verify_or_raise(self, service: str) -> VerifyReport:
        report = self.verify(service)
        if not report.ok:
            raise LedgerCorrupt(service, report.findings)
        return report


def _seq_of(key: str) -> int | None:
    name = key.rsplit("/", 1)[-1]
    stem = name.removesuffix(".json")
    if name.endswith(".json") and len(stem) == SEQ_WIDTH and stem.isdigit():
        return int(stem)
    return None
