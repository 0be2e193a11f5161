"""JUnit XML test reports (Surefire, pytest, Gradle...): outcomes counted per test, reruns as flaky.

A test is named ``classname::name`` (just ``name`` when the report gives no classname), the way
the gate's ``quarantine`` entries and every listed test name spell it.

Reruns, as each tool records them (only within one report):

- Surefire/Failsafe ``rerunFailingTestsCount`` (JUnit 4 and JUnit 5): one ``<testcase>``; a test
  that passed on a rerun carries ``<flakyFailure>``/``<flakyError>`` children (one per failed
  run) and no ``<failure>``/``<error>``: it passed and is flaky. A test that failed every run
  carries ``<failure>``/``<error>`` plus ``<rerunFailure>``/``<rerunError>``: it failed.
- Gradle's test-retry plugin: the same test repeated as several ``<testcase>`` elements, the
  failed attempts first: a test seen failing and then passing is counted once, as flaky.
- pytest-rerunfailures: the same test repeated, every attempt but the last written as an empty
  (passing-looking) ``<testcase>``, and the suite's ``tests`` attribute does not count the
  attempts. So in a ``<testsuite>`` holding more ``<testcase>`` elements than its ``tests``
  attribute says, a repeated test is one test with its last attempt's outcome (flaky if that
  passed). Elsewhere repeated names that never failed-then-passed (JUnit 5 parameterized tests
  sharing a display name) are counted one by one, as before.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from promotion.evidence._safe import _checked, _fail, _first_char, _guarded, _walk_xml
from promotion.evidence.summaries import QuarantinedTests, TestSummary

#: How many failing (or flaky, or quarantined) test names a :class:`TestSummary` keeps per list.
MAX_LISTED_TESTS = 50
#: Distinct test names one report may hold. Detecting reruns means remembering every name until
#: the report ends; this bounds that memory (~60 MB at the cap) for a hostile report.
MAX_DISTINCT_TESTS = 200_000
#: Test names are cut to this many characters (stored, listed and matched against quarantine).
MAX_TEST_NAME_CHARS = 500

_OUTCOME_RANK = {"passed": 0, "skipped": 1, "failure": 2, "error": 3}
_OUTCOMES = tuple(_OUTCOME_RANK)
_FLAKY_CHILDREN = frozenset({"flakyFailure", "flakyError"})
_FAILED = frozenset({"failure", "error"})
#: A suite's ``tests`` attribute as a count; anything else (absent, "", "²", 5000 digits) is ignored.
_COUNT_RE = re.compile(r"[0-9]{1,12}")


def matches_test(pattern: str, test: str) -> bool:
    """Whether the quarantine ``pattern`` names ``test``: ``*`` is any run of characters, ``?``
    one; every other character (the ``[``, ``]`` of pytest parameter ids too) stands for itself.

    The classic two-pointer wildcard match: at most len(pattern) x len(test) steps, where a regex
    such as ``.*x.*x.*y`` backtracks exponentially on a hostile name.
    """
    p = t = 0
    star, mark = -1, 0
    while t < len(test):
        if p < len(pattern) and pattern[p] in ("?", test[t]) and pattern[p] != "*":
            p, t = p + 1, t + 1
        elif p < len(pattern) and pattern[p] == "*":
            star, mark, p = p, t, p + 1
        elif star >= 0:
            p, mark = star + 1, mark + 1
            t = mark
        else:
            return False
    return all(c == "*" for c in pattern[p:])


def _matches(pattern: str, literal_parts: list[str], test: str) -> bool:
    if "*" not in pattern and "?" not in pattern:
        return pattern == test
    return all(part in test for part in literal_parts) and matches_test(pattern, test)


def parse_junit(data: bytes, quarantine: Sequence[str] = ()) -> TestSummary:
    """Count the outcomes of the tests of a JUnit XML report.

    Accepts a ``<testsuites>`` or a bare ``<testsuite>`` root and nested suites (pytest, Maven
    Surefire, jest-junit, go-junit-report, cargo-nextest, gotestsum...). A test case with an
    ``<error>`` child counts as an error, else with ``<failure>`` as a failure, else with
    ``<skipped>`` as skipped, else as passed. Reruns are read as the module docstring says.

    Tests matching one of the ``quarantine`` patterns (see :func:`matches_test`; the first
    that matches takes the test) are counted in :attr:`TestSummary.quarantined`, not in the
    other counts.
    """
    fmt = "JUnit XML"
    raw = _checked(data, fmt)
    if _first_char(raw) != "<":
        _fail(fmt, "not XML (the report does not start with '<')")
    patterns = list(quarantine)
    return _guarded(fmt, lambda d: _parse_junit(d, patterns), raw)


class _Attempts:
    """Every ``<testcase>`` of one test name in one report, folded as they arrive."""

    __slots__ = ("counts", "earlier_failed", "last", "last_flaky", "last_suite")

    def __init__(self) -> None:
        self.counts = [0, 0, 0, 0]  # per outcome, in _OUTCOMES order
        self.earlier_failed = False
        self.last = "passed"
        self.last_flaky = False
        self.last_suite = -1

    def add(self, outcome: str, flaky: bool, suite: int) -> None:
        if sum(self.counts):
            self.earlier_failed = self.earlier_failed or self.last in _FAILED
        self.counts[_OUTCOME_RANK[outcome]] += 1
        self.last, self.last_flaky, self.last_suite = outcome, flaky, suite


def _parse_junit(data: bytes, patterns: list[str]) -> TestSummary:
    fmt = "JUnit XML"
    suites: dict[str, None] = {}
    tests: dict[str, _Attempts] = {}
    # Open <testsuite> elements: (id, declared ``tests`` attribute or None), and how many
    # <testcase> children each has had so far.
    open_suites: list[tuple[int, int | None]] = []
    suite_cases: list[int] = []
    rerun_suites: set[int] = set()
    next_suite = 0
    case_depth = -1
    case_label = ""
    outcome = "passed"
    flaky = False
    for event, elem, names in _walk_xml(data, fmt):
        depth = len(names) - 1
        name = names[-1]
        if event == "start":
            if depth == 0 and name not in ("testsuites", "testsuite"):
                _fail(fmt, f"the root element is <{name}>; a JUnit report has <testsuites> or <testsuite>")
            if name == "testsuite" and case_depth < 0:
                suite = (elem.get("name") or "").strip()
                if suite:
                    suites.setdefault(suite)
                tests_attr = (elem.get("tests") or "").strip()
                declared = int(tests_attr) if _COUNT_RE.fullmatch(tests_attr) else None
                open_suites.append((next_suite, declared))
                suite_cases.append(0)
                next_suite += 1
            elif name == "testcase" and case_depth < 0:
                case_depth = depth
                outcome, flaky = "passed", False
                classname = (elem.get("classname") or "").strip()
                test = (elem.get("name") or "").strip() or "(unnamed)"
                case_label = (f"{classname}::{test}" if classname else test)[:MAX_TEST_NAME_CHARS]
            elif depth == case_depth + 1:
                if name in _OUTCOME_RANK and _OUTCOME_RANK[name] > _OUTCOME_RANK[outcome]:
                    outcome = name
                flaky = flaky or name in _FLAKY_CHILDREN
        elif name == "testcase" and depth == case_depth:
            attempts = tests.get(case_label)
            if attempts is None:
                if len(tests) >= MAX_DISTINCT_TESTS:
                    _fail(fmt, f"the report holds more than {MAX_DISTINCT_TESTS} distinct test cases")
                attempts = tests[case_label] = _Attempts()
            suite_id = -1
            if open_suites:
                suite_cases[-1] += 1
                suite_id = open_suites[-1][0]
            attempts.add(outcome, flaky, suite_id)
            case_depth = -1
        elif name == "testsuite" and case_depth < 0 and open_suites:
            suite_id, declared = open_suites.pop()
            cases = suite_cases.pop()
            if declared is not None and cases > declared:
                rerun_suites.add(suite_id)
    return _summarise(tests, rerun_suites, list(suites), patterns)


def _summarise(
    tests: dict[str, _Attempts],
    rerun_suites: set[int],
    suites: list[str],
    patterns: list[str],
) -> TestSummary:
    counts = dict.fromkeys(_OUTCOMES, 0)
    failed: list[str] = []
    flaky_tests: list[str] = []
    flaky_count = 0
    # Each pattern's literal pieces: a name lacking one cannot match, found by a fast substring
    # test before the character-by-character match (which costs ~30 us a name in Python).
    prefilters = [(test, [part for part in re.split(r"[*?]", test) if part]) for test in patterns]
    quarantined = {test: dict.fromkeys((*_OUTCOMES, "flaky"), 0) for test in patterns}
    q_failed: dict[str, list[str]] = {test: [] for test in patterns}
    q_tests: dict[str, list[str]] = {test: [] for test in patterns}
    for label, attempts in tests.items():
        tries = sum(attempts.counts)
        rerun = tries > 1 and (
            attempts.last_suite in rerun_suites or (attempts.earlier_failed and attempts.last == "passed")
        )
        per_outcome = dict.fromkeys(_OUTCOMES, 0)
        if rerun:
            per_outcome[attempts.last] = 1
        else:
            per_outcome.update(zip(_OUTCOMES, attempts.counts, strict=True))
        is_flaky = attempts.last == "passed" and (rerun or attempts.last_flaky)
        entry = next((test for test, parts in prefilters if _matches(test, parts, label)), None)
        if entry is not None:
            bucket = quarantined[entry]
            for key, n in per_outcome.items():
                bucket[key] += n
            bucket["flaky"] += is_flaky
            if len(q_tests[entry]) < MAX_LISTED_TESTS:
                q_tests[entry].append(label)
            if attempts.last in _FAILED and len(q_failed[entry]) < MAX_LISTED_TESTS:
                q_failed[entry].append(label)
            continue
        for key, n in per_outcome.items():
            counts[key] += n
        if (per_outcome["failure"] or per_outcome["error"]) and len(failed) < MAX_LISTED_TESTS:
            failed.append(label)
        if is_flaky:
            flaky_count += 1
            if len(flaky_tests) < MAX_LISTED_TESTS:
                flaky_tests.append(label)
    return TestSummary(
        tests=sum(counts.values()),
        passed=counts["passed"],
        failures=counts["failure"],
        errors=counts["error"],
        skipped=counts["skipped"],
        suites=suites,
        failed_tests=failed,
        flaky=flaky_count,
        flaky_tests=flaky_tests,
        quarantined=[
            QuarantinedTests(
                test=test,
                passed=quarantined[test]["passed"],
                failures=quarantined[test]["failure"],
                errors=quarantined[test]["error"],
                skipped=quarantined[test]["skipped"],
                flaky=quarantined[test]["flaky"],
                tests=q_tests[test],
                failed_tests=q_failed[test],
            )
            for test in patterns
        ],
    )
