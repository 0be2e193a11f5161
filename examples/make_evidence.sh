#!/usr/bin/env bash
# Regenerate the example CI evidence in examples/evidence/ by running the real tools
# (pytest, coverage.py, bandit) against the example service in examples/hello/.
#
#   bash examples/make_evidence.sh
#
# Tools are installed, at pinned versions, into a throwaway venv in a temp dir (never the
# project venv). Set EVIDENCE_VENV=/path/to/venv to reuse a venv that already has them, and
# PYTHON=python3.x to choose the interpreter the throwaway venv is made from.
# Every path written into the reports is relative to examples/hello/, the working directory.
set -euo pipefail

PYTEST_VERSION=9.2.0
COVERAGE_VERSION=7.17.5
BANDIT_VERSION=1.9.4

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
hello="$here/hello"
out="$here/evidence"
work="$(mktemp -d "${TMPDIR:-/tmp}/hello-evidence.XXXXXX")"
trap 'rm -rf "$work"' EXIT

if [[ -n "${EVIDENCE_VENV:-}" ]]; then
    venv="$EVIDENCE_VENV"
else
    venv="$work/venv"
    "${PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "pytest==$PYTEST_VERSION" "coverage==$COVERAGE_VERSION" "bandit[sarif]==$BANDIT_VERSION"
fi

mkdir -p "$out"

# coverage.py settings; relative_files makes <source> and the file names relative.
cat >"$work/coveragerc" <<'RC'
[run]
branch = true
relative_files = true
source = src
RC

# Keep the source tree clean: no __pycache__, no .pytest_cache, no .coverage in it.
export PYTHONDONTWRITEBYTECODE=1
export COVERAGE_RCFILE="$work/coveragerc"
export COVERAGE_FILE="$work/.coverage"

cd "$hello"

# 1. Tests (JUnit XML) under coverage with branch measurement. `-c /dev/null --rootdir=.`
#    keeps pytest from picking up the enclosing project's pyproject.toml.
PYTHONPATH=src "$venv/bin/coverage" run --branch -m pytest -q -p no:cacheprovider \
    -c /dev/null --rootdir=. --junitxml="$out/junit.xml" tests

# 2. Coverage reports: Cobertura XML and coverage.py JSON.
"$venv/bin/coverage" xml -o "$out/coverage.xml"
"$venv/bin/coverage" json -o "$out/coverage.json"
"$venv/bin/coverage" report -m

# 3. Security scan as SARIF 2.1.0. bandit exits 1 whenever it reports any finding (even a
#    LOW one), so accept 0 and 1 and fail on anything else.
rc=0
"$venv/bin/bandit" -r src -f sarif -o "$out/bandit.sarif" || rc=$?
if [[ $rc -gt 1 ]]; then
    echo "bandit failed with exit code $rc" >&2
    exit "$rc"
fi

echo "tool versions:"
"$venv/bin/python" --version
"$venv/bin/pytest" --version
"$venv/bin/coverage" --version | head -n 1
"$venv/bin/bandit" --version | head -n 1
echo "wrote: $out/junit.xml $out/coverage.xml $out/coverage.json $out/bandit.sarif"
