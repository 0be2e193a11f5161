"""Load-test results: k6 summaries (``--summary-export`` and ``handleSummary``), Locust CSV and
JMeter CSV results (:mod:`.jmeter`)."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

from promotion.evidence._safe import (
    _checked,
    _count,
    _decode,
    _fail,
    _first_char,
    _guarded,
    _load_json,
    _num,
    _obj,
    bom_codec,
)
from promotion.evidence.jmeter import looks_like_jtl, parse_jmeter
from promotion.evidence.summaries import PerfSummary


def parse_perf(data: bytes) -> PerfSummary:
    """Requests, errors, latency percentiles and failed thresholds of a load test.

    k6 ``--summary-export`` JSON (legacy flat metrics), k6 ``handleSummary(data)`` JSON
    (``metrics.<name>.values``), Locust ``--csv`` ``*_stats.csv`` (its ``Aggregated`` row) and
    JMeter CSV results (``.jtl``, every sample). The format is detected from the content. A
    percentile the report does not contain is None.
    """
    fmt = "performance report"
    raw = _checked(data, fmt)
    first = _first_char(raw)
    if first == "{":
        return _guarded("k6 summary JSON", _parse_k6, raw)
    if first == "<":
        head = raw[:4096].decode("utf-8", errors="ignore")
        if "<testResults" in head:
            _fail(
                "JMeter JTL",
                "XML results are not supported; let JMeter write CSV "
                "(jmeter.save.saveservice.output_format=csv, the default)",
            )
        _fail(
            fmt, "unrecognised format (XML); expected k6 summary JSON, a Locust *_stats.csv or a JMeter .jtl"
        )
    if looks_like_jtl(_head(raw)):
        return _guarded("JMeter JTL", parse_jmeter, raw)
    return _guarded("Locust CSV", _parse_locust, raw)


def _head(data: bytes) -> str:
    """The first characters of the text, decoded leniently (only used to sniff the format)."""
    marked = bom_codec(data)
    if marked is not None:
        codec, bom_length = marked
        return data[: 4096 + bom_length].decode(codec, errors="ignore").lstrip("\ufeff")
    return data[:4096].decode("utf-8", errors="ignore").lstrip("\ufeff")


def _k6_stats(metrics: Mapping[str, Any], name: str | None, nested: bool) -> dict[str, Any] | None:
    metric = metrics.get(name) if name else None
    if not isinstance(metric, dict):
        return None
    stats = metric.get("values") if nested else metric
    return stats if isinstance(stats, dict) else None


def _parse_k6(data: bytes) -> PerfSummary:
    fmt = "k6 summary JSON"
    doc = _obj(_load_json(data, fmt), fmt, "the top level")
    metrics = doc.get("metrics")
    if not isinstance(metrics, dict):
        _fail(fmt, "no 'metrics' object; expected k6 --summary-export or handleSummary() output")
    nested = any(isinstance(m, dict) and isinstance(m.get("values"), dict) for m in metrics.values())
    latency_metric = next((m for m in ("http_req_duration", "grpc_req_duration") if m in metrics), None)
    latency = _k6_stats(metrics, latency_metric, nested) or {}
    reqs = _k6_stats(metrics, "http_reqs", nested) or _k6_stats(metrics, "grpc_reqs", nested)
    requests = _count(reqs.get("count"), fmt, "http_reqs.count") if reqs else None
    failed = _k6_stats(metrics, "http_req_failed", nested)
    error_rate = failures = None
    if failed is not None:
        # A k6 Rate metric: "passes" are the true samples, i.e. the failed requests here.
        error_rate = _num(failed.get("rate" if nested else "value"))
        if error_rate is None:
            error_rate = _num(failed.get("value" if nested else "rate"))
        if "passes" in failed:
            failures = _count(failed.get("passes"), fmt, "http_req_failed.passes")
        elif error_rate is not None and requests is not None:
            failures = round(error_rate * requests)
    failed_thresholds: list[str] = []
    for name, metric in metrics.items():
        thresholds = metric.get("thresholds") if isinstance(metric, dict) else None
        if not isinstance(thresholds, dict):
            continue
        for expr, outcome in thresholds.items():
            if isinstance(outcome, dict):
                crossed = outcome.get("ok") is False
            elif isinstance(outcome, bool):
                # --summary-export writes true when the threshold FAILED (k6 issue #1498, kept for
                # compatibility); handleSummary() data has {"ok": bool} instead.
                crossed = outcome
            else:
                _fail(fmt, f"metrics.{name}.thresholds[{expr!r}] is {outcome!r}; expected a boolean")
            if crossed:
                failed_thresholds.append(f"{name}: {expr}")
    return PerfSummary(
        format="k6-handle-summary" if nested else "k6-summary-export",
        requests=requests,
        failures=failures,
        error_rate=error_rate,
        p95_ms=_num(latency.get("p(95)")),
        p99_ms=_num(latency.get("p(99)")),
        median_ms=_num(latency.get("med")),
        avg_ms=_num(latency.get("avg")),
        max_ms=_num(latency.get("max")),
        failed_thresholds=failed_thresholds,
        latency_metric=latency_metric if latency else None,
    )


# Locust renamed its columns in 1.0; the old names are still found in long-lived pipelines.
_LOCUST_COLUMNS = {
    "name": ("Name",),
    "requests": ("Request Count", "# requests"),
    "failures": ("Failure Count", "# failures"),
    "median": ("Median Response Time", "Median response time"),
    "avg": ("Average Response Time", "Average response time"),
    "max": ("Max Response Time", "Max response time"),
    "p95": ("95%",),
    "p99": ("99%",),
}


def _parse_locust(data: bytes) -> PerfSummary:
    fmt = "Locust CSV"
    text = _decode(data, fmt)
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as exc:
        _fail(fmt, f"not valid CSV: {exc}")
    header = [h.strip() for h in rows[0]] if rows else []
    columns: dict[str, int] = {}
    for key, candidates in _LOCUST_COLUMNS.items():
        for candidate in candidates:
            if candidate in header:
                columns[key] = header.index(candidate)
                break
    missing = [_LOCUST_COLUMNS[k][0] for k in ("name", "requests", "failures") if k not in columns]
    if missing:
        _fail(
            "performance report",
            f"unrecognised format (no {', '.join(repr(m) for m in missing)} column); expected k6 "
            "summary JSON, a Locust *_stats.csv or a JMeter .jtl",
        )
    total = None
    for lineno, row in enumerate(rows[1:], 2):
        if row and len(row) != len(header):
            _fail(fmt, f"row {lineno} has {len(row)} fields, the header {len(header)} (truncated?)")
        if row and row[columns["name"]].strip() in ("Aggregated", "Total"):
            total = row
    if total is None:
        _fail(fmt, "no 'Aggregated' row; expected a Locust *_stats.csv written by --csv")

    def number(key: str) -> float | None:
        if key not in columns:
            return None
        value = total[columns[key]].strip()
        if value in ("", "N/A"):
            return None
        parsed = _num(value)
        if parsed is None:
            _fail(fmt, f"the Aggregated {key} value {value!r} is not a number")
        return parsed

    requests = _count(total[columns["requests"]], fmt, "the Aggregated request count")
    failures = _count(total[columns["failures"]], fmt, "the Aggregated failure count")
    if failures > requests:
        _fail(fmt, f"{failures} failures exceed the {requests} requests")
    return PerfSummary(
        format="locust-csv",
        requests=requests,
        failures=failures,
        error_rate=failures / requests if requests else None,
        p95_ms=number("p95"),
        p99_ms=number("p99"),
        median_ms=number("median"),
        avg_ms=number("avg"),
        max_ms=number("max"),
        failed_thresholds=[],
        latency_metric="Aggregated",
    )
