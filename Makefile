# Touchline: `make up` runs the embedded stack, `make test` runs every check CI runs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: up demo test lint typecheck pytest bench clean system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	# The CDNOW reference data ships inside this archived wheel; its dependencies are not needed.
	$(BIN)/pip install --quiet --no-deps Lifetimes==0.11.3
	touch $@ $(VENV)/.installed

up: $(VENV)/.installed
	$(BIN)/touchline up

# A year of multi-channel demo traffic for the stack `make up` runs (in another terminal).
demo: $(VENV)/.installed
	$(BIN)/touchline demo

# PostgreSQL server binaries are needed by the integration tests; install them if missing.
system-deps:
	@bash scripts/system-deps.sh

test: $(VENV)/.installed-test system-deps lint typecheck pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

pytest: $(VENV)/.installed-test
	$(BIN)/pytest

bench: $(VENV)/.installed-test system-deps
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
