# The project's interface: `make run`, `make test`, `make lint`, `make bench`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: bench run test test-faults test-unit test-integration test-e2e test-deploy test-browser lint install clean compose-up compose-down widget console browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[embedded,dev,export]'
	touch $(STAMP)

install: $(STAMP)

## widget: the feedback widget's bundles (libs/widget/dist), built with the locked npm tooling
WIDGET := libs/widget
WIDGET_MODULES := $(WIDGET)/node_modules/.package-lock.json
WIDGET_BUILT := $(WIDGET)/dist/.built
WIDGET_SOURCES := $(wildcard $(WIDGET)/src/*.ts) $(WIDGET)/build.mjs $(WIDGET)/tsconfig.json

$(WIDGET_MODULES): $(WIDGET)/package-lock.json
	cd $(WIDGET) && npm ci --no-audit --no-fund --loglevel=error
	touch $(WIDGET_MODULES)

$(WIDGET_BUILT): $(WIDGET_MODULES) $(WIDGET_SOURCES)
	cd $(WIDGET) && npm run --silent build
	touch $(WIDGET_BUILT)

widget: $(WIDGET_BUILT)

## console: the review console's assets (libs/console/dist: uPlot and the console's CSS),
## built with the same locked npm tooling; the query service serves them under /console/static
CONSOLE := libs/console
CONSOLE_MODULES := $(CONSOLE)/node_modules/.package-lock.json
CONSOLE_BUILT := $(CONSOLE)/dist/.built
CONSOLE_SOURCES := $(wildcard $(CONSOLE)/src/*) $(CONSOLE)/build.mjs $(CONSOLE)/tsconfig.json

$(CONSOLE_MODULES): $(CONSOLE)/package-lock.json
	cd $(CONSOLE) && npm ci --no-audit --no-fund --loglevel=error
	touch $(CONSOLE_MODULES)

$(CONSOLE_BUILT): $(CONSOLE_MODULES) $(CONSOLE_SOURCES)
	cd $(CONSOLE) && npm run --silent build
	touch $(CONSOLE_BUILT)

console: $(CONSOLE_BUILT)

## browser: Debian's Chromium for the browser tests (skipped when it is already there)
CHROMIUM := /usr/bin/chromium

$(CHROMIUM):
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null

browser: $(CHROMIUM)

## run: the whole system on this machine (embedded broker and PostgreSQL unless configured)
run: $(STAMP)
	@if command -v npm >/dev/null; then $(MAKE) --no-print-directory widget console; \
	else echo "npm not found: the widget, its demo page and the console's charts are not built (Node.js 20+ needed)"; fi
	$(BIN)/feedbackloop run

## test: install what is needed and run the whole suite
test: $(STAMP) $(WIDGET_BUILT) $(CONSOLE_BUILT) $(CHROMIUM)
	$(BIN)/python -m pytest

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

test-integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration

test-e2e: $(STAMP) $(WIDGET_BUILT)
	$(BIN)/python -m pytest tests/e2e

test-browser: $(STAMP) $(WIDGET_BUILT) $(CONSOLE_BUILT) $(CHROMIUM)
	$(BIN)/python -m pytest tests/browser

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

## lint: ruff everywhere, the layering (import-linter contracts in pyproject.toml), mypy strict
## on libs/ and checked on services/
lint: $(STAMP)
	$(BIN)/ruff check libs services tests
	$(BIN)/lint-imports
	$(BIN)/mypy --strict libs/feedbackloop
	$(BIN)/mypy services

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
