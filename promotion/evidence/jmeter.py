"""Apache JMeter CSV results (``.jtl``), streamed one sample at a time.

What is read, and why:

* The header line names the columns (JMeter writes it unless
  ``jmeter.save.saveservice.print_field_names=false``); only ``elapsed`` and ``success`` are
  required, so the minimal save configurations are accepted. Without a header the column order
  is a property of the JMeter that wrote the file and cannot be known: refused, saying so.
* The delimiter is the character after ``timeStamp`` in the header: comma (the default) or tab
  (``jmeter.save.saveservice.default_delimiter=\\t``), also ``;`` and ``|``.
* A sample is an error when ``success`` is false, **and** when its ``responseCode`` is a 5xx
  although ``success`` is true (a sampler told to "ignore status", or an assertion that only
  checks the body): the server failed, whatever the test plan concluded. Those are counted
  apart (``server_errors``) so the gate can name them. Non-HTTP codes (``Non HTTP response
  code: java.net.ConnectException``) are left to ``success``.
* Sub-results (a followed redirect, an embedded resource) are written by JMeter right after
  their parent, labelled ``<parent label>-<n>`` (``-<n>-<m>`` when nested). Their time is
  already inside the parent's ``elapsed`` and JMeter's Aggregate Report leaves them out, so they
  are not requests here either: they are counted in ``sub_results`` and otherwise skipped.
* Percentiles are exact, nearest-rank (the sample of rank ``ceil(p * n)``; JMeter's Aggregate
  Report rounds the rank instead, so its figure can be one sample lower, never higher): the
  elapsed times are kept in a compact ``array('q')`` (8 bytes per sample,
  so at most a few times the size of the 32 MiB file the size limit allows) and the largest
  5 % are selected with a heap; nothing else grows with the number of samples.
"""

from __future__ import annotations

import csv
import heapq
import io
import math
import re
from array import array
from collections import Counter
from collections.abc import Iterator

from promotion.evidence._safe import _fail, bom_codec
from promotion.evidence.summaries import PerfSummary

FMT = "JMeter JTL"

#: Delimiters JMeter users configure (``jmeter.save.saveservice.default_delimiter``).
DELIMITERS = (",", "\t", ";", "|")
#: Distinct ``(label, response code)`` pairs of failed samples tracked for the gate's reason.
MAX_TRACKED_ERRORS = 1000
#: Error kinds named in the summary, most frequent first.
MAX_LISTED_ERRORS = 5

_SUB_SUFFIX = re.compile(r"(?:-\d+)+")
#: A first line that is data, not a header: an epoch-millisecond timestamp then elapsed.
_HEADERLESS = re.compile(r"\d{10,}[,\t;|]\d+[,\t;|]")


def looks_like_jtl(head: str) -> bool:
    """Whether the first line of a text report is a JMeter CSV header (or header-less data)."""
    first = head.lstrip("\ufeff").split("\n", 1)[0]
    return first.startswith("timeStamp") or bool(_HEADERLESS.match(first))


def _text(data: bytes) -> io.TextIOBase:
    """The report as a text stream decoded as it is read (no decoded copy of the whole file)."""
    marked = bom_codec(data)
    encoding = marked[0] if marked is not None else "utf-8-sig"
    return io.TextIOWrapper(io.BytesIO(data), encoding=encoding, newline="")


def _percentile(largest: list[int], n: int, p: float) -> float | None:
    """Nearest-rank percentile from the ``largest`` values (descending) of ``n`` samples."""
    if not n:
        return None
    rank = math.ceil(p * n)  # 1-based rank in ascending order
    return float(largest[n - rank])


def parse_jmeter(data: bytes) -> PerfSummary:
    """Requests, errors and exact p95/p99 of a JMeter CSV results file (see the module doc)."""
    try:
        return _parse(_text(data))
    except UnicodeDecodeError as exc:
        _fail(FMT, f"not UTF-8 text ({exc.reason}); save the results as UTF-8")
    except csv.Error as exc:
        _fail(FMT, f"not valid CSV: {exc}")


def _rows(stream: io.TextIOBase, delimiter: str) -> Iterator[list[str]]:
    return csv.reader(stream, delimiter=delimiter, strict=True)


def _parse(stream: io.TextIOBase) -> PerfSummary:
    first = stream.readline()
    if "\x00" in first:
        _fail(FMT, "not UTF-8 text (it contains NUL bytes: UTF-16 without a byte order mark?)")
    if _HEADERLESS.match(first):
        _fail(
            FMT,
            "the file has no header line, so its columns cannot be known; let JMeter write it "
            "(jmeter.save.saveservice.print_field_names=true, the default)",
        )
    if not first.startswith("timeStamp"):
        _fail(FMT, "the first line is not a JMeter header (it should start with 'timeStamp')")
    delimiter = first[len("timeStamp") : len("timeStamp") + 1]
    if delimiter not in DELIMITERS:
        _fail(FMT, f"unsupported delimiter {delimiter!r} after 'timeStamp'; expected comma or tab")
    header = next(_rows(io.StringIO(first, newline=""), delimiter), [])
    header = [h.strip() for h in header]
    columns = {name: i for i, name in reversed(list(enumerate(header)))}
    missing = [name for name in ("elapsed", "success") if name not in columns]
    if missing:
        _fail(FMT, f"the header has no {' or '.join(repr(m) for m in missing)} column")
    i_elapsed = columns["elapsed"]
    i_success = columns["success"]
    i_label = columns.get("label")
    i_code = columns.get("responseCode")
    width = len(header)

    elapsed = array("q")
    failures = server_errors = sub_results = 0
    total_ms = 0
    max_ms = 0
    errors: Counter[tuple[str, str]] = Counter()
    untracked = 0
    parent: str | None = None  # label of the last sample that was not a sub-result
    for lineno, row in enumerate(_rows(stream, delimiter), 2):
        if not row:
            continue  # a blank line (an editor's trailing newline)
        if len(row) != width:
            _fail(FMT, f"line {lineno} has {len(row)} fields, the header {width} (truncated?)")
        label = row[i_label] if i_label is not None else ""
        if (
            parent is not None
            and label.startswith(parent + "-")
            and _SUB_SUFFIX.fullmatch(label, len(parent))
        ):
            sub_results += 1
            continue
        parent = label
        text = row[i_elapsed]
        if not (text.isascii() and text.isdigit() and len(text) <= 12):  # 12 digits: 31 years
            _fail(FMT, f"line {lineno}: elapsed is {text!r}; expected whole milliseconds >= 0")
        ms = int(text)
        success = row[i_success].strip().lower()
        if success not in ("true", "false"):
            _fail(FMT, f"line {lineno}: success is {row[i_success]!r}; expected true or false")
        code = row[i_code].strip() if i_code is not None else ""
        failed = success == "false"
        if not failed and len(code) == 3 and code.startswith("5") and code.isascii() and code.isdigit():
            failed = True
            server_errors += 1
        if failed:
            failures += 1
            key = (label, code)
            if key in errors or len(errors) < MAX_TRACKED_ERRORS:
                errors[key] += 1
            else:
                untracked += 1
        elapsed.append(ms)
        total_ms += ms
        max_ms = max(max_ms, ms)
    n = len(elapsed)
    # The largest 5 % (at least one) hold both the p95 and the p99 sample.
    largest = heapq.nlargest(n - math.ceil(0.95 * n) + 1, elapsed) if n else []
    listed = [
        f"{count} with {code or 'no response code'}" + (f" on {label!r}" if label else "")
        for (label, code), count in errors.most_common(MAX_LISTED_ERRORS)
    ]
    if untracked:
        listed.append(f"{untracked} more of other labels and codes")
    return PerfSummary(
        format="jmeter-csv",
        requests=n,
        failures=failures,
        error_rate=failures / n if n else None,
        p95_ms=_percentile(largest, n, 0.95),
        p99_ms=_percentile(largest, n, 0.99),
        median_ms=None,  # would need half the samples sorted; no gate reads it
        avg_ms=total_ms / n if n else None,
        max_ms=float(max_ms) if n else None,
        failed_thresholds=[],
        latency_metric="elapsed",
        server_errors=server_errors,
        sub_results=sub_results,
        errors=listed,
    )
