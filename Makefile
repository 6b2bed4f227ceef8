# Two commands for a newcomer: `make run` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NODE_STAMP := tests/node/node_modules/.installed
# command:package when the names differ (bwrap is Debian's bubblewrap: the OS sandbox of every command)
DEBIAN_TOOLS := bash zsh dash curl bwrap:bubblewrap
PYTEST_ARGS ?=

.PHONY: setup run test lint typecheck proto proto-check pytest bench chaos clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

$(NODE_STAMP): tests/node/package.json tests/node/package-lock.json
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

# Debian tools the tests use for real (shells, curl); installed only when missing and when we can.
debian-tools:
	@missing=""; for t in $(DEBIAN_TOOLS); do cmd=$${t%%:*}; pkg=$${t#*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi; \
	fi

setup: $(STAMP) $(NODE_STAMP) debian-tools

run: $(STAMP)
	$(PY) examples/main_job.py

lint: $(STAMP)
	$(PY) -m ruff check .

typecheck: $(STAMP)
	$(PY) -m mypy actors supervisor.py

proto: $(STAMP)
	$(PY) protos/generate.py

proto-check: $(STAMP) $(NODE_STAMP)
	$(PY) protos/generate.py --check
	tests/node/node_modules/.bin/buf lint

pytest: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

test: setup lint typecheck proto-check pytest

# The long chaos suite (kill -9 x30, an MCP kill storm, the full hostile sweep); `make test` runs it short.
# Each test prints its figures and seed as a `chaos {...}` line; CHAOS_SEED=N replays a run.
chaos: setup
	CHAOS_LONG=1 $(PY) -m pytest -q -s tests/chaos $(PYTEST_ARGS)

bench: setup
	$(PY) -m pip install --quiet -e '.[test,bench]'
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) tests/node/node_modules .pytest_cache .mypy_cache .ruff_cache
