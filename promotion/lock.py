"""One promotion per (service, environment) at a time: a leased lock kept in the store itself.

>>> with StoreLock(s3, "api", "prod", Holder.here(run_id, run_name)) as lock:   # doctest: +SKIP
...     deploy(...)
...     lock.still_held()          # raises LockLost if the lease was lost meanwhile
...     ledger.append(...)

Why not Prefect's global concurrency limits (what this replaces)? Measured here with Prefect 3.9:
a slot taken by a process killed with ``kill -9`` stays taken for its lease (~300 s), and the next
promotion waits in silence; on a SQLite Prefect server every ``increment-with-lease`` call was
answered 503 ("database is locked") ~2.5 times per promotion, which cost ~5 s of client back-off.
A shorter Prefect ``lease_duration`` would free a dead holder's slot sooner, but the server
refuses leases under 60 s (``ge=60`` in ``prefect/server/api/concurrency_limits_v2.py``; not
benchmarked further), it would still say nothing about who holds the slot, and it would still put
writes on the busy Prefect database in every stage. Here a dead holder's lock is taken over ~15 s
after its last renewal (measured in ``tests/promotion/test_lock.py`` with a 2 s lease: under 4 s
after ``kill -9``). The store is the source of truth for everything else the product decides, so the lock
lives there too, and one S3 request takes or renews it.

The object ``{prefix}locks/{service}/{environment}.json`` holds who holds the lock (flow run id,
run name, host, pid), since when, a random token and a renewal counter:

- **acquire**: ``PUT`` with ``If-None-Match: *``; of concurrent takers exactly one succeeds.
- **renew**: a holder thread rewrites the object every ``lease/3`` seconds with ``If-Match`` on the
  ETag it last wrote (a compare-and-swap; the counter makes every body, hence every ETag, new).
- **expiry**, judged by the waiter's OWN monotonic clock, never by timestamps written by another
  machine, so clock skew cannot break it: a waiter that sees the same ETag for longer than the
  lease takes the lock over with ``If-Match`` on that stale ETag. Of several waiters exactly one
  wins the swap; the others see a new ETag and start counting again.
- **release**: ``DELETE`` with ``If-Match`` on our last ETag, so a holder that lost its lease can
  never delete its successor's lock.

A holder that loses its lease must know it. It counts its lease from the moment it SENT its last
successful renewal (by its own monotonic clock): a waiter starts counting only after that renewal
reached the store, so the holder's deadline always comes first. :meth:`StoreLock.still_held`
raises :class:`LockLost` once that deadline passed or a renewal was refused (someone took over);
the critical section calls it before each write. That narrows the window but cannot close it: a
process stopped between the check and its write (a long GC pause, SIGSTOP) may still write after
a takeover. That is why the ledger's create-only writes remain the last line of defence: records
are written with ``If-None-Match: *`` on the next sequence number, so two writers never overwrite
each other, both decisions stay in the hash-chained history in the order they landed, and
``promote status`` derives the truth from it.

S3 errors while acquiring or renewing are infrastructure errors: retried with backoff (after
botocore's own retries), never a verdict on a digest. A waiter that cannot read the lock for its
whole timeout raises the last store error; a holder that cannot renew for a whole lease loses the
lock (and finds out through :meth:`still_held`).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType

from pydantic import BaseModel, ConfigDict, ValidationError

from promotion.errors import LockLost, LockTimeout, PreconditionFailed, StoreError
from promotion.s3 import S3

#: A holder that has not renewed for this long is presumed dead (judged by each waiter's clock).
LEASE_S = 15.0
#: Waiters log who holds the lock when they start waiting, then this often.
REPORT_EVERY_S = 30.0

_log = logging.getLogger(__name__)


class Holder(BaseModel):
    """Who holds a lock: enough for a person to find the run and the process."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flow_run_id: str
    run_name: str
    host: str
    pid: int

    @classmethod
    def here(cls, flow_run_id: str, run_name: str) -> Holder:
        return cls(flow_run_id=flow_run_id, run_name=run_name, host=socket.gethostname(), pid=os.getpid())

    def describe(self) -> str:
        return f"{self.run_name} ({self.flow_run_id}) on {self.host} pid {self.pid}"


class LockBody(BaseModel):
    """The lock object's JSON. ``acquired_at`` is for people; nobody's expiry depends on it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = 1
    token: str
    holder: Holder
    acquired_at: dt.datetime
    renewals: int = 0
    lease_s: float
    taken_over_from: Holder | None = None


class StoreLock:
    """The lock of one (service, environment); a context manager. Not reentrant."""

    def __init__(
        self,
        s3: S3,
        service: str,
        environment: str,
        holder: Holder,
        *,
        lease_s: float = LEASE_S,
        timeout_s: float = 3600.0,
        poll_s: float | None = None,
        report_every_s: float = REPORT_EVERY_S,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.s3 = s3
        self.name = f"{service}/{environment}"
        self.key = s3.key("locks", service, f"{environment}.json")
        self.holder = holder
        self.lease_s = lease_s
        self.timeout_s = timeout_s
        # Polling a few times per lease: a released or expired lock is taken within ~lease/5.
        self.poll_s = poll_s if poll_s is not None else min(1.0, lease_s / 5)
        self.report_every_s = report_every_s
        self._log = log or _log.info
        self._token = secrets.token_hex(16)
        self._body: LockBody | None = None
        self._etag: str | None = None
        # monotonic time at which the last successful write was SENT: our lease runs from there.
        self._confirmed_at = 0.0
        self._lost: str | None = None
        self._state = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    # -- public -----------------------------------------------------------------------------------

    def acquire(self) -> LockBody:
        """Wait for the lock (logging who holds it) and take it; start renewing it."""
        start = time.monotonic()
        deadline = start + self.timeout_s
        seen_etag: str | None = None
        seen_since = 0.0
        last_report = -1.0
        current: LockBody | None = None
        backoff = self.poll_s
        while True:
            now = time.monotonic()
            try:
                if self._try_create():
                    break
                found = self.s3.get_with_etag(self.key)
                if found is not None:
                    raw, etag = found
                    current = self._parse(raw)
                    now = time.monotonic()
                    if current is not None and current.token == self._token:
                        # Our own create landed although its answer was lost (a retried request).
                        self._took(current, etag, sent_at=now)
                        break
                    if etag != seen_etag:
                        seen_etag, seen_since = etag, now
                    elif now - seen_since > self.lease_s and self._try_take_over(etag, current):
                        break
                    if last_report < 0 or now - last_report >= self.report_every_s:
                        last_report = now
                        self._log(self._waiting_message(current, now - start))
                backoff = self.poll_s
            except StoreError as exc:  # infrastructure: retry with backoff, never a verdict
                if time.monotonic() + backoff > deadline:
                    raise
                self._log(f"lock {self.name}: store error, retrying in {backoff:.1f}s: {exc}")
                time.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            if time.monotonic() + self.poll_s > deadline:
                who = current.holder.describe() if current else "nobody (it kept changing hands)"
                raise LockTimeout(self.name, time.monotonic() - start, who)
            time.sleep(self.poll_s)  # polling the store for a released or expired lock
        assert self._body is not None
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew_loop, name=f"lock-{self.name}", daemon=True)
        self._renewer.start()
        return self._body

    def still_held(self) -> None:
        """Raise :class:`LockLost` unless our lease is certainly still ours (call before writing)."""
        with self._state:
            if self._lost is not None:
                raise LockLost(self.name, self._lost)
            if self._body is None:
                raise LockLost(self.name, "it was never acquired or was released")
            age = time.monotonic() - self._confirmed_at
            if age >= self.lease_s:
                self._lost = f"not renewed for {age:.1f}s, over the {self.lease_s:.0f}s lease"
                raise LockLost(self.name, self._lost)

    def stop_renewing(self) -> None:
        """Stop the renewal thread but keep the lock object: the lease then runs out.

        What a holder that hangs looks like to everyone else; tests use it to simulate one.
        """
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None

    def release(self) -> None:
        """Stop renewing and delete the lock if it is still ours (``If-Match``)."""
        self.stop_renewing()
        with self._state:
            etag, self._etag, self._body = self._etag, None, None
        if etag is None:
            return
        try:
            self.s3.delete(self.key, if_match=etag)
        except PreconditionFailed:
            pass  # someone took it over after our lease ran out: theirs now, leave it
        except StoreError as exc:
            # The lease runs out by itself; failing the run for it would hide its real outcome.
            self._log(f"lock {self.name}: could not release ({exc}); it expires in {self.lease_s:.0f}s")

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    # -- internals --------------------------------------------------------------------------------

    def _new_body(self, taken_over_from: Holder | None = None) -> LockBody:
        return LockBody(
            token=self._token,
            holder=self.holder,
            acquired_at=dt.datetime.now(dt.UTC),
            lease_s=self.lease_s,
            taken_over_from=taken_over_from,
        )

    def _put(self, body: LockBody, *, create_only: bool = False, if_match: str | None = None) -> str:
        return self.s3.put(
            self.key,
            body.model_dump_json().encode(),
            content_type="application/json",
            create_only=create_only,
            if_match=if_match,
        )

    def _took(self, body: LockBody, etag: str, *, sent_at: float) -> None:
        with self._state:
            self._body, self._etag, self._confirmed_at, self._lost = body, etag, sent_at, None

    def _try_create(self) -> bool:
        body = self._new_body()
        sent = time.monotonic()
        try:
            etag = self._put(body, create_only=True)
        except PreconditionFailed:
            return False
        self._took(body, etag, sent_at=sent)
        return True

    def _try_take_over(self, stale_etag: str, stale: LockBody | None) -> bool:
        body = self._new_body(taken_over_from=stale.holder if stale else None)
        sent = time.monotonic()
        try:
            etag = self._put(body, if_match=stale_etag)
        except PreconditionFailed:
            return False  # another waiter won, or the holder renewed at the last moment
        was = stale.holder.describe() if stale else "an unreadable lock"
        self._log(f"lock {self.name}: took it over from {was}, silent for over {self.lease_s:.0f}s")
        self._took(body, etag, sent_at=sent)
        return True

    def _renew_loop(self) -> None:
        interval = self.lease_s / 3
        backoff = 0.2
        while not self._stop.wait(interval):
            while True:
                outcome = self._renew_once()
                if outcome != "retry" or self._stop.is_set():
                    break
                # An infrastructure error: try again soon; still_held() turns false by itself
                # once a whole lease passed without a confirmed renewal.
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, interval)
            backoff = 0.2
            if outcome == "lost":
                return

    def _renew_once(self) -> str:
        with self._state:
            if self._body is None or self._etag is None or self._lost is not None:
                return "lost"
            body = self._body.model_copy(update={"renewals": self._body.renewals + 1})
            etag = self._etag
        sent = time.monotonic()
        try:
            new_etag = self._put(body, if_match=etag)
        except PreconditionFailed:
            # A 412 after a retried request may mean our first attempt landed: look before giving up.
            try:
                found = self.s3.get_with_etag(self.key)
            except StoreError:
                return "retry"
            current = self._parse(found[0]) if found else None
            if found is not None and current == body:
                new_etag = found[1]
            else:
                who = current.holder.describe() if current else "nobody (the lock object is gone)"
                with self._state:
                    self._lost = f"renewal refused: the lock is now held by {who}"
                self._log(f"lock {self.name}: LOST, {self._lost}")
                return "lost"
        except StoreError as exc:
            self._log(f"lock {self.name}: renewal failed, retrying: {exc}")
            return "retry"
        with self._state:
            if self._lost is None and self._body is not None:
                self._body, self._etag, self._confirmed_at = body, new_etag, sent
        return "renewed"

    def _parse(self, raw: bytes) -> LockBody | None:
        try:
            return LockBody.model_validate_json(raw)
        except ValidationError:
            return None  # unreadable: treated as a holder that never renews, so it expires

    def _waiting_message(self, current: LockBody | None, waited_s: float) -> str:
        if current is None:
            return f"waiting for the lock of {self.name} (an unreadable lock object, {waited_s:.0f}s so far)"
        return (
            f"waiting for the lock of {self.name} held by {current.holder.describe()} since "
            f"{current.acquired_at:%Y-%m-%d %H:%M:%S}Z ({current.renewals} renewals seen, "
            f"{waited_s:.0f}s waited so far)"
        )
