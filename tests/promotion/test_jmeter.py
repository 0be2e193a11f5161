"""JMeter CSV results (issue 10 item 6): the real .jtl fixtures, variants of them and hostile files.

Expected figures are recomputed here from the fixture rows with the csv module and a plain
nearest-rank percentile over the sorted sample times, independently of the streaming parser.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from promotion import config as cfg
from promotion.errors import EvidenceError
from promotion.evidence import MAX_EVIDENCE_BYTES, EvidenceUnreadable, parse_perf
from promotion.evidence_intake import read_evidence
from promotion.gates import evaluate_perf

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures"
MINIMAL_COLUMNS = ["timeStamp", "elapsed", "label", "responseCode", "success"]


def fixture(relpath: str) -> bytes:
    """Bytes of a shared fixture; skips the test when the fixtures folder is not checked out."""
    if not FIXTURES.is_dir():
        pytest.skip("../shared/fixtures not present")
    return (FIXTURES / relpath).read_bytes()


def perf_gate(**kw: Any) -> cfg.PerfGate:
    return cfg.PerfGate.model_validate({"kind": "perf", **kw})


def rows_of(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode())))


def write_jtl(rows: list[dict[str, str]], columns: list[str], delimiter: str = ",") -> bytes:
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, columns, delimiter=delimiter, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def nearest_rank(values: list[int], p: float) -> float:
    ordered = sorted(values)
    return float(ordered[math.ceil(p * len(ordered)) - 1])


def unreadable(data: bytes) -> str:
    with pytest.raises(EvidenceUnreadable) as info:
        parse_perf(data)
    text = str(info.value)
    assert "\n" not in text and "Traceback" not in text
    return text


# --- the real files --------------------------------------------------------------------------


def test_kpi1_counts_failures_and_percentiles_from_every_sample() -> None:
    data = fixture("perf/jmeter-kpi1.jtl")
    rows = rows_of(data)
    elapsed = [int(r["elapsed"]) for r in rows]
    failed = [r for r in rows if r["success"] == "false"]
    summary = parse_perf(data)
    assert summary.format == "jmeter-csv" and summary.latency_metric == "elapsed"
    assert (summary.requests, summary.failures) == (len(rows), len(failed)) == (21, 9)
    assert summary.error_rate == pytest.approx(9 / 21)
    assert summary.p95_ms == nearest_rank(elapsed, 0.95)
    assert summary.p99_ms == nearest_rank(elapsed, 0.99)
    assert summary.max_ms == max(elapsed) and summary.avg_ms == pytest.approx(sum(elapsed) / 21)
    assert (summary.server_errors, summary.sub_results) == (0, 0)
    assert summary.errors == ["9 with 404 on 'bad'"]

    result = evaluate_perf(perf_gate(max_error_rate=0.05, p95_ms=50), [data])
    assert not result.passed and not result.errored
    assert result.reasons == [
        "error rate 42.86% (9/21 requests failed; 9 with 404 on 'bad') exceeds the maximum 5.00%"
    ]
    assert result.measured["format"] == "jmeter-csv"


def test_sub_results_are_not_requests() -> None:
    # JMeter's Aggregate Report leaves sub-results (here the two legs of a followed redirect)
    # out; their time is inside the parent's elapsed. So does the gate.
    data = fixture("perf/jmeter-results.jtl")
    rows = rows_of(data)
    parents = [r for r in rows if r["label"] == "HTTP Request"]
    summary = parse_perf(data)
    assert summary.requests == len(parents) == 100
    assert summary.sub_results == len(rows) - len(parents) == 200
    assert summary.failures == 0
    elapsed = [int(r["elapsed"]) for r in parents]
    assert (summary.p95_ms, summary.p99_ms) == (nearest_rank(elapsed, 0.95), nearest_rank(elapsed, 0.99))
    assert summary.max_ms == 685
    result = evaluate_perf(perf_gate(p99_ms=600, max_error_rate=0.0, min_requests=100), [data])
    assert result.passed, result.reasons
    assert result.measured["sub_results"] == 200 and result.measured["requests"] == 100


def test_a_label_that_only_looks_like_a_sub_result_is_counted() -> None:
    # "login-2" right after "login" is a sub-result; after another sampler it is a sampler.
    data = write_jtl(
        [
            {"timeStamp": "1", "elapsed": "10", "label": "login", "success": "true"},
            {"timeStamp": "1", "elapsed": "4", "label": "login-0", "success": "true"},
            {"timeStamp": "1", "elapsed": "3", "label": "login-0-1", "success": "true"},
            {"timeStamp": "2", "elapsed": "7", "label": "home", "success": "true"},
            {"timeStamp": "3", "elapsed": "8", "label": "login-2", "success": "true"},
            {"timeStamp": "4", "elapsed": "9", "label": "login-2x", "success": "true"},
        ],
        ["timeStamp", "elapsed", "label", "success"],
    )
    summary = parse_perf(data)
    assert (summary.requests, summary.sub_results) == (4, 2)


# --- variants JMeter writes ------------------------------------------------------------------


def test_tab_separated_and_minimal_columns_give_the_same_figures() -> None:
    data = fixture("perf/jmeter-kpi1.jtl")
    rows = rows_of(data)
    expected = parse_perf(data)
    tab = parse_perf(write_jtl(rows, list(rows[0]), delimiter="\t"))
    minimal = parse_perf(write_jtl(rows, MINIMAL_COLUMNS))
    bare = parse_perf(write_jtl(rows, ["timeStamp", "elapsed", "success"]))
    for variant in (tab, minimal):
        assert variant == expected
    # Without label and responseCode: same counts, nothing to name the failures by but the code.
    assert (bare.requests, bare.failures, bare.p95_ms) == (
        expected.requests,
        expected.failures,
        expected.p95_ms,
    )
    assert bare.errors == ["9 with no response code"]


def test_utf16_with_bom_is_read() -> None:
    data = fixture("perf/jmeter-kpi1.jtl")
    assert parse_perf(data.decode().encode("utf-16")) == parse_perf(data)


def test_a_5xx_that_jmeter_marked_successful_is_an_error_and_named() -> None:
    rows = [
        {"timeStamp": str(i), "elapsed": "20", "label": "api", "responseCode": "200", "success": "true"}
        for i in range(97)
    ]
    rows += [
        {"timeStamp": "98", "elapsed": "30", "label": "api", "responseCode": "503", "success": "true"},
        {"timeStamp": "99", "elapsed": "31", "label": "api", "responseCode": "500", "success": "true"},
        {"timeStamp": "100", "elapsed": "5", "label": "api", "responseCode": "500", "success": "false"},
    ]
    data = write_jtl(rows, MINIMAL_COLUMNS)
    summary = parse_perf(data)
    assert (summary.requests, summary.failures, summary.server_errors) == (100, 3, 2)
    result = evaluate_perf(perf_gate(max_error_rate=0.01), [data])
    assert not result.passed
    assert result.measured["server_errors"] == 2
    assert result.reasons == [
        "error rate 3.00% (3/100 requests failed; 2 with 500 on 'api'; 1 with 503 on 'api'; "
        "2 of them 5xx responses JMeter marked successful, counted as errors) exceeds the maximum 1.00%"
    ]
    lenient = evaluate_perf(perf_gate(max_error_rate=0.05), [data])
    assert lenient.passed
    assert lenient.reasons[0] == (
        "error rate 3.00% (2 of them 5xx responses JMeter marked successful, counted as errors) "
        "within the maximum 5.00%"
    )


def test_non_http_response_codes_are_failures_by_success() -> None:
    header = "timeStamp,elapsed,label,responseCode,responseMessage,success,failureMessage\n"
    lines = [
        "1700000000000,12,checkout,200,OK,true,\n",
        # What JMeter writes when the connection is refused; the message has a comma, so quoted.
        "1700000000100,1003,checkout,Non HTTP response code: java.net.ConnectException,"
        '"Non HTTP response message: Connection refused, retry later",false,\n',
        "1700000000200,9,checkout,Non HTTP response code: org.apache.http.NoHttpResponseException,x,true,\n",
    ]
    summary = parse_perf((header + "".join(lines)).encode())
    assert (summary.requests, summary.failures, summary.server_errors) == (3, 1, 0)
    assert summary.errors == ["1 with Non HTTP response code: java.net.ConnectException on 'checkout'"]


# --- broken and hostile files ----------------------------------------------------------------


def test_header_less_file_is_refused_with_the_setting_to_change() -> None:
    data = fixture("perf/jmeter-kpi1.jtl")
    text = unreadable(data.split(b"\n", 1)[1])
    assert text.startswith("JMeter JTL: the file has no header line")
    assert "print_field_names=true" in text


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"timeStamp,elapsed,label\n1,2,a\n", "JMeter JTL: the header has no 'success' column"),
        (b"timeStamp,label,success\n1,a,true\n", "JMeter JTL: the header has no 'elapsed' column"),
        (b"timeStamp:elapsed:success\n1:2:true\n", "unsupported delimiter ':'"),
        (b"timeStamp,elapsed,success\n1,2,true\n1,2\n", "line 3 has 2 fields, the header 3 (truncated?)"),
        (b"timeStamp,elapsed,success\n1,-5,true\n", "line 2: elapsed is '-5'"),
        (b"timeStamp,elapsed,success\n1,\xd9\xa3,true\n", "line 2: elapsed is"),  # Arabic-Indic 3
        (b"timeStamp,elapsed,success\n1,99999999999999999999,true\n", "line 2: elapsed is"),
        (b"timeStamp,elapsed,success\n1,5,yes\n", "line 2: success is 'yes'; expected true or false"),
        (b'timeStamp,elapsed,success\n1,5,"true\n', "not valid CSV"),
        (b"timeStamp,elapsed,success\n1,5,tr\xffue\n", "not UTF-8 text"),
        (b"timeStamp,elapsed,success\n1," + b"9" * 200_000 + b",true\n", "not valid CSV: field larger"),
        (
            b'<?xml version="1.0"?>\n<testResults version="1.2"><httpSample t="1"/></testResults>',
            "XML results",
        ),
    ],
)
def test_broken_files_fail_with_a_reason(data: bytes, words: str) -> None:
    assert words in unreadable(data)


def test_truncated_fixture_fails_cleanly_at_every_cut() -> None:
    data = fixture("perf/jmeter-results.jtl")
    for cut in range(1, len(data), 97):
        piece = data[:cut]
        try:
            summary = parse_perf(piece)
        except EvidenceUnreadable as exc:
            assert "\n" not in str(exc)
        else:
            # A cut that falls on a line end is a shorter, valid file.
            assert summary.requests is not None and summary.requests <= 100


def test_header_only_has_no_requests() -> None:
    data = b"timeStamp,elapsed,label,responseCode,success\n"
    summary = parse_perf(data)
    assert (summary.requests, summary.error_rate, summary.p95_ms) == (0, None, None)
    result = evaluate_perf(perf_gate(p95_ms=100), [data])
    assert not result.passed
    assert "only 0 requests were made; the minimum is 1" in result.reasons


BIG_CHILD = """
import json, sys
from promotion.config import PerfGate
from promotion.gates import evaluate_perf
with open(sys.argv[1], "rb") as f:
    data = f.read()
result = evaluate_perf(PerfGate(kind="perf", p95_ms=1900, max_error_rate=0.01), [data]).model_dump()
# VmHWM: this process's own peak RSS (see test_evidence's scan-gate child for why not getrusage).
with open("/proc/self/status") as f:
    hwm_kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
print(json.dumps({"result": result, "peak_mib": hwm_kib / 1024}))
"""


def test_a_jtl_near_the_size_limit_is_streamed_in_bounded_memory(tmp_path: Path) -> None:
    """~270,000 default-config samples (31 MiB): measured ~75 MiB peak, of which 31 are the bytes."""
    path = tmp_path / "big.jtl"
    n = 0
    slow = 0
    with path.open("w", newline="") as f:
        f.write(
            "timeStamp,elapsed,label,responseCode,responseMessage,threadName,dataType,success,"
            "failureMessage,bytes,sentBytes,grpThreads,allThreads,URL,Latency,IdleTime,Connect\n"
        )
        while f.tell() < 31 * 2**20:
            elapsed = (n * 7919) % 2000 + 1  # every value 1..2000 equally often
            slow += elapsed > 1900
            f.write(
                f"{1601209013719 + n},{elapsed},HTTP Request {n % 50},200,OK,Thread Group 1-{n % 20},text,"
                f"true,,39447,302,20,20,https://example.test/p/{n % 50},{elapsed // 2},0,3\n"
            )
            n += 1
    assert path.stat().st_size < MAX_EVIDENCE_BYTES
    child = subprocess.run(
        [sys.executable, "-c", BIG_CHILD, str(path)], capture_output=True, text=True, timeout=300
    )
    assert child.returncode == 0, child.stderr
    out = json.loads(child.stdout)
    m = out["result"]["measured"]
    assert m["requests"] == n and m["failures"] == 0
    # Nearest rank over a near-uniform 1..2000: the p95 sample is 1900 or 1901.
    assert m["p95_ms"] in (1900.0, 1901.0)
    assert out["result"]["passed"] == (m["p95_ms"] <= 1900)
    assert out["peak_mib"] < 130, f"peak RSS {out['peak_mib']:.0f} MiB for {n} samples"


def test_a_jtl_over_the_size_limit_is_refused_before_parsing() -> None:
    data = b"timeStamp,elapsed,success\n" + b"1,5,true\n" * (MAX_EVIDENCE_BYTES // 9 + 1)
    assert "are refused" in unreadable(data)


# --- at publish --------------------------------------------------------------------------------


def test_publish_accepts_a_jtl_and_still_refuses_junk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("results.jtl").write_bytes(fixture("perf/jmeter-kpi1.jtl"))
    evidence = read_evidence(["perf=results.jtl"])
    assert [(kind, path.name) for kind, path in evidence] == [("perf", "results.jtl")]
    assert evidence[0][1].read_bytes() == fixture("perf/jmeter-kpi1.jtl")

    Path("cut.jtl").write_bytes(b"timeStamp,elapsed,success\n1,5,true\n1,5\n")
    with pytest.raises(EvidenceError) as info:
        read_evidence(["perf=cut.jtl"])
    assert str(info.value) == (
        "--evidence perf=cut.jtl: not a performance report: JMeter JTL: line 3 has 2 fields, "
        "the header 3 (truncated?)"
    )
    Path("junk.jtl").write_bytes(os.urandom(64).replace(b"\x00", b"x"))
    with pytest.raises(EvidenceError, match=r"^--evidence perf=junk.jtl: not a performance report: "):
        read_evidence(["perf=junk.jtl"])
