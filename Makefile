# Two commands matter: `make demo` and `make test`. Each creates .venv and installs the project
# with its dev extra on first use (only python3 and make are needed on the machine).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench install clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing prefect-promotion and its dev tools into $(VENV) (first run: about 1-2 minutes)"
	@# This machine's pip config names local indexes that may not exist; hide only those warnings.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]' 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
	@# An editable install leaves the project's own modules uncompiled; where PYTHONDONTWRITEBYTECODE
	@# is set, every `promote` run would compile them again (~30 ms of a publish's start-up).
	@$(BIN)/python -m compileall -q promotion flows tasks blocks > /dev/null
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

# Test files run on up to 4 workers (one per core), each file whole on one worker: the suite
# waits on servers and processes far more than it computes.
test: $(STAMP)
	$(BIN)/python -m pytest -n auto --maxprocesses 4 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/bench_store.py
	$(BIN)/python bench/bench_publish.py
	$(BIN)/python bench/bench_flows.py --database both
	$(BIN)/python bench/bench_webhook.py --database postgres
	$(BIN)/python bench/bench_sweep.py
	$(BIN)/python bench/bench_scan.py

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache *.egg-info
