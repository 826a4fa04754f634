# twostep — `make serve` and `make test` each do all of their own set-up on a fresh machine.
# For contributors: `make test-fast` (unit and in-process tests, about a minute), `make check` (format, lint,
# types, layers), `make fmt` (format and fix). See CONTRIBUTING.md.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test
STAMP_DEV := $(VENV)/.installed-dev
DEBIAN_TEST_PACKAGES := chromium oathtool zbar-tools librsvg2-bin nginx-light wrk caddy
# `make serve HOST=… PORT=… WORKERS=…` passes them as flags; unset, the configuration decides (TWOSTEP_CONFIG,
# TWOSTEP_HOST/PORT/WORKERS; defaults 127.0.0.1, 8000, 1).
HOST ?=
PORT ?=
WORKERS ?=

.PHONY: serve test test-fast check fmt bench debian-packages clean lock i18n

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Every target installs the exact versions of its lock file (requirements/*.txt, made by `make lock` from the
# ranges in pyproject.toml), then twostep itself without resolving anything more.
$(STAMP_RUN): pyproject.toml requirements/run.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements/run.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(STAMP_TEST): pyproject.toml requirements/test.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements/test.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP_RUN) $@

# The tools of `make check` and `make fmt`: no browser driver, no Debian packages.
$(STAMP_DEV): pyproject.toml requirements/dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements/dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP_RUN) $@

serve: $(STAMP_RUN)
	$(BIN)/twostep serve $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT)) $(if $(WORKERS),--workers $(WORKERS))

# The Debian packages the tests use as independent clients and real parts (installed when run as root).
debian-packages:
	@missing=""; \
	for p in $(DEBIAN_TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing Debian packages (install them as root):$$missing"; \
	  fi; \
	fi

node_modules/.installed: package.json
	npm install --no-audit --no-fund --silent
	touch $@

test: $(STAMP_TEST) debian-packages node_modules/.installed
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The inner loop: core, storage and services (SQLite, and PostgreSQL when TWOSTEP_TEST_POSTGRES_URL is set),
# the API in process (tests/api) and the static checks, without the tests marked slow; no subprocess server,
# no browser. Two workers.
FAST_TESTS := tests/core tests/storage tests/services tests/api tests/test_config.py tests/test_static_security.py tests/test_tables.py
test-fast: $(STAMP_TEST)
	$(BIN)/python -m pytest -q -n 2 --dist worksteal -m "not slow" $(FAST_TESTS) $(PYTEST_ARGS)

check: $(STAMP_DEV)
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: $(STAMP_DEV)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

STAMP_BENCH := $(VENV)/.installed-bench
$(STAMP_BENCH): pyproject.toml requirements/bench.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements/bench.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP_RUN) $(STAMP_TEST) $@

bench: $(STAMP_BENCH) debian-packages
	$(BIN)/python -m bench.run $(if $(QUICK),--quick,)

clean:
	rm -rf $(VENV) $(LOCK_VENV) build *.egg-info twostep-data

# Refresh the lock files from pyproject.toml's ranges (pip-tools in a venv of its own): keeps the pinned versions
# that still fit and adds what is new; `make lock UPGRADE=1` moves every pin to the newest version that fits.
LOCK_VENV := .venv-lock
lock:
	test -x $(LOCK_VENV)/bin/pip-compile || ($(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install --quiet pip-tools)
	for target in run test dev bench; do \
	  case $$target in run) extras="";; test) extras="--extra test";; dev) extras="--extra dev";; \
	    bench) extras="--extra test --extra bench";; esac; \
	  $(LOCK_VENV)/bin/pip-compile --quiet $(if $(UPGRADE),--upgrade,) --strip-extras --allow-unsafe --no-emit-index-url \
	    --no-emit-find-links --no-emit-trusted-host $$extras -o requirements/$$target.txt pyproject.toml; \
	done

# The message catalogues (issue 19): extract every message of the code and the templates into messages.pot,
# then add the new ones to each language's .po (empty until translated; a test fails on an empty or fuzzy
# one). The server reads the .po files themselves: there is nothing to compile.
LOCALES := src/twostep/locales
LANGUAGES := sl de
i18n: $(STAMP_RUN)
	$(BIN)/pybabel extract -F babel.cfg -k N_ --no-location --sort-output --no-wrap \
	  --project twostep --copyright-holder "twostep contributors" -o $(LOCALES)/messages.pot src
	for lang in $(LANGUAGES); do \
	  if [ -f $(LOCALES)/$$lang/LC_MESSAGES/messages.po ]; then \
	    $(BIN)/pybabel update --no-fuzzy-matching --no-wrap --ignore-obsolete -i $(LOCALES)/messages.pot -d $(LOCALES) -l $$lang; \
	  else \
	    $(BIN)/pybabel init --no-wrap -i $(LOCALES)/messages.pot -d $(LOCALES) -l $$lang; \
	  fi; \
	done
