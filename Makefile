# The two commands: `make run` (the whole stack) and `make test` (the whole suite).
# Both create .venv/ when it is missing; see README.md.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000
DATA_DIR ?= .data

.PHONY: run test lint venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[server,worker,client,signing,test]'
	touch $(STAMP)

run: $(STAMP)
	DEBUSINE_DATA_DIR="$(DATA_DIR)" $(BIN)/python -m debusine.testing.devstack --port $(PORT)

# PostgreSQL and Redis: the configured ones (DEBUSINE_DATABASE_URL / DEBUSINE_REDIS_URL), else
# the ones on 127.0.0.1 when they answer, else embedded ones for the run.
test: $(STAMP)
	$(BIN)/python -m debusine.testing.services -n auto $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy debusine bench
	$(BIN)/debusine-admin makemigrations --check --dry-run --skip-checks
	$(BIN)/debusine-signing makemigrations --check --dry-run --skip-checks

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
