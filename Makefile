# agentca build / test entry points. GNU make.
#
#   make run     bootstrap (softhsm2, openssl, venv) then `agentca serve` on 127.0.0.1
#   make test    bootstrap (+ postgresql, wrk) -> lint -> pytest against a throwaway PostgreSQL
#   make lint    ruff check + mypy
#   make unit    tests/unit only (no PostgreSQL)
#   make bench   python -m bench (once bench/__main__.py exists), with a throwaway PostgreSQL
#   make clean   remove var/, the venv and caches (asks nothing)
#   make openapi regenerate docs/openapi.json from the API models (ca/api/schemas.py)
#
# Variables: VENV (default .venv), AGENTCA_DATA_DIR (default ./var, for `make run`),
# PYTEST_ARGS (extra pytest arguments), BENCH_ARGS.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test
.DELETE_ON_ERROR:

VENV ?= .venv
export VENV
AGENTCA_DATA_DIR ?= $(CURDIR)/var
PYTEST_ARGS ?=
BENCH_ARGS ?=

PY := $(VENV)/bin/python
PYTEST := $(PY) -m pytest -q -p no:cacheprovider

.PHONY: all run test lint unit bench faults clean bootstrap-run bootstrap-test

all: test

bootstrap-run:
	bash scripts/bootstrap.sh run

bootstrap-test:
	bash scripts/bootstrap.sh test

run: bootstrap-run
	AGENTCA_DATA_DIR='$(AGENTCA_DATA_DIR)' exec '$(VENV)/bin/agentca' run

lint: bootstrap-test
	'$(VENV)/bin/ruff' check .
	'$(VENV)/bin/mypy'
	'$(VENV)/bin/lint-imports'

test: bootstrap-test lint
	bash scripts/with-postgres.sh $(PYTEST) $(PYTEST_ARGS) tests

faults: bootstrap-test
	AGENTCA_FAULTS_FULL=1 bash scripts/with-postgres.sh $(PYTEST) $(PYTEST_ARGS) tests/faults

unit: bootstrap-test
	$(PYTEST) $(PYTEST_ARGS) tests/unit

bench: bootstrap-test
	if [[ -f bench/__main__.py ]]; then \
	    bash scripts/with-postgres.sh $(PY) -m bench $(BENCH_ARGS); \
	else \
	    echo "make bench: bench/__main__.py does not exist yet; nothing to run"; \
	fi

.PHONY: bench-enroll
bench-enroll: bootstrap-test
	bash scripts/with-postgres.sh $(PY) bench/enroll_bench.py $(BENCH_ARGS)

.PHONY: screenshots
screenshots: bootstrap-test  ## rewrite docs/console/*.png from the browser tests
	AGENTCA_UPDATE_SCREENSHOTS=1 bash scripts/with-postgres.sh $(PYTEST) tests/browser

.PHONY: bench-console
bench-console: bootstrap-test
	bash scripts/with-postgres.sh $(PY) bench/console_bench.py $(BENCH_ARGS)

.PHONY: bench-ledger
bench-ledger: bootstrap-test
	bash scripts/with-postgres.sh $(PY) bench/ledger_bench.py $(BENCH_ARGS)

.PHONY: bench-crl
bench-crl: bootstrap-test
	bash scripts/with-postgres.sh $(PY) bench/crl_bench.py $(BENCH_ARGS)

.PHONY: bench-lint
bench-lint: bootstrap-test
	$(PY) bench/lint_bench.py $(BENCH_ARGS)

.PHONY: bench-cli
bench-cli: bootstrap-test
	$(PY) bench/cli_startup.py $(BENCH_ARGS)

.PHONY: bench-ocsp
bench-ocsp: bootstrap-test
	bash scripts/with-postgres.sh $(PY) bench/ocsp_bench.py $(BENCH_ARGS)

.PHONY: bench-oms-digest
bench-oms-digest: bootstrap-test
	$(PY) bench/oms_digest_bench.py $(BENCH_ARGS)

.PHONY: openapi
openapi:
	PYTHONPATH='$(CURDIR)' '$(PY)' -m ca.api.openapi docs/openapi.json

clean:
	rm -rf var '$(VENV)' .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist
	find . -path './.git' -prune -o \
	    \( -name __pycache__ -o -name '*.egg-info' \) -type d -prune -exec rm -rf {} +

# --- agent/gateway SDKs (issue 6) ---------------------------------------------------------
.PHONY: demo bench-gateway

demo: bootstrap-run
	'$(PY)' -m examples.demo

bench-gateway: bootstrap-test
	'$(PY)' -m bench.gateway_bench $(BENCH_ARGS)

.PHONY: bench-replica
bench-replica: bootstrap-test
	bash scripts/with-postgres.sh $(PY) bench/replica_lag.py $(BENCH_ARGS)

.PHONY: bench-drift
bench-drift: bootstrap-test
	$(PY) bench/drift_bench.py $(BENCH_ARGS)
