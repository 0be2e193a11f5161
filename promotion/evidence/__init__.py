"""Safe parsers for CI evidence: test reports, coverage, static-analysis scans and load tests.

Every parser takes the raw bytes of one report and returns a small frozen summary. Reports come
from CI jobs, so they are treated as untrusted input:

* XML is read only through ``defusedxml`` with entity declarations and external references
  refused (XXE, billion laughs). A bare ``<!DOCTYPE ...>`` is accepted because Cobertura 2.x and
  JaCoCo always write one; expat never fetches the external DTD it names.
* XML is streamed and finished elements are discarded, so memory stays flat however many
  elements a report has; nesting depth is capped.
* A report larger than :data:`MAX_EVIDENCE_BYTES` is refused before any parsing.
* SARIF is streamed with ``ijson`` (C backend) one result at a time: a log with 500,000 results
  costs about a tenth of what loading it whole did. The other JSON reports are small and only
  their totals are read; they are loaded whole (a few times their size at most).
* Every problem (malformed, truncated, empty, wrong format, wrong encoding, unexpected shape)
  surfaces as :class:`EvidenceUnreadable`, whose message names the format and what is wrong.
  No other exception escapes a parser.

Counts are taken from the individual records (``<testcase>``, SARIF results...) wherever the
format has them, because summary attributes written by tools are often missing or wrong.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, Literal, NoReturn, TypeVar
from xml.etree.ElementTree import Element, ParseError

import ijson
from defusedxml import ElementTree as DefusedET
from defusedxml.common import DefusedXmlException, EntitiesForbidden, ExternalReferenceForbidden
from pydantic import BaseModel, ConfigDict

# Defined in promotion.errors; re-exported here, where tests import it from.
from promotion.errors import EvidenceUnreadable as EvidenceUnreadable

#: Largest report accepted, checked before parsing. Real reports are far smaller (a Surefire run
#: of thousands of tests is a few MiB); the cap bounds the time and memory a hostile file costs.
MAX_EVIDENCE_BYTES = 32 * 1024 * 1024
#: Deepest XML nesting accepted. Real reports nest fewer than ten levels; open elements cannot be
#: discarded while streaming, so unbounded depth would defeat the flat-memory parse.
MAX_XML_DEPTH = 128
#: Finding messages are cut to this many characters: they end up in gate reasons and the ledger.
MAX_MESSAGE_CHARS = 300
#: How many failing test names a :class:`TestSummary` keeps.
MAX_LISTED_TESTS = 50

SarifLevel = Literal["error", "warning", "note", "none"]
SARIF_LEVELS: tuple[SarifLevel, ...] = ("error", "warning", "note", "none")
CoverageFormat = Literal["cobertura", "jacoco", "coveragepy-json", "lcov"]
PerfFormat = Literal["k6-summary-export", "k6-handle-summary", "locust-csv"]

T = TypeVar("T")


class _Summary(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TestSummary(_Summary):
    """Outcome of the ``<testcase>`` elements of one JUnit XML report (or several merged)."""

    # Keep pytest from collecting this class when a test module imports it.
    __test__: ClassVar[bool] = False

    format: Literal["junit"] = "junit"
    tests: int
    passed: int
    failures: int
    errors: int
    skipped: int
    suites: list[str]
    failed_tests: list[str]


class CoverageSummary(_Summary):
    """Line and branch coverage totals of one report."""

    format: CoverageFormat
    line_rate: float
    lines_covered: int
    lines_valid: int
    branch_rate: float | None
    branches_covered: int | None
    branches_valid: int | None


class Finding(_Summary):
    """One SARIF result with its effective level."""

    tool: str
    rule_id: str
    level: SarifLevel
    security_severity: float | None
    message: str
    location: str | None = None
    suppressed: bool = False
    baseline_state: str | None = None


class IncompleteRun(_Summary):
    """A SARIF run that did not complete, so its results cannot be trusted to be all of them."""

    tool: str
    reason: str


class ScanSummary(_Summary):
    """The results of every run of one SARIF log."""

    format: Literal["sarif"] = "sarif"
    tools: list[str]
    findings: list[Finding]
    #: Runs that did not complete: ``executionSuccessful: false`` or no ``results`` array.
    incomplete: list[IncompleteRun]


class PerfSummary(_Summary):
    """Request count, error rate, latency percentiles (ms) and failed k6 thresholds of a load test."""

    format: PerfFormat
    requests: int | None
    failures: int | None
    error_rate: float | None
    p95_ms: float | None
    p99_ms: float | None
    median_ms: float | None
    avg_ms: float | None
    max_ms: float | None
    failed_thresholds: list[str]
    #: Which metric the latency figures come from (``http_req_duration``, ``Aggregated``...).
    latency_metric: str | None


# --- shared helpers ---------------------------------------------------------------------------


def _fail(fmt: str, problem: str) -> NoReturn:
    raise EvidenceUnreadable(fmt, problem)


def _checked(data: object, fmt: str) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        _fail(fmt, f"expected the report's bytes, got {type(data).__name__}")
    raw = bytes(data)
    if len(raw) > MAX_EVIDENCE_BYTES:
        _fail(
            fmt,
            f"the report is {len(raw)} bytes; reports larger than {MAX_EVIDENCE_BYTES} bytes "
            f"({MAX_EVIDENCE_BYTES // (1024 * 1024)} MiB) are refused",
        )
    if not raw or raw.isspace():
        _fail(fmt, "the report is empty")
    return raw


def _guarded(fmt: str, parse: Callable[[bytes], T], data: bytes) -> T:
    try:
        return parse(data)
    except EvidenceUnreadable:
        raise
    except RecursionError:
        _fail(fmt, "the report is nested too deeply to read")
    except Exception as exc:
        # Safety net: a report shaped in a way no explicit check foresaw must fail the gate with
        # a readable message, never crash the flow evaluating it.
        raise EvidenceUnreadable(fmt, f"unexpected report structure ({type(exc).__name__}: {exc})") from exc


def _decode(data: bytes, fmt: str) -> str:
    # UTF-16/32 only with a BOM: that is how Windows tools (PowerShell redirection) write them.
    for bom, codec in (
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            try:
                return data.decode(codec)
            except UnicodeDecodeError as exc:
                _fail(fmt, f"not valid {codec.upper()} text ({exc.reason} at byte {exc.start})")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        _fail(fmt, f"not UTF-8 text ({exc.reason} at byte {exc.start}); save the report as UTF-8")
    if "\x00" in text:
        # Raw NULs never occur in JSON, CSV or lcov text; UTF-16 without a BOM looks like this.
        _fail(fmt, "not UTF-8 text (it contains NUL bytes: UTF-16 without a byte order mark?)")
    return text


def _reject_constant(name: str) -> NoReturn:
    # json accepts NaN/Infinity by default; a NaN compares false with every threshold and would
    # let a gate pass silently.
    raise EvidenceUnreadable("JSON", f"the non-standard number {name} is not allowed")


def _load_json(data: bytes, fmt: str) -> Any:
    text = _decode(data, fmt)
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except EvidenceUnreadable as exc:
        _fail(fmt, exc.problem)
    except json.JSONDecodeError as exc:
        hint = " (the file ends early: truncated?)" if exc.pos >= len(text.rstrip()) else ""
        _fail(fmt, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}{hint}")
    except RecursionError:
        _fail(fmt, "the JSON is nested too deeply to read")


def _num(value: object) -> float | None:
    """A finite number from a JSON value or numeric string; None otherwise."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _count(value: object, fmt: str, what: str) -> int:
    """A non-negative whole number (``3``, ``"3"``, ``3.0``) or EvidenceUnreadable."""
    number = _num(value)
    if number is None or number < 0 or number != int(number):
        _fail(fmt, f"{what} is {value!r}; expected a whole number >= 0")
    return int(number)


def _coverage(
    fmt: str,
    kind: CoverageFormat,
    lines_covered: int,
    lines_valid: int,
    branches_covered: int | None,
    branches_valid: int | None,
) -> CoverageSummary:
    if lines_covered > lines_valid:
        _fail(fmt, f"{lines_covered} covered lines exceed the {lines_valid} measured lines")
    if branches_covered is not None and branches_valid is not None:
        if branches_covered > branches_valid:
            _fail(fmt, f"{branches_covered} covered branches exceed the {branches_valid} measured")
    branch_rate = None
    if branches_covered is not None and branches_valid:
        branch_rate = branches_covered / branches_valid
    else:
        # Zero measured branches is "no branch data", not 0 % (coverage.py writes 0/0 then).
        branches_covered = branches_valid = None
    return CoverageSummary(
        format=kind,
        line_rate=lines_covered / lines_valid if lines_valid else 0.0,
        lines_covered=lines_covered,
        lines_valid=lines_valid,
        branch_rate=branch_rate,
        branches_covered=branches_covered,
        branches_valid=branches_valid,
    )


def _first_char(data: bytes) -> str:
    """First non-blank character of the text, ignoring a BOM (used to sniff the format)."""
    for bom, codec in (
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
        (codecs.BOM_UTF8, "utf-8"),
    ):
        if data.startswith(bom):
            head = data[: 4096 + len(bom)].decode(codec, errors="ignore")
            break
    else:
        head = data[:4096].decode("utf-8", errors="ignore")
    head = head.lstrip("\ufeff \t\r\n")
    return head[:1]


# --- XML --------------------------------------------------------------------------------------


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _xml_problem(exc: ParseError) -> str:
    text = str(exc)
    if text.startswith(("no element found", "unclosed token")):
        return f"the XML ends early (truncated?): {text}"
    if text.startswith("not well-formed (invalid token)"):
        return (
            f"not well-formed XML: {text}; if the file is XML, check that it is saved in the "
            "encoding its XML declaration names (UTF-8 when none)"
        )
    return f"not well-formed XML: {text}"


def _walk_xml(data: bytes, fmt: str) -> Iterator[tuple[str, Element, list[str]]]:
    """Stream ``("start"|"end", element, names)``; ``names`` are the open elements, root first.

    On ``start`` the element's attributes are complete; on ``end`` its children are already
    gone (each element is cleared and detached once its ``end`` was handled, which keeps memory
    flat). ``names`` is live: read it, never keep it.
    """
    names: list[str] = []
    open_elements: list[Element] = []
    try:
        events = DefusedET.iterparse(
            io.BytesIO(data),
            events=("start", "end"),
            forbid_dtd=False,
            forbid_entities=True,
            forbid_external=True,
        )
        for event, elem in events:
            if event == "start":
                if len(names) >= MAX_XML_DEPTH:
                    _fail(fmt, f"elements are nested more than {MAX_XML_DEPTH} levels deep")
                names.append(_local(elem.tag))
                open_elements.append(elem)
                yield "start", elem, names
            else:
                yield "end", elem, names
                names.pop()
                open_elements.pop()
                elem.clear()
                if open_elements:
                    open_elements[-1].remove(elem)
    except EvidenceUnreadable:
        raise
    except EntitiesForbidden as exc:
        _fail(
            fmt,
            f"the document declares the entity {exc.name!r}; entity declarations are refused "
            "because they enable XXE and entity-expansion (billion laughs) attacks",
        )
    except ExternalReferenceForbidden as exc:
        _fail(fmt, f"the document references the external resource {exc.sysid!r}; refused")
    except DefusedXmlException as exc:
        _fail(fmt, f"unsafe XML refused: {exc}")
    except ParseError as exc:
        _fail(fmt, _xml_problem(exc))
    except (LookupError, UnicodeError, ValueError) as exc:
        _fail(fmt, f"cannot decode the XML: {exc}")


# --- JUnit ------------------------------------------------------------------------------------

_OUTCOME_RANK = {"passed": 0, "skipped": 1, "failure": 2, "error": 3}


def parse_junit(data: bytes) -> TestSummary:
    """Count the outcomes of the ``<testcase>`` elements of a JUnit XML report.

    Accepts a ``<testsuites>`` or a bare ``<testsuite>`` root and nested suites (pytest, Maven
    Surefire, jest-junit, go-junit-report, cargo-nextest, gotestsum...). A test case with an
    ``<error>`` child counts as an error, else with ``<failure>`` as a failure, else with
    ``<skipped>`` as skipped, else as passed. Surefire's ``<flakyFailure>``/``<rerunFailure>``
    describe earlier attempts and do not change the outcome.
    """
    fmt = "JUnit XML"
    raw = _checked(data, fmt)
    if _first_char(raw) != "<":
        _fail(fmt, "not XML (the report does not start with '<')")
    return _guarded(fmt, _parse_junit, raw)


def _parse_junit(data: bytes) -> TestSummary:
    fmt = "JUnit XML"
    counts = {"passed": 0, "skipped": 0, "failure": 0, "error": 0}
    suites: dict[str, None] = {}
    failed: list[str] = []
    case_depth = -1
    case_label = ""
    outcome = "passed"
    for event, elem, names in _walk_xml(data, fmt):
        depth = len(names) - 1
        name = names[-1]
        if event == "start":
            if depth == 0 and name not in ("testsuites", "testsuite"):
                _fail(fmt, f"the root element is <{name}>; a JUnit report has <testsuites> or <testsuite>")
            if name == "testsuite":
                suite = (elem.get("name") or "").strip()
                if suite:
                    suites.setdefault(suite)
            elif name == "testcase" and case_depth < 0:
                case_depth = depth
                outcome = "passed"
                classname = (elem.get("classname") or "").strip()
                test = (elem.get("name") or "").strip() or "(unnamed)"
                case_label = f"{classname}::{test}" if classname else test
            elif depth == case_depth + 1 and name in _OUTCOME_RANK:
                if _OUTCOME_RANK[name] > _OUTCOME_RANK[outcome]:
                    outcome = name
        elif name == "testcase" and depth == case_depth:
            counts[outcome] += 1
            if outcome in ("failure", "error") and len(failed) < MAX_LISTED_TESTS:
                failed.append(case_label)
            case_depth = -1
    return TestSummary(
        tests=sum(counts.values()),
        passed=counts["passed"],
        failures=counts["failure"],
        errors=counts["error"],
        skipped=counts["skipped"],
        suites=list(suites),
        failed_tests=failed,
    )


# --- coverage ---------------------------------------------------------------------------------


def parse_coverage(data: bytes) -> CoverageSummary:
    """Line/branch totals of a coverage report; the format is detected from the content.

    Cobertura XML (coverage.py ``coverage xml``, Cobertura 2.x, gcovr...), JaCoCo XML,
    coverage.py JSON (``coverage json``) and lcov tracefiles. ``branch_rate`` is None when the
    report carries no branch data (or measures zero branches).
    """
    fmt = "coverage report"
    raw = _checked(data, fmt)
    first = _first_char(raw)
    if first == "<":
        return _guarded("coverage XML", _parse_coverage_xml, raw)
    if first == "{":
        return _guarded("coverage.py JSON", _parse_coveragepy_json, raw)
    if first.isalpha():
        return _guarded("lcov", _parse_lcov, raw)
    _fail(
        fmt,
        "unrecognised format; expected Cobertura XML, JaCoCo XML, coverage.py JSON or an lcov tracefile",
    )


def _parse_coverage_xml(data: bytes) -> CoverageSummary:
    fmt = "coverage XML"
    kind: CoverageFormat | None = None
    root: dict[str, str] = {}
    count_lines = False
    current_file = ""
    # Used only when a Cobertura root lacks totals: file -> line number -> covered / branches.
    lines: dict[tuple[str, str], bool] = {}
    branch_totals: dict[tuple[str, str], tuple[int, int]] = {}
    counters: dict[str, tuple[int, int]] = {}
    for event, elem, names in _walk_xml(data, fmt):
        if event != "start":
            continue
        depth = len(names) - 1
        name = names[-1]
        if depth == 0:
            if name == "coverage":
                kind, fmt = "cobertura", "Cobertura XML"
                root = dict(elem.attrib)
                count_lines = "lines-valid" not in root or "lines-covered" not in root
            elif name == "report":
                kind, fmt = "jacoco", "JaCoCo XML"
            else:
                _fail(
                    fmt,
                    f"the root element is <{name}>; expected <coverage> (Cobertura) or <report> (JaCoCo)",
                )
        elif kind == "jacoco" and depth == 1 and name == "counter":
            ctype = elem.get("type", "")
            counters[ctype] = (
                _count(elem.get("missed"), fmt, f"the {ctype} counter's missed"),
                _count(elem.get("covered"), fmt, f"the {ctype} counter's covered"),
            )
        elif kind == "cobertura" and count_lines:
            if name == "class":
                current_file = elem.get("filename") or elem.get("name") or ""
            elif name == "line" and depth >= 2 and names[-2] == "lines" and names[-3] == "class":
                # class/lines/line only: the same lines are repeated under class/methods.
                key = (current_file, elem.get("number", ""))
                lines[key] = lines.get(key, False) or _count(elem.get("hits"), fmt, "a line's hits") > 0
                cond = elem.get("condition-coverage", "")
                if elem.get("branch") == "true" and "(" in cond:
                    hit, _, total = cond.rsplit("(", 1)[1].rstrip(")").partition("/")
                    branch_totals[key] = (_count(hit, fmt, "branches hit"), _count(total, fmt, "branches"))
    if kind == "jacoco":
        if "LINE" not in counters:
            _fail(fmt, "no report-level LINE counter (is this a JaCoCo XML report?)")
        missed, covered = counters["LINE"]
        branch = counters.get("BRANCH")
        return _coverage(
            fmt,
            "jacoco",
            covered,
            missed + covered,
            branch[1] if branch else None,
            branch[0] + branch[1] if branch else None,
        )
    if kind != "cobertura":
        _fail(fmt, "the document has no root element")
    if not count_lines:
        lines_covered = _count(root["lines-covered"], fmt, "lines-covered")
        lines_valid = _count(root["lines-valid"], fmt, "lines-valid")
        has_branches = "branches-valid" in root and "branches-covered" in root
        return _coverage(
            fmt,
            "cobertura",
            lines_covered,
            lines_valid,
            _count(root["branches-covered"], fmt, "branches-covered") if has_branches else None,
            _count(root["branches-valid"], fmt, "branches-valid") if has_branches else None,
        )
    return _coverage(
        fmt,
        "cobertura",
        sum(lines.values()),
        len(lines),
        sum(hit for hit, _ in branch_totals.values()) if branch_totals else None,
        sum(total for _, total in branch_totals.values()) if branch_totals else None,
    )


def _parse_coveragepy_json(data: bytes) -> CoverageSummary:
    fmt = "coverage.py JSON"
    doc = _load_json(data, fmt)
    totals = doc.get("totals") if isinstance(doc, dict) else None
    if not isinstance(totals, dict):
        _fail(fmt, "no 'totals' object; expected the output of `coverage json`")
    meta = doc.get("meta")
    branch_measured = "num_branches" in totals and not (
        isinstance(meta, dict) and meta.get("branch_coverage") is False
    )
    return _coverage(
        fmt,
        "coveragepy-json",
        _count(totals.get("covered_lines"), fmt, "totals.covered_lines"),
        _count(totals.get("num_statements"), fmt, "totals.num_statements"),
        _count(totals.get("covered_branches"), fmt, "totals.covered_branches") if branch_measured else None,
        _count(totals.get("num_branches"), fmt, "totals.num_branches") if branch_measured else None,
    )


class _LcovRecord:
    """Running totals of one ``SF:`` ... ``end_of_record`` block."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lf: int | None = None
        self.lh: int | None = None
        self.brf: int | None = None
        self.brh: int | None = None
        self.da: dict[str, bool] = {}
        self.brda_total = 0
        self.brda_hit = 0


def _parse_lcov(data: bytes) -> CoverageSummary:
    fmt = "lcov"
    text = _decode(data, fmt)
    lines_covered = lines_valid = 0
    branches_covered = branches_valid = 0
    has_branches = False
    records = 0
    rec: _LcovRecord | None = None

    def close(r: _LcovRecord) -> None:
        nonlocal lines_covered, lines_valid, branches_covered, branches_valid, has_branches, records
        records += 1
        # LF/LH are the totals lcov writes; DA lines are the fallback for writers that omit them.
        if r.lf is not None and r.lh is not None:
            lines_valid += r.lf
            lines_covered += r.lh
        else:
            lines_valid += len(r.da)
            lines_covered += sum(r.da.values())
        if r.brf is not None:
            has_branches = True
            branches_valid += r.brf
            branches_covered += r.brh if r.brh is not None else r.brda_hit
        elif r.brda_total:
            has_branches = True
            branches_valid += r.brda_total
            branches_covered += r.brda_hit

    for lineno, raw_line in enumerate(text.splitlines(), 1):
        line = raw_line.strip()
        if not line:
            continue
        if line == "end_of_record":
            if rec is None:
                _fail(fmt, f"line {lineno}: end_of_record without a preceding SF: line")
            close(rec)
            rec = None
            continue
        key, sep, value = line.partition(":")
        if not sep:
            _fail(fmt, f"line {lineno}: {line[:60]!r} is not an lcov tracefile line (KEY:VALUE)")
        where = f"line {lineno} ({key})"
        if key == "SF":
            if rec is not None:
                close(rec)  # a writer that omitted end_of_record between files
            rec = _LcovRecord(value)
            continue
        if key not in ("DA", "LF", "LH", "BRDA", "BRF", "BRH"):
            continue  # TN, VER, FN, FNDA, FNF, FNH, FNL...: not needed for line/branch totals
        if rec is None:
            _fail(fmt, f"{where}: data before the first SF: line")
        if key == "DA":
            parts = value.split(",")
            if len(parts) < 2:
                _fail(fmt, f"{where}: expected DA:<line>,<hits>")
            # Some writers emit negative hit counts for overflowed counters; only > 0 is covered.
            hits = _num(parts[1])
            if hits is None:
                _fail(fmt, f"{where}: hits {parts[1]!r} is not a number")
            rec.da[parts[0].strip()] = rec.da.get(parts[0].strip(), False) or hits > 0
        elif key == "BRDA":
            parts = value.split(",")
            if len(parts) < 4:
                _fail(fmt, f"{where}: expected BRDA:<line>,<block>,<branch>,<taken>")
            taken = parts[3].strip()
            rec.brda_total += 1
            if taken != "-" and _count(taken, fmt, f"{where} taken") > 0:
                rec.brda_hit += 1
        else:
            setattr(rec, key.lower(), _count(value, fmt, where))
    if rec is not None:
        _fail(fmt, f"the record for {rec.source!r} has no end_of_record: the file is truncated")
    if not records:
        _fail(fmt, "no SF: records; this is not an lcov tracefile")
    return _coverage(
        fmt,
        "lcov",
        lines_covered,
        lines_valid,
        branches_covered if has_branches else None,
        branches_valid if has_branches else None,
    )


# --- SARIF ------------------------------------------------------------------------------------

#: Findings kept whole (message, location) in a :class:`ScanSummary`; later ones keep only what
#: the scan gate judges, and identical ones share one object, so a log with 500,000 results
#: costs a list of pointers rather than 500,000 objects.
MAX_LISTED_FINDINGS = 1000

_STARTS = frozenset(("start_map", "start_array"))
_LEVELS = frozenset(SARIF_LEVELS)
_ENDS = frozenset(("end_map", "end_array"))
_Events = Iterator[tuple[str, Any]]


def parse_sarif(data: bytes) -> ScanSummary:
    """Findings of a SARIF 2.1.0 log, with each result's effective level.

    The level is the result's ``level``; else ``"none"`` when the result's ``kind`` is not
    ``"fail"``; else the rule's ``defaultConfiguration.level`` (rule found through
    ``rule.toolComponent``/``rule.index``, ``ruleIndex`` or ``ruleId`` among the driver's and the
    extensions' rules); else ``"warning"``, the SARIF default. ``security_severity`` comes from
    the rule's ``properties["security-severity"]`` (the result's own properties as a fallback).

    The log is streamed (``ijson``): results are read one at a time and never held together,
    so memory grows with the number of distinct findings, not with the size of the log.
    """
    fmt = "SARIF"
    return _guarded(fmt, _parse_sarif, _checked(data, fmt))


def _json_utf8(data: bytes, fmt: str) -> bytes:
    """The report as UTF-8 without a BOM, with the same encoding checks (and messages) as _decode."""
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return _decode(data, fmt).encode("utf-8")  # rare (PowerShell redirection): a copy is fine
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    if b"\x00" in data:
        _fail(fmt, "not UTF-8 text (it contains NUL bytes: UTF-16 without a byte order mark?)")
    # Validated in slices so that no decoded copy of the whole report is ever held.
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(data)
    step = 1 << 20
    for offset in range(0, len(data), step):
        try:
            decoder.decode(view[offset : offset + step], final=offset + step >= len(data))
        except UnicodeDecodeError as exc:
            _fail(
                fmt,
                f"not UTF-8 text ({exc.reason} at byte {offset + exc.start}); save the report as UTF-8",
            )
    return data


def _json_error(exc: Exception, fmt: str) -> NoReturn:
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    hint = " (the file ends early: truncated?)" if "premature EOF" in first else ""
    _fail(fmt, f"not valid JSON: {first}{hint}")


def _build(event: str, value: Any, events: _Events) -> Any:
    """The JSON value that starts with ``event``, read from ``events``."""
    if event == "start_map":
        obj: dict[str, Any] = {}
        for event, value in events:
            if event == "end_map":
                return obj
            # map_key: the value follows. A repeated key keeps its last value, as json.loads does.
            event2, value2 = next(events)
            obj[value] = _build(event2, value2, events) if event2 in _STARTS else value2
    elif event == "start_array":
        arr: list[Any] = []
        for event, value in events:
            if event == "end_array":
                return arr
            arr.append(_build(event, value, events) if event in _STARTS else value)
    return value


def _skip(event: str, events: _Events) -> None:
    """Consume the value that starts with ``event`` without building it."""
    if event not in _STARTS:
        return
    depth = 1
    for event, _ in events:
        if event in _STARTS:
            depth += 1
        elif event in _ENDS:
            depth -= 1
            if not depth:
                return


def _members(events: _Events) -> Iterator[tuple[str, str, Any]]:
    """``(key, first event, first value)`` of each member of the object being read."""
    for event, key in events:
        if event == "end_map":
            return
        event, value = next(events)
        yield key, event, value


def _obj(value: object, fmt: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        kind = "missing" if value is None else f"a {type(value).__name__}"
        _fail(fmt, f"{where} is {kind}; expected an object")
    return value


def _list(value: object, fmt: str, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        _fail(fmt, f"{where} is a {type(value).__name__}; expected an array")
    return value


class _Rules:
    """The rules of one tool component, with a first-wins index by id (logs have thousands)."""

    def __init__(self, name: str, rules: list[dict[str, Any]]) -> None:
        self.name = name
        self.rules = rules
        self.by_id: dict[str, dict[str, Any]] = {}
        for rule in rules:
            rule_id = rule.get("id")
            if isinstance(rule_id, str):
                self.by_id.setdefault(rule_id, rule)

    def at(self, index: object) -> dict[str, Any] | None:
        if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(self.rules):
            return self.rules[index]
        return None


def _rules(component: Mapping[str, Any], fmt: str, where: str) -> list[dict[str, Any]]:
    return [
        _obj(rule, fmt, f"{where}.rules[{i}]")
        for i, rule in enumerate(_list(component.get("rules"), fmt, f"{where}.rules"))
    ]


def _level(value: object, fmt: str, where: str) -> SarifLevel | None:
    if value is None:
        return None
    for level in SARIF_LEVELS:
        if value == level:
            return level
    _fail(fmt, f"{where} is {value!r}; SARIF levels are error, warning, note and none")


def _find_rule(result: Mapping[str, Any], driver: _Rules, extensions: list[_Rules]) -> dict[str, Any] | None:
    ref = result.get("rule") if isinstance(result.get("rule"), dict) else None
    component = driver
    if ref is not None:
        tc = ref.get("toolComponent")
        if isinstance(tc, dict):
            # The rule lives in an extension (CodeQL query packs), named by index or by name.
            idx = tc.get("index")
            if isinstance(idx, int) and not isinstance(idx, bool) and 0 <= idx < len(extensions):
                component = extensions[idx]
            else:
                component = next((e for e in extensions if e.name and e.name == tc.get("name")), driver)
        found = component.at(ref.get("index"))
        if found is None and isinstance(ref.get("id"), str):
            found = component.by_id.get(ref["id"])
        if found is not None:
            return found
    found = component.at(result.get("ruleIndex"))
    if found is not None:
        return found
    rule_id = result.get("ruleId")
    if not isinstance(rule_id, str):
        rule_id = ref.get("id") if ref is not None and isinstance(ref.get("id"), str) else None
    if rule_id is None:
        return None
    candidates = [driver, *extensions]
    for rules in candidates:
        found = rules.by_id.get(rule_id)
        if found is not None:
            return found
    # Hierarchical ids ("CA2101/1") name a sub-rule of the rule "CA2101".
    if "/" in rule_id:
        for rules in candidates:
            found = rules.by_id.get(rule_id.split("/", 1)[0])
            if found is not None:
                return found
    return None


def _severity(props: object) -> float | None:
    if not isinstance(props, dict):
        return None
    return _num(props.get("security-severity"))


def _message(result: Mapping[str, Any], rule: Mapping[str, Any] | None) -> str:
    msg = result.get("message")
    text = ""
    if isinstance(msg, dict):
        text = msg.get("text") or msg.get("markdown") or ""
        if not text and isinstance(msg.get("id"), str) and rule is not None:
            strings = rule.get("messageStrings")
            entry = strings.get(msg["id"]) if isinstance(strings, dict) else None
            text = entry.get("text", "") if isinstance(entry, dict) else ""
        args = msg.get("arguments")
        if isinstance(text, str) and isinstance(args, list):
            for i, arg in enumerate(args):
                text = text.replace("{" + str(i) + "}", str(arg))
    if not isinstance(text, str):
        text = ""
    text = " ".join(text.split())
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 1] + "…"
    return text


def _location(result: Mapping[str, Any]) -> str | None:
    locations = result.get("locations")
    if not isinstance(locations, list) or not locations or not isinstance(locations[0], dict):
        return None
    physical = locations[0].get("physicalLocation")
    if not isinstance(physical, dict):
        return None
    artifact = physical.get("artifactLocation")
    uri = artifact.get("uri") if isinstance(artifact, dict) else None
    if not isinstance(uri, str):
        return None
    region = physical.get("region")
    line = region.get("startLine") if isinstance(region, dict) else None
    return f"{uri}:{line}" if isinstance(line, int) else uri


def _suppressed(result: Mapping[str, Any]) -> bool:
    suppressions = result.get("suppressions")
    if not isinstance(suppressions, list):
        return False
    # A suppression without status counts as accepted; "underReview"/"rejected" do not suppress.
    return any(isinstance(s, dict) and s.get("status", "accepted") == "accepted" for s in suppressions)


_FindingKey = tuple[str, str, SarifLevel, float | None, bool, str | None]


class _Scan:
    """What a SARIF log adds up to, fed one run and one result at a time."""

    def __init__(self) -> None:
        self.tools: list[str] = []
        self.findings: list[Finding] = []
        self.incomplete: list[IncompleteRun] = []
        # Findings past MAX_LISTED_FINDINGS: one shared object per distinct key.
        self._shared: dict[_FindingKey, Finding] = {}

    def result(self, run: _Run, value: object, i: int, j: int) -> None:
        fmt = "SARIF"
        # Hot loop (once per result): the location text of an error is only built on error.
        if not isinstance(value, dict):
            _obj(value, fmt, f"runs[{i}].results[{j}]")
        result: dict[str, Any] = value  # type: ignore[assignment]
        rule = _find_rule(result, run.driver, run.extensions)
        raw_level = result.get("level")
        level: SarifLevel | None = None
        if isinstance(raw_level, str) and raw_level in _LEVELS:
            level = raw_level
        elif raw_level is not None:
            _level(raw_level, fmt, f"runs[{i}].results[{j}].level")
        if level is None:
            kind = result.get("kind")
            if kind is not None and kind != "fail":
                level = "none"  # pass, review, informational...: the spec defaults their level to none
        if level is None and rule is not None:
            config = rule.get("defaultConfiguration")
            if isinstance(config, dict):
                where = f"runs[{i}].results[{j}]"
                level = _level(config.get("level"), fmt, f"defaultConfiguration.level of the rule of {where}")
        ref = result.get("rule")
        rule_id: object = result.get("ruleId")
        if not isinstance(rule_id, str) and isinstance(ref, dict):
            rule_id = ref.get("id")
        if not isinstance(rule_id, str) and rule is not None:
            rule_id = rule.get("id")
        severity = run.severity(rule) if rule is not None else None
        if severity is None:
            severity = _severity(result.get("properties"))
        baseline = result.get("baselineState")
        key: _FindingKey = (
            run.name,
            rule_id if isinstance(rule_id, str) else "(no rule)",
            level or "warning",
            severity,
            _suppressed(result),
            baseline if isinstance(baseline, str) else None,
        )
        if len(self.findings) < MAX_LISTED_FINDINGS:
            self.findings.append(self._finding(key, _message(result, rule), _location(result)))
            return
        shared = self._shared.get(key)
        if shared is None:
            shared = self._shared[key] = self._finding(key, "", None)
        self.findings.append(shared)

    @staticmethod
    def _finding(key: _FindingKey, message: str, location: str | None) -> Finding:
        tool, rule_id, level, severity, suppressed, baseline = key
        return Finding(
            tool=tool,
            rule_id=rule_id,
            level=level,
            security_severity=severity,
            message=message,
            location=location,
            suppressed=suppressed,
            baseline_state=baseline,
        )


class _Run:
    """The tool of one run: its name and rule indexes, checked in the order the spec reads them."""

    def __init__(self, tool_value: object, where: str) -> None:
        fmt = "SARIF"
        tool = _obj(tool_value, fmt, f"{where}.tool")
        driver = _obj(tool.get("driver"), fmt, f"{where}.tool.driver")
        name = driver.get("name")
        if not isinstance(name, str) or not name.strip():
            _fail(fmt, f"{where}.tool.driver.name is missing")
        self.name: str = name
        self._severities: dict[int, float | None] = {}  # by id() of a rule: rules live as long
        self.driver = _Rules("", _rules(driver, fmt, f"{where}.tool.driver"))
        self.extensions: list[_Rules] = []
        for j, ext_value in enumerate(_list(tool.get("extensions"), fmt, f"{where}.tool.extensions")):
            ext = _obj(ext_value, fmt, f"{where}.tool.extensions[{j}]")
            ext_name = ext.get("name")
            self.extensions.append(
                _Rules(
                    ext_name if isinstance(ext_name, str) else "",
                    _rules(ext, fmt, f"{where}.tool.extensions[{j}]"),
                )
            )

    def severity(self, rule: Mapping[str, Any]) -> float | None:
        key = id(rule)
        if key not in self._severities:
            self._severities[key] = _severity(rule.get("properties"))
        return self._severities[key]


_ABSENT = object()


def _read_run(scan: _Scan, i: int, events: _Events) -> None:
    """One ``runs[i]`` object, its results streamed; ``events`` is just past its ``start_map``."""
    fmt = "SARIF"
    where = f"runs[{i}]"
    tool_value: object = _ABSENT
    run: _Run | None = None
    invocations: object = None
    results: object = None  # None (absent or null), a list (streamed) or another value
    early: list[tuple[int, object]] = []  # results read before the tool (unusual key order)
    for key, event, value in _members(events):
        if key == "tool":
            tool_value = _build(event, value, events)
            run = _Run(tool_value, where)
            scan.tools.append(run.name)
        elif key == "invocations":
            invocations = _build(event, value, events)
        elif key == "results" and event == "start_array":
            results = []
            j = 0
            for item_event, item_value in events:
                if item_event == "end_array":
                    break
                item = _build(item_event, item_value, events) if item_event in _STARTS else item_value
                if run is None:
                    early.append((j, item))
                else:
                    scan.result(run, item, i, j)
                j += 1
        elif key == "results":
            results = _build(event, value, events)
        else:
            _skip(event, events)
    if run is None:
        run = _Run(None if tool_value is _ABSENT else tool_value, where)
        scan.tools.append(run.name)
    for j, inv in enumerate(_list(invocations, fmt, f"{where}.invocations")):
        if isinstance(inv, dict) and inv.get("executionSuccessful") is False:
            code = inv.get("exitCode")
            exit_text = f" (exit code {code})" if code is not None else ""
            scan.incomplete.append(
                IncompleteRun(
                    tool=run.name, reason=f"invocation {j} reports executionSuccessful=false{exit_text}"
                )
            )
    if results is None:
        scan.incomplete.append(
            IncompleteRun(tool=run.name, reason=f"run {i} has no results array (the tool did not finish)")
        )
        return
    _list(results, fmt, f"{where}.results")
    for j, item in early:
        scan.result(run, item, i, j)


def _parse_sarif(data: bytes) -> ScanSummary:
    fmt = "SARIF"
    # ijson's own generator, not wrapped: a wrapper costs a Python frame per parse event.
    events: _Events = ijson.basic_parse(io.BytesIO(_json_utf8(data, fmt)), use_float=True)
    try:
        return _read_sarif(events)
    except ijson.JSONError as exc:
        _json_error(exc, fmt)


def _read_sarif(events: _Events) -> ScanSummary:
    fmt = "SARIF"
    event, value = next(events)
    if event != "start_map":
        _obj(_build(event, value, events), fmt, "the top level")
    scan = _Scan()
    runs_state = "absent"
    runs_value: object = None
    for key, event, value in _members(events):
        if key == "version":
            version = _build(event, value, events)
            if version is not None and version != "2.1.0":
                _fail(fmt, f"version {version!r} is not supported; expected a SARIF 2.1.0 log")
        elif key == "runs" and event == "start_array":
            runs_state = "list"
            i = 0
            for run_event, run_value in events:
                if run_event == "end_array":
                    break
                if run_event != "start_map":
                    _obj(_build(run_event, run_value, events), fmt, f"runs[{i}]")
                _read_run(scan, i, events)
                i += 1
        elif key == "runs":
            # Not an array: judged after the whole top level, so a bad version is reported first.
            runs_value = _build(event, value, events)
            runs_state = "null" if runs_value is None else "other"
        else:
            _skip(event, events)
    for _ in events:
        pass  # let the parser see the end of the document (trailing garbage is an error)
    if runs_state == "absent":
        _fail(fmt, "no 'runs' array; this is not a SARIF log")
    if runs_state == "null":
        _fail(fmt, "'runs' is null: the tool failed before it produced any run")
    if runs_state == "other":
        _list(runs_value, fmt, "runs")
    return ScanSummary(tools=scan.tools, findings=scan.findings, incomplete=scan.incomplete)


# --- performance ------------------------------------------------------------------------------


def parse_perf(data: bytes) -> PerfSummary:
    """Requests, errors, latency percentiles and failed thresholds of a load test.

    k6 ``--summary-export`` JSON (legacy flat metrics), k6 ``handleSummary(data)`` JSON
    (``metrics.<name>.values``) and Locust ``--csv`` ``*_stats.csv`` (its ``Aggregated`` row). The
    format is detected from the content. A percentile the report does not contain is None.
    """
    fmt = "performance report"
    raw = _checked(data, fmt)
    if _first_char(raw) == "{":
        return _guarded("k6 summary JSON", _parse_k6, raw)
    return _guarded("Locust CSV", _parse_locust, raw)


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
    if header[:2] == ["timeStamp", "elapsed"]:
        _fail(
            "performance report",
            "this is a JMeter JTL results file, which is not supported; use k6 summary JSON or "
            "Locust --csv *_stats.csv",
        )
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
            "summary JSON or a Locust *_stats.csv",
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
