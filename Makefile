# UniMatch from a fresh clone (Python 3.11+, Node.js 20+):
#
#   make serve   set up .venv from the lock, build the web client, run the platform
#   make test    set up .venv with the test extras, run the static checks and every test
#   make lock    re-resolve the lock files after a dependency changed in pyproject.toml
#
# Each set-up step leaves a stamp file and runs again only when what it was
# made from changes (the lock files, pyproject.toml, the web sources).

SHELL := /bin/bash
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
UV_VERSION := 0.13.9
UV_PIP := $(UV) pip install --quiet --python $(BIN)/python
# Bytecode compiled once at set-up: the environment may forbid writing it at
# run time (PYTHONDONTWRITEBYTECODE), and then every Ray worker and agent
# compiles its imports again at each start, past the time Ray waits for them.
# (A file no Python 3 can compile, shipped by some package, is no failure.)
COMPILE := $(BIN)/python -m compileall -q -j 0 $(VENV)/lib >/dev/null || true

LOCK := requirements.lock
TEST_LOCK := requirements-test.lock
# One target for the pins: what CI and the servers run.
LOCK_FLAGS := --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
	--generate-hashes --no-header --quiet

# Arguments for `unimatch serve` and pytest: `make serve ARGS='--port 9000'`,
# `make test PYTEST_ARGS='tests/test_chat.py -x'`.
ARGS ?=
PYTEST_ARGS ?=

.PHONY: help serve test check pytest lock lock-upgrade machine web web-check clean

help:
	@sed -n 's/^#   //p' $(firstword $(MAKEFILE_LIST))

# -- Python ----------------------------------------------------------------------

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "UniMatch needs Python 3.11 or newer (PYTHON=$(PYTHON))" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(UV): | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# The runtime packages, exactly as locked, and the project itself, editable.
$(VENV)/.runtime: $(LOCK) pyproject.toml Makefile | $(UV)
	$(UV_PIP) --require-hashes -r $(LOCK)
	$(UV_PIP) --no-deps -e .
	$(COMPILE)
	@touch $@

# The same plus the test extras (a superset of the runtime lock, same pins).
$(VENV)/.test: $(TEST_LOCK) pyproject.toml Makefile | $(UV)
	$(UV_PIP) --require-hashes -r $(TEST_LOCK)
	$(UV_PIP) --no-deps -e .
	$(COMPILE)
	@touch $@

# Re-resolve after pyproject.toml changed: versions already pinned stay, new
# dependencies get the newest release that fits. `make lock-upgrade` moves
# every pin to the newest release the bounds allow.
lock: | $(UV)
	$(UV) pip compile pyproject.toml --extra test $(LOCK_FLAGS) $(UPGRADE) -o $(TEST_LOCK)
	$(UV) pip compile pyproject.toml $(LOCK_FLAGS) -c $(TEST_LOCK) -o $(LOCK)

lock-upgrade:
	$(MAKE) lock UPGRADE=--upgrade

# -- Web client ------------------------------------------------------------------
# Built when web/package.json exists, again when a source is newer than the
# last build or web/out is gone.

ifneq ($(wildcard web/package.json),)
WEB_SOURCES := $(shell find web \( -path web/node_modules -o -path web/out -o -path web/.next \
	-o -path web/test-results -o -path web/playwright-report \) -prune -o -type f -print)
WEB_BUILT := web/out/.built

web/node_modules/.installed: web/package.json $(wildcard web/package-lock.json)
	cd web && if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; \
		else npm install --no-audit --no-fund; fi
	@touch $@

$(WEB_BUILT): web/node_modules/.installed $(WEB_SOURCES)
	cd web && npm run build
	@touch $@

web: $(WEB_BUILT)

# The client's own checks, those its package.json defines.
web-check: web/node_modules/.installed
	cd web && npm run --if-present lint && npm run --if-present typecheck \
		&& npm run --if-present test:unit
else
WEB_BUILT :=
web:
web-check:
endif

# -- Machine ---------------------------------------------------------------------
# What the tests need from the machine (nginx, chromium, promtool,
# docker-compose; local replication on the machine's PostgreSQL): installed
# or set once, a quick look when already there.

machine:
	@bash .ci/machine-setup

# -- Commands --------------------------------------------------------------------

serve: $(VENV)/.runtime $(WEB_BUILT)
	$(BIN)/unimatch serve $(ARGS)

check: $(VENV)/.test machine
	$(BIN)/ruff check unimatch tests bench
	$(BIN)/mypy unimatch
	$(BIN)/lint-imports
	PATH="$(CURDIR)/$(BIN):$$PATH" bash .ci/ops-checks

# pytest exits 5 when it ran no test: that is a failure too.
pytest: $(VENV)/.test $(WEB_BUILT) machine
	@status=0; PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS) || status=$$?; \
	if [ $$status -eq 5 ]; then echo "no tests ran" >&2; exit 1; fi; exit $$status

test: check web-check pytest

clean:
	rm -rf $(VENV) web/out web/node_modules
