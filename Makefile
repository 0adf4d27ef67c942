# The two commands of the quickstart: `make run` and `make test`.
# Both create .venv with the Python found here and install what they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= examples/nextbest.yaml

.PHONY: run test lint unit integration chaos fuzz bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@

## run: install, train the demo model on first run, serve on 127.0.0.1:8000
run: $(VENV)/.installed
	$(BIN)/nextbest serve --config $(CONFIG) --demo

## test: install, lint, type-check, and run the whole suite: unit tests (no Ray) and
## integration tests (one local Ray cluster) in separate processes, each in random order
test: $(VENV)/.installed lint
	$(BIN)/python -m pytest tests/unit
	$(BIN)/python -m pytest tests/integration

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: $(VENV)/.installed
	$(BIN)/python -m pytest tests/unit

integration: $(VENV)/.installed
	$(BIN)/python -m pytest tests/integration

## chaos: the long fault tests (a shard SIGKILLed every 15 s for 90 s at ~500 events/s in
## every fsync mode, node loss, ingress and supervisor kills, full and read-only state
## dir, 60 s at 3x capacity); figures at the end
chaos: $(VENV)/.installed
	NEXTBEST_CHAOS=1 $(BIN)/python -m pytest tests/integration/test_chaos.py \
	  tests/integration/test_failures.py tests/integration/test_disk.py \
	  tests/integration/test_overload.py -p no:randomly

## fuzz: schemathesis against a live server, 500 cases per operation (make test sends 30)
fuzz: $(VENV)/.installed
	NEXTBEST_FUZZ_EXAMPLES=$${NEXTBEST_FUZZ_EXAMPLES:-500} $(BIN)/python -m pytest tests/integration/test_fuzz_api.py

bench: $(VENV)/.installed
	$(BIN)/nextbest bench --config $(CONFIG)

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
