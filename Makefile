# twostep — `make serve` and `make test` each do all of their own set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test
DEBIAN_TEST_PACKAGES := chromium oathtool zbar-tools librsvg2-bin nginx-light wrk
# `make serve HOST=… PORT=… WORKERS=…` passes them as flags; unset, the configuration decides (TWOSTEP_CONFIG,
# TWOSTEP_HOST/PORT/WORKERS; defaults 127.0.0.1, 8000, 1).
HOST ?=
PORT ?=
WORKERS ?=

.PHONY: serve test check bench debian-packages clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(STAMP_TEST): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
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

check: $(STAMP_TEST)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

STAMP_BENCH := $(VENV)/.installed-bench
$(STAMP_BENCH): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(STAMP_RUN) $(STAMP_TEST) $@

bench: $(STAMP_BENCH) debian-packages
	$(BIN)/python -m bench.run $(if $(QUICK),--quick,)

clean:
	rm -rf $(VENV) build *.egg-info twostep-data
