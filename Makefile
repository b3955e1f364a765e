# Every target bootstraps from nothing (only python3 + pip needed): uv if missing, the locked environment,
# PostgreSQL if down; then runs. `uv run --frozen` everywhere: nothing is ever re-resolved, only uv.lock is used.
#
#   make test          the whole pytest suite in .venv (Airflow from uv.lock), the browser tests included
#   make test-ui       only the browser tests (tests/ui: Debian's chromium against a real Airflow stack)
#   make lint          ruff check, ruff format --check, mypy
#   make e2e           the example DAGs on real LocalExecutor and CeleryExecutor deployments, faults and load
#   make test-lowest   unit + integration suites on the lowest supported Airflow, in .venv-lowest
#   make demo          scripts/demo.py against the bundled emulator
#   make bench         every benchmark side by side on this machine: tables on stdout, bench-results/ (~20 min)
#   make bench-smoke   every benchmark at a tiny size, to check they run (CI, under 2 minutes)
#   make clean         remove generated files (.venv-lowest, caches, .demo); keeps .venv
#   make constraints-lowest   re-resolve ci/constraints-lowest.txt from ci/lowest.in + the dev group

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION ?= 0.13.9
# uv from PATH, else a private copy that the `uv` target installs with pip into .venv-uv/ (gitignored: .venv-*/).
UV ?= $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.venv-uv/bin/uv)
PY := $(UV) run --frozen python
PYTEST_ARGS ?=

LOWEST_VENV := .venv-lowest
LOWEST_PYTHON ?= 3.11
LOWEST_CONSTRAINTS := ci/constraints-lowest.txt
LOWEST_PY := $(LOWEST_VENV)/bin/python

.PHONY: help uv sync services browser test test-ui e2e lint test-lowest lowest-venv constraints-lowest demo bench bench-smoke clean

help:
	@sed -n 's/^#   make /  make /p' $(MAKEFILE_LIST)

uv:
	@if ! [ -x "$(UV)" ]; then \
		echo "uv not found: installing uv==$(UV_VERSION) into .venv-uv/"; \
		$(PYTHON) -m venv .venv-uv; \
		.venv-uv/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"; \
	fi

sync: uv
	$(UV) sync --frozen

services:
	@bash ci/ensure-services.sh

# Debian's chromium + chromedriver for tests/ui, installed with apt-get when missing (never downloaded otherwise).
browser:
	@bash ci/ensure-browser.sh

test: sync services browser
	$(UV) run --frozen pytest -q $(PYTEST_ARGS)

test-ui: sync services browser
	$(UV) run --frozen pytest -q tests/ui $(PYTEST_ARGS)

# Two real deployments (every component a process; PostgreSQL and Redis started if down), one after the other.
# Prints the table of scenario outcomes per deployment and writes it to build/e2e/report.md.
E2E_TIMEOUT ?= 1500
e2e: sync
	@bash ci/ensure-services.sh --redis
	$(UV) run --frozen pytest -q -m deployment -p no:cacheprovider --timeout=$(E2E_TIMEOUT) tests/e2e/deployments $(PYTEST_ARGS)

lint: sync
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy

# The lowest supported Airflow (pinned in ci/lowest.in) with everything else pinned by the committed
# ci/constraints-lowest.txt; the project itself is installed editable. Re-running only installs what changed.
lowest-venv: uv
	@[ -x "$(LOWEST_PY)" ] || $(UV) venv --quiet --python $(LOWEST_PYTHON) $(LOWEST_VENV)
	$(UV) pip install --quiet --python $(LOWEST_PY) -c $(LOWEST_CONSTRAINTS) -r ci/lowest.in --group pyproject.toml:dev
	@$(LOWEST_PY) -c 'import airflow; print("lowest env: apache-airflow", airflow.__version__)'

test-lowest: lowest-venv services
	$(LOWEST_PY) -m pytest -q tests/unit tests/integration $(PYTEST_ARGS)

constraints-lowest: uv
	$(UV) pip compile ci/lowest.in --group pyproject.toml:dev --python-version $(LOWEST_PYTHON) \
		--no-emit-package airflow-runway --upgrade --quiet -o $(LOWEST_CONSTRAINTS)

# Quiet: the demo tells its own story (Airflow's output goes to .demo/airflow.log).
demo: uv
	@echo "Preparing the environment from uv.lock (uv sync --frozen, quiet)..."
	@$(UV) sync --frozen --quiet
	@$(PY) scripts/demo.py

# The `bench` dependency group (matplotlib, for the plots) is added to the locked environment for these only.
bench: sync
	$(UV) run --frozen --group bench python benchmarks/run_all.py --out bench-results

bench-smoke: sync
	$(UV) run --frozen --group bench python benchmarks/run_all.py --smoke --out .bench-tmp/smoke

clean:
	rm -rf $(LOWEST_VENV) .venv-uv .pytest_cache .mypy_cache .ruff_cache .demo .bench-tmp build dist
	find . -path ./.venv -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
