from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from promotion.config import Pipeline
from promotion.digest import Digest
from promotion.errors import LedgerCorrupt, StoreUnreachable
from promotion.ledger import Ledger
from promotion.local_s3 import LocalS3
from promotion.s3 import S3, make_client
from tests.conftest import make_pipeline
from tests.faultproxy import FaultProxy, Rule

D1 = Digest.of_bytes(b"one")
D2 = Digest.of_bytes(b"two")


def ledger_for(pipeline: Pipeline) -> Ledger:
    return Ledger(S3(pipeline.store))


def test_chain_and_derived_state(pipeline: Pipeline) -> None:
    led = ledger_for(pipeline)
    r1 = led.append("api", "published", D1, actor="ci", version="1")
    r2 = led.append(
        "api", "promoted", D1, actor="alice", environment="dev", version="1", reason="gates green"
    )
    r3 = led.append("api", "promoted", D2, actor="bob", environment="dev", version="2")
    r4 = led.append("api", "promoted", D1, actor="bob", environment="staging", version="1")
    assert [r.seq for r in (r1, r2, r3, r4)] == [1, 2, 3, 4]
    assert r1.prev is None
    assert r2.prev == Digest.of_bytes(r1.canonical_bytes())
    state = led.state("api")
    assert state.environments["dev"].digest == D2 and state.environments["dev"].by == "bob"
    assert state.environments["staging"].seq == 4
    assert state.latest_published is not None and state.latest_published.digest == D1
    assert led.state("web").environments == {}  # other services are separate ledgers
    report = led.verify("api")
    assert report.ok and report.records == 4


def test_state_is_found_in_constant_requests(pipeline: Pipeline) -> None:
    led = ledger_for(pipeline)
    for i in range(30):
        led.append("api", "promoted", D1, actor="x", environment="dev", version=str(i))
    sent: list[str] = []
    led.s3.client.meta.events.register("before-send.s3", lambda request, **_: sent.append(request.method))
    assert led.state("api").environments["dev"].version == "29"
    assert len(sent) == 3, sent  # head hint, last record, probe for the next one


def test_an_append_from_a_remembered_tip_saves_its_lookup_and_survives_it_going_stale(
    pipeline: Pipeline,
) -> None:
    """``tip(remember=True)`` (a publish looks for its own event first) lets the next append
    skip finding the tip; when another writer appended meanwhile, the append still takes the
    next free place, chained to what is really there."""
    led, other = ledger_for(pipeline), ledger_for(pipeline)
    led.append("api", "published", D1, actor="ci", version="1")
    fresh = ledger_for(pipeline)
    fresh.tip("api", remember=True)
    sent: list[str] = []
    fresh.s3.client.meta.events.register("before-send.s3", lambda request, **_: sent.append(request.method))
    r2 = fresh.append("api", "promoted", D1, actor="ci", environment="dev", version="1")
    assert r2.seq == 2 and sent == ["PUT", "PUT"], sent  # the record and the head hint only
    led.tip("api", remember=True)
    r3 = other.append("api", "promoted", D2, actor="bob", environment="dev", version="2")
    r4 = led.append("api", "promoted", D1, actor="alice", environment="staging", version="1")
    assert (r3.seq, r4.seq) == (3, 4)
    assert r4.prev == Digest.of_bytes(r3.canonical_bytes())
    assert r4.state.environments["dev"].digest == D2  # the state follows from the real record 3
    assert led.verify("api").ok


def test_concurrent_appends_8_threads_x_10(pipeline: Pipeline) -> None:
    led = ledger_for(pipeline)
    barrier = threading.Barrier(8)

    def writer(w: int) -> list[int]:
        # A client per writer, as separate processes would have.
        mine = Ledger(S3(pipeline.store, make_client(pipeline.store)))
        barrier.wait()
        return [
            mine.append("api", "approval", D1, actor=f"w{w}", idempotency_id=f"w{w}-{i}").seq
            for i in range(10)
        ]

    with ThreadPoolExecutor(8) as pool:
        seqs = [s for got in pool.map(writer, range(8)) for s in got]
    assert sorted(seqs) == list(range(1, 81))  # no place taken twice, no gap
    records = led.records("api")
    assert len(records) == 80
    assert len({r.idempotency_id for r in records}) == 80  # no duplicates
    assert {r.idempotency_id for r in records} == {f"w{w}-{i}" for w in range(8) for i in range(10)}
    assert led.verify("api").ok


def test_retry_after_a_dropped_response_leaves_exactly_one_record(s3_server: LocalS3, prefix: str) -> None:
    with FaultProxy(s3_server.endpoint_url) as proxy:
        pipeline = make_pipeline(proxy.url, s3_server.bucket, prefix)
        led = ledger_for(pipeline)
        led.append("api", "published", D1, actor="ci")
        # The server stores record 2, but the client never hears back; botocore retries the PUT,
        # meets 412 (its own first try), and the ledger recognises its idempotency id.
        proxy.rules.append(Rule("PUT", r"/ledger/api/000000000002\.json", "drop_response"))
        rec = led.append("api", "promoted", D1, actor="alice", environment="dev")
        assert proxy.rules[0].hits == 1
        puts = [status for method, path, status in proxy.log if method == "PUT" and "000000000002" in path]
        assert puts == [200, 412]
    records = ledger_for(make_pipeline(s3_server.endpoint_url, s3_server.bucket, prefix)).records("api")
    assert [r.seq for r in records] == [1, 2]
    assert records[1].idempotency_id == rec.idempotency_id


def test_unreachable_server_is_one_clear_error_and_writes_nothing(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMOTION_S3_MAX_ATTEMPTS", "1")
    dead = make_pipeline("http://127.0.0.1:9", pipeline.store.bucket, pipeline.store.prefix)
    with pytest.raises(StoreUnreachable, match=r"cannot reach the S3 endpoint http://127\.0\.0\.1:9/"):
        ledger_for(dead).append("api", "published", D1, actor="ci")
    assert ledger_for(pipeline).records("api") == []


# --- tampering ------------------------------------------------------------------------------------


@pytest.fixture
def filled(pipeline: Pipeline) -> Ledger:
    led = ledger_for(pipeline)
    for i in range(1, 7):
        led.append("api", "promoted", D1 if i % 2 else D2, actor="ci", environment="dev", version=str(i))
    assert led.verify("api").ok
    return led


def key(led: Ledger, seq: int) -> str:
    return led._key("api", seq)


def raw(led: Ledger, seq: int) -> bytes:
    body = led.s3.get(key(led, seq))
    assert body is not None
    return body


def test_verify_names_an_edited_record(filled: Ledger) -> None:
    doc = json.loads(raw(filled, 3))
    doc["actor"] = "mallory"
    filled.s3.client.put_object(Bucket=filled.s3.bucket, Key=key(filled, 3), Body=json.dumps(doc).encode())
    report = filled.verify("api")
    assert not report.ok
    assert any(f.startswith("record 3 was changed after it was written") for f in report.findings), (
        report.findings
    )
    with pytest.raises(LedgerCorrupt, match="record 3 was changed"):
        filled.verify_or_raise("api")


def test_verify_names_an_edited_last_record(filled: Ledger) -> None:
    doc = json.loads(raw(filled, 6))
    doc["reason"] = "nothing to see"
    filled.s3.client.put_object(Bucket=filled.s3.bucket, Key=key(filled, 6), Body=json.dumps(doc).encode())
    assert any(f.startswith("record 6 was changed") for f in filled.verify("api").findings)


def test_verify_names_a_deleted_record(filled: Ledger) -> None:
    filled.s3.delete(key(filled, 4))
    findings = filled.verify("api").findings
    assert "record 4 is missing (deleted)" in findings, findings


def test_verify_names_a_deleted_last_record(filled: Ledger) -> None:
    filled.s3.delete(key(filled, 6))
    findings = filled.verify("api").findings
    assert any(f.startswith("record 6 is missing") for f in findings), findings


def test_verify_names_a_swapped_pair(filled: Ledger) -> None:
    b2, b3 = raw(filled, 2), raw(filled, 3)
    filled.s3.client.put_object(Bucket=filled.s3.bucket, Key=key(filled, 2), Body=b3)
    filled.s3.client.put_object(Bucket=filled.s3.bucket, Key=key(filled, 3), Body=b2)
    findings = filled.verify("api").findings
    assert "record 2 holds the content of record 3 (records were reordered)" in findings, findings
    assert "record 3 holds the content of record 2 (records were reordered)" in findings


def test_verify_catches_a_forged_state(filled: Ledger) -> None:
    # Re-chaining after an edit is possible for someone with write access, so the state that
    # each record claims is re-derived too: here record 6 lies about what runs in prod.
    doc = json.loads(raw(filled, 6))
    doc["state"]["environments"]["prod"] = doc["state"]["environments"]["dev"]
    filled.s3.client.put_object(
        Bucket=filled.s3.bucket,
        Key=key(filled, 6),
        Body=json.dumps(doc, sort_keys=True, separators=(",", ":")).encode(),
    )
    findings = filled.verify("api").findings
    assert any("record 6" in f for f in findings), findings
