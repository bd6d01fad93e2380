# Touchline: `make up` runs the embedded stack, `make test` runs every check CI runs
# (`make test-unit`, `test-integration`, `test-e2e`: one tier of the tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Test workers (pytest-xdist); the tests marked `wall_clock` then run alone.
WORKERS ?= 2

# The tests of marker expression $(1): on $(WORKERS) workers, then alone those asserting a bound
# in seconds (pytest's exit code 5 is "none selected").
define run_tests
	$(BIN)/pytest -n $(WORKERS) -m "($(1)) and not wall_clock"
	$(BIN)/pytest -m "($(1)) and wall_clock" || [ $$? -eq 5 ]
endef

# The JavaScript SDKs of the SDK matrix (tests/e2e/test_sdks.py), at the versions in the lock file.
SDKS := tests/sdks

.PHONY: up demo test test-unit test-integration test-e2e lint typecheck pytest bench clean system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[embedded]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[embedded,test]'
	# The CDNOW reference data ships inside this archived wheel; its dependencies are not needed.
	$(BIN)/pip install --quiet --no-deps Lifetimes==0.11.3
	touch $@ $(VENV)/.installed

$(SDKS)/node_modules/.installed: $(SDKS)/package-lock.json | system-deps
	cd $(SDKS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

up: $(VENV)/.installed
	$(BIN)/touchline up

# A year of multi-channel demo traffic for the stack `make up` runs (in another terminal).
demo: $(VENV)/.installed
	$(BIN)/touchline demo

# PostgreSQL server binaries, chromium, Node.js and npm are needed by the tests; install if missing.
system-deps:
	@bash scripts/system-deps.sh

test: $(VENV)/.installed-test system-deps $(SDKS)/node_modules/.installed lint typecheck pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

pytest: $(VENV)/.installed-test $(SDKS)/node_modules/.installed
	$(call run_tests,unit or integration or e2e)

# One tier at a time (markers set from the test's directory by tests/conftest.py).
test-unit: $(VENV)/.installed-test
	$(call run_tests,unit)

test-integration: $(VENV)/.installed-test system-deps
	$(call run_tests,integration)

test-e2e: $(VENV)/.installed-test system-deps $(SDKS)/node_modules/.installed
	$(call run_tests,e2e)

bench: $(VENV)/.installed-test system-deps
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache $(SDKS)/node_modules
