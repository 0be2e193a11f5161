"""Coverage reports: Cobertura/JaCoCo XML, coverage.py JSON and lcov, sniffed from the content."""

from __future__ import annotations

from promotion.evidence._safe import (
    _checked,
    _count,
    _decode,
    _fail,
    _first_char,
    _guarded,
    _load_json,
    _num,
    _walk_xml,
)
from promotion.evidence.summaries import CoverageFormat, CoverageSummary


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
