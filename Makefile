# Eventscope: `make run` installs and serves with the demo; `make test` runs the suite.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PYTEST_ARGS ?=
TEST_WORKERS ?= 2

.PHONY: install run test bench lint format vendor vendor-check clean

install: $(VENV)/.installed

# The .pyx files are the collector's compiled parts (setup.py): a change to one
# rebuilds them, as does a change to a Python module that one includes whole
# (collector/compiled.py).
COMPILED_SOURCES := $(wildcard collector/*.pyx collector/*/*.pyx collector/*/*/*.pyx) \
	collector/semconv.py collector/normalize/stages.py
$(VENV)/.installed: pyproject.toml setup.py $(COMPILED_SOURCES)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	# Tests only. Its metadata pins opentelemetry-semantic-conventions==0.66b1,
	# which opentelemetry-sdk 1.45.2 (==0.66b2) refuses, so it cannot be in
	# pyproject.toml; its code runs on the newer conventions package.
	$(VENV)/bin/pip install -q --no-deps 'opentelemetry-instrumentation-pika==0.66b1'
	touch $@

# `make run HOST=0.0.0.0 PORT=8080 OTLP_HTTP_PORT=14318 OTLP_GRPC_PORT=14317`.
# With DATABASE_URL unset, `serve` starts the embedded PostgreSQL under ./var/pg.
# Ingest auth is off for the demo unless EVENTSCOPE_INGEST_AUTH says otherwise.
HOST           ?= 127.0.0.1
PORT           ?= 8000
OTLP_HTTP_PORT ?= 4318
OTLP_GRPC_PORT ?= 4317
EVENTSCOPE_INGEST_AUTH ?= off

run: install
	@echo "make run: serve --demo --host $(HOST) --port $(PORT) --otlp-http-port $(OTLP_HTTP_PORT) --otlp-grpc-port $(OTLP_GRPC_PORT)"
	@echo "make run: EVENTSCOPE_INGEST_AUTH=$(EVENTSCOPE_INGEST_AUTH)$(if $(filter off,$(EVENTSCOPE_INGEST_AUTH)), (anyone who reaches the OTLP ports may send; make run EVENTSCOPE_INGEST_AUTH=required asks for tokens),)"
	EVENTSCOPE_INGEST_AUTH=$(EVENTSCOPE_INGEST_AUTH) $(PY) manage.py serve --demo \
		--host $(HOST) --port $(PORT) \
		--otlp-http-port $(OTLP_HTTP_PORT) --otlp-grpc-port $(OTLP_GRPC_PORT)

# scripts/prepare-tests installs the system packages the suite needs (Chromium,
# Redis, RabbitMQ, NATS, Alertmanager, Node.js) when missing, starts the services that are not
# running and enables RabbitMQ's management API; it writes var/test.env with
# the local PostgreSQL's DATABASE_URL when one answers.
# pytest exits 5 when it collected nothing; that is a failure here like any other.
# Two pytest-xdist workers, each taking whole test files (a file's fixtures,
# servers and brokers stay in one process) on a test database of its own;
# most tests wait on real services, so two halve the suite's time on two
# cores. TEST_WORKERS=0 runs it in one process.
test: install
	scripts/prepare-tests
	set -a; [ ! -f var/test.env ] || . var/test.env; set +a; \
		$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: install
	$(PY) bench/run.py

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) manage.py makemigrations --check --dry-run

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The front-end libraries in static/vendor/ come from npm, listed in its
# manifest.json; `vendor` moves each to the newest release its range allows
# (needs npm and the network), `vendor-check` verifies them offline.
vendor:
	$(PYTHON) scripts/vendor.py

vendor-check:
	$(PYTHON) scripts/vendor.py --check

clean:
	rm -rf $(VENV) var .pytest_cache
