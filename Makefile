# tradebot: `make demo` (embedded default, no services) and `make test` (real PostgreSQL + Redis).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_ENV := DJANGO_SETTINGS_MODULE=tradebot.settings.test
# The developer profile (DEBUG on) on the embedded default: no DATABASE_URL / REDIS_URL, so SQLite + eager Celery +
# in-process notifications.
DEMO_ENV := env -u DATABASE_URL -u REDIS_URL -u CELERY_BROKER_URL -u CELERY_RESULT_BACKEND DJANGO_SETTINGS_MODULE=tradebot.settings.local
# Developer targets (run, worker, beat) use the local profile unless DJANGO_SETTINGS_MODULE is set; the Procfile's
# roles, wsgi and the Celery app default to tradebot.settings.production.
DEV_ENV := DJANGO_SETTINGS_MODULE=$${DJANGO_SETTINGS_MODULE:-tradebot.settings.local}

.PHONY: browser-deps install demo test test-fast lint services migrate run up worker beat flower bench bench-install clean soak

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: install
	$(DEMO_ENV) $(PY) manage.py migrate --noinput -v 0
	$(DEMO_ENV) $(PY) manage.py demo

services:
	@bash scripts/services.sh

browser-deps:  ## headless Chromium for the dashboard's browser test (Debian packages)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update && apt-get install -y chromium chromium-driver)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-logo --no-cache
	$(TEST_ENV) $(PY) manage.py makemigrations --check --dry-run

# --create-db: a fresh test database every run, so rows a killed earlier run left committed can never leak in.
test: install services lint browser-deps
	$(TEST_ENV) $(VENV)/bin/pytest --create-db $(PYTEST_ARGS)

# The pure-module tests only (strategies, indicators, fill rules, engine, metrics, kernels, aggregation, validation,
# csvio, env parsing): no PostgreSQL, Redis or workers, nothing started. `make test` stays the gate.
test-fast: install
	$(TEST_ENV) $(VENV)/bin/pytest --fast -q $(PYTEST_ARGS)

# The full soak (tests/reliability/soak.py): 10,000 bots x 60 candles, a worker SIGKILLed every 10 candles, our own
# Redis restarted once; figures in var/reliability/report.json. `make test` runs a bounded one.
SOAK ?= SOAK_BOTS=10000 SOAK_CANDLES=60 SOAK_WORKERS=2 SOAK_KILL_EVERY=10 SOAK_SHARD_SIZE=1000 SOAK_API_RPS=200 SOAK_API_SECONDS=120
soak: install services
	$(TEST_ENV) $(SOAK) $(VENV)/bin/pytest tests/reliability/test_soak.py -q

migrate: install
	$(DEV_ENV) $(PY) manage.py migrate --noinput

run: install
	$(DEV_ENV) $(PY) manage.py runserver

# Every role of the Procfile (web, worker, beat, flower, ...) under honcho against PostgreSQL + Redis (started as for
# `make test`); Ctrl-C stops them all. Override DATABASE_URL / REDIS_URL / FLOWER_BASIC_AUTH / PORT as needed.
UP_ENV := PATH=$(CURDIR)/$(VENV)/bin:$$PATH DATABASE_URL=$${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/tradebot} \
	REDIS_URL=$${REDIS_URL:-redis://127.0.0.1:6379/0} FLOWER_BASIC_AUTH=$${FLOWER_BASIC_AUTH:-admin:admin} \
	DJANGO_SETTINGS_MODULE=$${DJANGO_SETTINGS_MODULE:-tradebot.settings.local}
up: install services
	$(UP_ENV) $(PY) manage.py migrate --noinput -v 0
	$(UP_ENV) $(VENV)/bin/honcho -f Procfile start

worker: install
	$(DEV_ENV) $(VENV)/bin/celery -A tradebot worker -Q market,collect,bots,backtest -l info

beat: install
	$(DEV_ENV) $(PY) manage.py setup_periodic_tasks
	$(DEV_ENV) $(VENV)/bin/celery -A tradebot beat -l info -S tradebot.beat:SlotLockedScheduler

flower: install
	$(DEV_ENV) $(PY) -m tradebot.flower   # needs FLOWER_BASIC_AUTH=user:password; FLOWER_ADDRESS (127.0.0.1), FLOWER_PORT (5555)

bench-install: install
	$(PY) -m pip install --quiet -e '.[dev,bench]'

bench: bench-install services
	$(TEST_ENV) $(PY) bench/aggregate.py
	$(TEST_ENV) $(PY) bench/ingest.py
	$(TEST_ENV) $(PY) bench/backtest.py
	$(TEST_ENV) $(PY) bench/sweep.py
	$(TEST_ENV) $(PY) bench/stream.py

clean:
	rm -rf var/ .pytest_cache
