# The two commands: `make run` (the whole stack) and `make test` (the whole suite).
# Both create .venv/ when it is missing; see README.md.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000
DATA_DIR ?= .data

.PHONY: run test lint venv clean deb

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

# Debian packages (debusine-server, -worker, -signing, -client, -common) in ../ (debian/).
# Needs debhelper and python3-venv; the private environment is filled from the package index.
# Built from a copy of the tree in $(DEB_DIR) (dpkg-buildpackage writes next to the source).
DEB_DIR ?= dist/deb
deb:
	rm -rf $(DEB_DIR) && mkdir -p $(DEB_DIR)/debusine
	tar --exclude-vcs --exclude=./.venv --exclude=./dist --exclude=./.data \
		--exclude=./.mypy_cache --exclude=./.ruff_cache --exclude=./.pytest_cache \
		--exclude=__pycache__ -cf - . | tar -xf - -C $(DEB_DIR)/debusine
	cd $(DEB_DIR)/debusine && dpkg-buildpackage --build=binary --no-sign
	ls $(DEB_DIR)/*.deb
