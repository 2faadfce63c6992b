# Two commands on a fresh clone: `make dev` runs everything locally, `make test` runs the gate.
# `make test-fast` is the inner loop: unit, store and project checks in under a minute.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: dev test test-fast check lint fmt install install-dev bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

dev: install
	$(BIN)/callback-gateway dev

check: install-dev
	$(BIN)/ruff check gateway workers tooling tests
	$(BIN)/ruff format --check gateway workers tooling tests
	$(BIN)/mypy
	$(BIN)/lint-imports

test: check
	$(BIN)/pytest

# The inner loop (under a minute): domain, store and service tests, the pure worker policy, and the
# project's own checks (layering, settings, docs). `make test` still runs everything (CI runs it).
FAST := tests/domain tests/store tests/services tests/workers/test_retry.py \
	tests/infra/test_redis_batch.py tests/infra/test_redis_errors.py tests/project/test_layering.py \
	tests/project/test_settings.py tests/project/test_settings_parsing.py tests/project/test_operations.py \
	tests/project/test_docs_references.py
test-fast: install-dev
	$(BIN)/ruff check gateway workers tooling tests
	$(BIN)/pytest -q $(FAST)

fmt: install-dev
	$(BIN)/ruff format gateway workers tooling tests
	$(BIN)/ruff check --fix gateway workers tooling tests

bench: install
	$(BIN)/callback-gateway bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
