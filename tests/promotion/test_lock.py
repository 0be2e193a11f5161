"""The store lock against a real SeaweedFS: exclusion, death of a holder, takeover, renewal, loss."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from promotion.errors import LockLost, LockTimeout
from promotion.local_s3 import LocalS3
from promotion.lock import Holder, LockBody, StoreLock
from promotion.s3 import S3
from tests.conftest import make_pipeline
from tests.faultproxy import FaultProxy, Rule

REPO = Path(__file__).resolve().parents[2]

#: A short lease keeps these tests to seconds; the logic does not depend on its length.
LEASE = 2.0

# A holder or a waiter in its own process. argv: endpoint bucket prefix lease mode name timeout.
# mode "hold": take the lock, print ACQUIRED, keep renewing until stdin closes or gets a line,
# then release; mode "take": take the lock, print GOT <seconds waited>, release. Log lines go to
# stderr, as a flow's logger would show them.
CHILD = r"""
import sys, time
from promotion.lock import Holder, StoreLock
from promotion.s3 import S3
from tests.conftest import make_pipeline
endpoint, bucket, prefix, lease, mode, name, timeout = sys.argv[1:8]
s3 = S3(make_pipeline(endpoint, bucket, prefix).store)
log = lambda m: print(m, file=sys.stderr, flush=True)
lock = StoreLock(s3, "api", "prod", Holder.here("run-" + name, name), lease_s=float(lease),
                 timeout_s=float(timeout), log=log)
t0 = time.monotonic()
lock.acquire()
if mode == "hold":
    print("ACQUIRED", flush=True)
    sys.stdin.readline()
else:
    print(f"GOT {time.monotonic() - t0:.2f}", flush=True)
lock.release()
"""


class Child:
    def __init__(self, s3_server: LocalS3, prefix: str, mode: str, name: str, timeout: float = 60) -> None:
        args = [s3_server.endpoint_url, s3_server.bucket, prefix, str(LEASE), mode, name, str(timeout)]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, *args],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True).start()

    @staticmethod
    def _pump(stream: object, sink: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            sink.append(line.rstrip("\n"))

    def wait_for(self, what: str, in_stderr: bool = False, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        sink = self.err if in_stderr else self.out
        while time.monotonic() < deadline:
            for line in list(sink):
                if what in line:
                    return line
            if self.proc.poll() is not None and not any(what in x for x in sink):
                time.sleep(0.2)  # let the pump threads drain the pipes once more
                if not any(what in x for x in sink):
                    raise AssertionError(f"child exited {self.proc.returncode}: {self.out} {self.err}")
            time.sleep(0.05)  # polling the child's output for a condition, with a deadline
        raise AssertionError(f"{what!r} never came: {self.out} {self.err}")

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def children(s3_server: LocalS3, prefix: str) -> Iterator[list[Child]]:
    made: list[Child] = []
    yield made
    for c in made:
        c.close()


def _lock(s3: S3, name: str, *, timeout_s: float = 60, log: Callable[[str], None] | None = None) -> StoreLock:
    return StoreLock(
        s3, "api", "prod", Holder.here(f"run-{name}", name), lease_s=LEASE, timeout_s=timeout_s, log=log
    )


def _body(s3: S3) -> LockBody | None:
    raw = s3.get(s3.key("locks", "api", "prod.json"))
    return LockBody.model_validate_json(raw) if raw else None


def test_threads_exclude_each_other(s3: S3) -> None:
    inside = 0
    overlaps: list[int] = []
    guard = threading.Lock()

    def work(name: str) -> None:
        nonlocal inside
        for _ in range(3):
            with _lock(s3, name) as lock:
                with guard:
                    inside += 1
                    overlaps.append(inside)
                s3.put(s3.key("scratch", name), b"x")  # some real work inside
                lock.still_held()
                with guard:
                    inside -= 1

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(overlaps) == 12 and max(overlaps) == 1
    assert _body(s3) is None  # released: the object is gone


def test_processes_exclude_each_other_and_waiter_names_the_holder(
    s3_server: LocalS3, prefix: str, children: list[Child]
) -> None:
    a = Child(s3_server, prefix, "hold", "alpha")
    children.append(a)
    a.wait_for("ACQUIRED")
    b = Child(s3_server, prefix, "take", "beta")
    children.append(b)
    line = b.wait_for("waiting for the lock of api/prod held by alpha", in_stderr=True)
    assert f"pid {a.proc.pid}" in line and " since " in line
    assert not b.out  # still waiting while alpha holds it
    assert a.proc.stdin is not None
    a.proc.stdin.write("release\n")
    a.proc.stdin.flush()
    b.wait_for("GOT")
    assert b.proc.wait(30) == 0 and a.proc.wait(30) == 0


def test_holder_killed_with_kill9_waiter_takes_over_within_the_lease(
    s3_server: LocalS3, prefix: str, children: list[Child]
) -> None:
    a = Child(s3_server, prefix, "hold", "alpha")
    children.append(a)
    a.wait_for("ACQUIRED")
    b = Child(s3_server, prefix, "take", "beta")
    children.append(b)
    b.wait_for("held by alpha", in_stderr=True)
    dead_pid = a.proc.pid
    a.kill9()
    killed = time.monotonic()
    b.wait_for("GOT", timeout=LEASE + 10)
    took = time.monotonic() - killed
    assert took < LEASE + 5, took
    taken = b.wait_for("took it over from alpha", in_stderr=True)
    assert f"pid {dead_pid}" in taken


def test_eight_waiters_after_a_death_exactly_one_wins(
    s3: S3, s3_server: LocalS3, prefix: str, children: list[Child]
) -> None:
    a = Child(s3_server, prefix, "hold", "alpha")
    children.append(a)
    a.wait_for("ACQUIRED")
    waiting = threading.Barrier(9)
    winners: list[StoreLock] = []
    timeouts: list[LockTimeout] = []
    started = threading.Event()

    def wait(i: int) -> None:
        def log(message: str) -> None:
            if "waiting for the lock" in message and not started.is_set():
                started.set()

        lock = _lock(s3, f"w{i}", timeout_s=LEASE * 6, log=log)
        waiting.wait()
        try:
            lock.acquire()  # the winner keeps it (renewing) until the end of the test
            winners.append(lock)
        except LockTimeout as exc:
            timeouts.append(exc)

    threads = [threading.Thread(target=wait, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    waiting.wait()
    assert started.wait(30)
    a.kill9()
    for t in threads:
        t.join(120)
    assert len(winners) == 1 and len(timeouts) == 7
    assert all("held by" in str(e) and winners[0].holder.run_name in str(e) for e in timeouts)
    body = _body(s3)
    assert body is not None and body.holder == winners[0].holder
    assert body.taken_over_from is not None and body.taken_over_from.run_name == "alpha"
    winners[0].still_held()
    winners[0].release()


def test_renewal_keeps_a_long_holder_alive_past_several_leases(s3: S3) -> None:
    holder = _lock(s3, "long")
    holder.acquire()
    try:
        waiter = _lock(s3, "waiter", timeout_s=LEASE * 4)
        with pytest.raises(LockTimeout, match=r"held by long \(run-long\)"):
            waiter.acquire()
        holder.still_held()
        body = _body(s3)
        assert body is not None and body.holder == holder.holder and body.renewals >= 4
    finally:
        holder.release()
    assert _body(s3) is None


def test_a_holder_whose_lease_ran_out_finds_out_and_cannot_delete_its_successor(s3: S3) -> None:
    stale = _lock(s3, "stale")
    stale.acquire()
    stale.stop_renewing()  # a holder that hangs: alive, but no longer renewing
    successor = _lock(s3, "next")
    successor.acquire()  # after one lease of silence, judged by its own clock
    with pytest.raises(LockLost, match="not renewed for"):
        stale.still_held()
    stale.release()  # conditional delete: the successor's lock must survive it
    body = _body(s3)
    assert body is not None and body.holder.run_name == "next"
    successor.still_held()
    successor.release()


def test_a_renewal_refused_after_a_takeover_is_known_before_the_next_write(s3: S3) -> None:
    holder = _lock(s3, "holder")
    mine = holder.acquire()
    # Someone else now owns the object (what a waiter's takeover leaves): the holder's next
    # compare-and-swap renewal is refused with 412.
    other = LockBody(
        token="someone-else",
        holder=Holder(flow_run_id="run-x", run_name="x", host="elsewhere", pid=1),
        acquired_at=mine.acquired_at,
        lease_s=LEASE,
    )
    s3.put(s3.key("locks", "api", "prod.json"), other.model_dump_json().encode())
    deadline = time.monotonic() + LEASE * 3
    lost: LockLost | None = None
    while time.monotonic() < deadline and lost is None:
        try:
            holder.still_held()
        except LockLost as exc:
            lost = exc
        time.sleep(0.05)  # polling for the condition, with a deadline
    assert lost is not None and "renewal refused" in str(lost) and "x (run-x) on elsewhere" in str(lost)
    holder.release()
    assert _body(s3) == other  # not deleted by the holder that lost it


def test_store_errors_while_acquiring_are_retried_and_a_lost_answer_is_recognised(
    s3_server: LocalS3, prefix: str
) -> None:
    with FaultProxy(s3_server.endpoint_url) as proxy:
        s3 = S3(make_pipeline(proxy.url, s3_server.bucket, prefix).store)
        # 7 answers of 503: more than botocore's 5 tries, so the lock's own retry has to act.
        proxy.rules.append(Rule("PUT", r"/locks/api/prod\.json", "status", status=503, times=7))
        lock = _lock(s3, "patient")
        lock.acquire()
        lock.release()
        assert proxy.rules[0].hits == 7
        # The create lands but its answer is lost; botocore retries, meets 412 (its own first
        # try), and the lock recognises its token instead of waiting for itself.
        proxy.rules.append(Rule("PUT", r"/locks/api/prod\.json", "drop_response"))
        lock = _lock(s3, "lucky")
        t0 = time.monotonic()
        lock.acquire()
        assert time.monotonic() - t0 < LEASE
        assert proxy.rules[1].hits == 1
        lock.still_held()
        lock.release()
    assert _body(S3(make_pipeline(s3_server.endpoint_url, s3_server.bucket, prefix).store)) is None


def test_a_holder_whose_renewal_is_held_up_loses_the_lock_and_knows_it(
    s3_server: LocalS3, prefix: str
) -> None:
    """The renewal request stalls in the network (a hold in the fault proxy) while a waiter takes
    over: the holder knows before its next write, and once the renewal goes through it is refused."""
    direct = S3(make_pipeline(s3_server.endpoint_url, s3_server.bucket, prefix).store)
    with FaultProxy(s3_server.endpoint_url) as proxy:
        slow = S3(make_pipeline(proxy.url, s3_server.bucket, prefix).store)
        holder = _lock(slow, "stalled")
        holder.acquire()
        hold = Rule("PUT", r"/locks/api/prod\.json", "hold")
        proxy.rules.append(hold)
        hold.wait_arrived(LEASE * 3)  # the first renewal is stuck in the proxy
        successor = _lock(direct, "successor")
        successor.acquire()  # the object stayed unchanged for a lease: taken over
        with pytest.raises(LockLost, match="not renewed for"):
            holder.still_held()  # known before the holder writes anything more
        hold.release()  # the stale renewal reaches the store now: If-Match refuses it
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and [s for m, p, s in proxy.log if m == "PUT"][-1:] != [412]:
            time.sleep(0.05)  # polling the proxy's log for the refused renewal, with a deadline
        assert [s for m, p, s in proxy.log if m == "PUT" and "locks" in p][-1] == 412
        holder.release()
    body = _body(direct)
    assert body is not None and body.holder.run_name == "successor"
    assert body.taken_over_from is not None and body.taken_over_from.run_name == "stalled"
    successor.still_held()
    successor.release()
