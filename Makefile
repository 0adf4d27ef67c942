# The two commands of the quickstart: `make run` and `make test`.
# Both create .venv with the Python found here and install what they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= examples/nextbest.yaml

.PHONY: run test lint unit integration fuzz bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@

## run: install, train the demo model on first run, serve on 127.0.0.1:8000
run: $(VENV)/.installed
	$(BIN)/nextbest serve --config $(CONFIG) --demo

## test: install, lint, type-check, and run the whole suite (unit + integration)
test: $(VENV)/.installed lint
	$(BIN)/python -m pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: $(VENV)/.installed
	$(BIN)/python -m pytest tests/unit

integration: $(VENV)/.installed
	$(BIN)/python -m pytest tests/integration

## fuzz: schemathesis against a live server, 500 cases per operation (make test sends 30)
fuzz: $(VENV)/.installed
	NEXTBEST_FUZZ_EXAMPLES=$${NEXTBEST_FUZZ_EXAMPLES:-500} $(BIN)/python -m pytest tests/integration/test_fuzz_api.py

bench: $(VENV)/.installed
	$(BIN)/nextbest bench --config $(CONFIG)

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
