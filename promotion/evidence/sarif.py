"""SARIF 2.1.0 static-analysis logs, streamed one result at a time with ``ijson``."""

from __future__ import annotations

import codecs
import io
from collections.abc import Iterator, Mapping
from typing import Any, Literal, NoReturn

import ijson

from promotion.evidence._safe import _checked, _decode, _fail, _guarded, _list, _num, _obj, bom_codec
from promotion.evidence.summaries import (
    SARIF_LEVELS,
    Finding,
    IncompleteRun,
    SarifLevel,
    ScanSummary,
    ToolError,
)

#: Finding messages are cut to this many characters: they end up in gate reasons and the ledger.
MAX_MESSAGE_CHARS = 300

#: Findings kept whole (message, location) in a :class:`ScanSummary`; later ones keep only what
#: the scan gate judges, and identical ones share one object, so a log with 500,000 results
#: costs a list of pointers rather than 500,000 objects.
MAX_LISTED_FINDINGS = 1000

#: Error-level tool notifications kept whole in a :class:`ScanSummary`; the rest are only counted
#: (a tool that fails on every file of a monorepo writes one per file).
MAX_LISTED_TOOL_ERRORS = 100

#: The notification arrays of an invocation, and what the summary calls each.
_NOTIFICATIONS: tuple[tuple[str, Literal["execution", "configuration"]], ...] = (
    ("toolExecutionNotifications", "execution"),
    ("toolConfigurationNotifications", "configuration"),
)

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
    if bom_codec(data) is not None:
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
        self.tool_errors: list[ToolError] = []
        self.tool_error_count = 0
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


def _tool_errors(scan: _Scan, tool: str, invocation: Mapping[str, Any], where: str) -> None:
    """Add the error-level notifications of one invocation to ``scan``.

    A notification's level defaults to ``warning`` (spec 3.58.6): only an explicit ``error``
    counts. CodeQL writes ``none``/``note`` diagnostics on every healthy run, which must not
    fail a gate. An unknown level is refused like a result's.
    """
    fmt = "SARIF"
    for key, source in _NOTIFICATIONS:
        for k, value in enumerate(_list(invocation.get(key), fmt, f"{where}.{key}")):
            note = _obj(value, fmt, f"{where}.{key}[{k}]")
            if _level(note.get("level"), fmt, f"{where}.{key}[{k}].level") != "error":
                continue
            scan.tool_error_count += 1
            if len(scan.tool_errors) >= MAX_LISTED_TOOL_ERRORS:
                continue
            descriptor = note.get("descriptor")
            descriptor_id = descriptor.get("id") if isinstance(descriptor, dict) else None
            text = _message(note, None)
            if not text:
                exception = note.get("exception")
                if isinstance(exception, dict):
                    text = _message({"message": {"text": exception.get("message")}}, None)
            scan.tool_errors.append(
                ToolError(
                    tool=tool,
                    message=text or "(the notification has no message)",
                    descriptor=descriptor_id if isinstance(descriptor_id, str) else None,
                    location=_location(note),
                    source=source,
                )
            )


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
        if not isinstance(inv, dict):
            continue
        _tool_errors(scan, run.name, inv, f"{where}.invocations[{j}]")
        if inv.get("executionSuccessful") is False:
            code = inv.get("exitCode")
            exit_text = f" (exit code {code})" if code is not None else ""
            # The tool's own words, where it gave them (spec 3.20.17, 3.20.19).
            said = [
                " ".join(text.split())[:MAX_MESSAGE_CHARS]
                for text in (inv.get("exitCodeDescription"), inv.get("processStartFailureMessage"))
                if isinstance(text, str) and text.strip()
            ]
            scan.incomplete.append(
                IncompleteRun(
                    tool=run.name,
                    reason=f"invocation {j} reports executionSuccessful=false{exit_text}"
                    + "".join(f": {text}" for text in said),
                    execution_failed=True,
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
    return ScanSummary(
        tools=scan.tools,
        findings=scan.findings,
        incomplete=scan.incomplete,
        tool_errors=scan.tool_errors,
        tool_error_count=scan.tool_error_count,
    )
