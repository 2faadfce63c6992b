# Two commands on a fresh clone: `make dev` runs everything locally, `make test` runs the gate.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: dev test check lint fmt install install-dev bench clean

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
	$(BIN)/ruff check gateway workers tests
	$(BIN)/ruff format --check gateway workers tests
	$(BIN)/mypy

test: check
	$(BIN)/pytest

fmt: install-dev
	$(BIN)/ruff format gateway workers tests
	$(BIN)/ruff check --fix gateway workers tests

bench: install
	$(BIN)/callback-gateway bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
