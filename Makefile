# Every target builds the local venv first; nothing outside .venv is installed by pip.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv demo test unit lint bench soak clean

# A line per step and pip's own lines per package: the first `make demo` takes a minute or two.
$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	@echo "==> upgrading pip in $(VENV)"
	$(BIN)/python -m pip install -q --upgrade pip
	@echo "==> installing distbreaker with its [dev] extras into $(VENV)"
	$(BIN)/python -m pip install --progress-bar off -e ".[dev]"
	touch $(STAMP)
	@echo "==> $(VENV) is ready"

venv: $(STAMP)

## Several worker processes share one breaker against a flaky local upstream.
demo: $(STAMP)
	$(BIN)/distbreaker demo

## The full suite. Real Redis: $$DISTBREAKER_TEST_REDIS_URL, else a private redis-server.
test: $(STAMP)
	.ci/ensure-system-packages
	# coverage starts before pytest, so modules the distbreaker plugin imports early count too
	$(BIN)/python -m coverage run -m pytest -p no:cacheprovider --durations=25 $(PYTEST_ARGS)
	$(BIN)/python -m coverage report --skip-covered --sort=cover

## Fast tests only: no server, no Docker (the behaviour suites run on fakeredis).
unit: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not integration and not docker and not cluster" tests/unit

lint: $(STAMP)
	$(BIN)/ruff check distbreaker tests benchmarks
	$(BIN)/ruff format --check distbreaker tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	.ci/ensure-system-packages
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

## A bounded, self-checking chaos run on a private redis-server (~2 minutes; SOAK_ARGS=--short).
soak: $(STAMP)
	.ci/ensure-system-packages
	$(BIN)/python -m benchmarks.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) dist build .pytest_cache .mypy_cache .ruff_cache .coverage
