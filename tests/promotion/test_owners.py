"""The claim to tell owners (promotion/owners.py) against the real SeaweedFS server: of any number
of processes meeting one incident at once exactly one tells; a told incident is not told again
within the window; a claim whose process died is taken over after the lease, by one."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

from promotion import owners
from promotion.local_s3 import LocalS3
from promotion.s3 import S3
from promotion.store import ArtifactStore
from tests.faultproxy import FaultProxy, Rule, proxied_pipeline

T0 = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)


def _key(s3: S3) -> str:
    return s3.key("notified", "api", f"gate_failed-{uuid.uuid4().hex}.json")


def _race(s3: S3, key: str, now: dt.datetime, n: int = 8) -> list[owners.Claim]:
    together = threading.Barrier(n)

    def one(_: int) -> owners.Claim | None:
        together.wait(timeout=30)
        return owners.claim(s3, key, now)

    with ThreadPoolExecutor(n) as pool:
        return [c for c in pool.map(one, range(n)) if c is not None]


def test_of_many_at_once_one_claims_and_a_told_incident_waits_for_the_window(s3: S3) -> None:
    key = _key(s3)
    (held,) = _race(s3, key, T0)
    owners.settle(s3, held, T0, ["oncall"])
    assert owners.claim(s3, key, T0 + owners.DEDUPE_WINDOW - dt.timedelta(seconds=1)) is None
    # Past the window the marker is replaced, again by exactly one of those meeting it at once.
    (again,) = _race(s3, key, T0 + owners.DEDUPE_WINDOW)
    assert again.etag != held.etag


def test_a_released_claim_is_free_and_a_dead_one_is_taken_over_after_the_lease(s3: S3) -> None:
    key = _key(s3)
    held = owners.claim(s3, key, T0)
    assert held is not None
    owners.release(s3, held)  # the telling failed: the next retry tells
    dead = owners.claim(s3, key, T0)
    assert dead is not None and s3.get(key) is not None
    # Its process died while telling: within the lease nobody else tells, after it one does.
    assert owners.claim(s3, key, T0 + owners.CLAIM_LEASE - dt.timedelta(seconds=1)) is None
    (taken,) = _race(s3, key, T0 + owners.CLAIM_LEASE)
    # The dead claim's late release and settle touch nothing: the marker is no longer theirs.
    owners.release(s3, dead)
    owners.settle(s3, dead, T0, [])
    found = s3.get_with_etag(key)
    assert found is not None and found[1] == taken.etag


def test_an_unreadable_marker_does_not_stop_the_telling(s3: S3) -> None:
    key = _key(s3)
    s3.put(key, b"{not json", content_type="application/json")
    assert owners.claim(s3, key, T0) is not None


def test_a_metric_transition_is_told_once_past_the_next_night(s3: S3) -> None:
    key = _key(s3)
    held = owners.claim(s3, key, T0, owners.METRIC_TOLD_WINDOW)
    assert held is not None
    owners.settle(s3, held, T0, ["oncall"])
    assert owners.claim(s3, key, T0 + dt.timedelta(days=1), owners.METRIC_TOLD_WINDOW) is None
    assert owners.claim(s3, key, T0 + owners.METRIC_TOLD_WINDOW, owners.METRIC_TOLD_WINDOW) is not None


def test_a_claim_whose_answer_was_lost_is_still_ours(s3_server: LocalS3, prefix: str) -> None:
    """The PUT lands but its answer never comes back; botocore's retry of it gets 412: the marker
    carries this claim's token, so the incident is told (by us) rather than by nobody."""
    with FaultProxy(s3_server.endpoint_url) as proxy:
        s3 = ArtifactStore(proxied_pipeline(s3_server, prefix, proxy)).s3
        key = _key(s3)
        lost = proxy.add(Rule("PUT", "/notified/", "drop_response"))
        held = owners.claim(s3, key, T0)
        assert lost.hits == 1, "the fault was not injected"
        assert held is not None
        found = s3.get_with_etag(key)
        assert found is not None and found[1] == held.etag
        assert owners.claim(s3, key, T0) is None  # and nobody else's
