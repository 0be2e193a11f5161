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

One module per format (:mod:`.junit`, :mod:`.coverage`, :mod:`.sarif`, :mod:`.perf` for k6 and
Locust, :mod:`.jmeter` for JMeter ``.jtl`` CSV, which :mod:`.perf` recognises by its header), the
summaries they return in :mod:`.summaries` and the shared safe-parsing helpers in
:mod:`._safe`. This package re-exports the public names, which is where importers take them from.
"""

# Defined in promotion.errors; re-exported here, where tests import it from.
from promotion.errors import EvidenceUnreadable as EvidenceUnreadable
from promotion.evidence._safe import MAX_EVIDENCE_BYTES as MAX_EVIDENCE_BYTES
from promotion.evidence._safe import MAX_XML_DEPTH as MAX_XML_DEPTH
from promotion.evidence.coverage import parse_coverage as parse_coverage
from promotion.evidence.junit import MAX_LISTED_TESTS as MAX_LISTED_TESTS
from promotion.evidence.junit import parse_junit as parse_junit
from promotion.evidence.perf import parse_perf as parse_perf
from promotion.evidence.sarif import MAX_LISTED_FINDINGS as MAX_LISTED_FINDINGS
from promotion.evidence.sarif import MAX_MESSAGE_CHARS as MAX_MESSAGE_CHARS
from promotion.evidence.sarif import parse_sarif as parse_sarif
from promotion.evidence.summaries import SARIF_LEVELS as SARIF_LEVELS
from promotion.evidence.summaries import CoverageFormat as CoverageFormat
from promotion.evidence.summaries import CoverageSummary as CoverageSummary
from promotion.evidence.summaries import Finding as Finding
from promotion.evidence.summaries import IncompleteRun as IncompleteRun
from promotion.evidence.summaries import PerfFormat as PerfFormat
from promotion.evidence.summaries import PerfSummary as PerfSummary
from promotion.evidence.summaries import SarifLevel as SarifLevel
from promotion.evidence.summaries import ScanSummary as ScanSummary
from promotion.evidence.summaries import TestSummary as TestSummary
