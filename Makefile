# The two set-up commands of the README:
#   make dev    install, then run the whole pipeline (embedded broker + database) with the dashboard on :4000
#   make test   install with test tools, make sure MariaDB runs, run the test suite
# Both work on a fresh machine with Python >= 3.11, Node.js/npm, and (for tests) MariaDB and Chromium.

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
DASHBOARD := rtdstream/web/dashboard
JS_TESTS := tests/js

.PHONY: dev test install install-test services clean

dev: install
	$(BIN)/rtdstream dev

test: install-test services
	$(BIN)/pytest

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	npm ci --prefix $(DASHBOARD) --no-audit --no-fund

install-test: install
	$(BIN)/python -m pip install --quiet -e '.[test]'
	npm ci --prefix $(JS_TESTS) --no-audit --no-fund
	@command -v chromium >/dev/null || scripts/install-chromium

services:
	scripts/ensure-mariadb

clean:
	rm -rf $(VENV) $(DASHBOARD)/node_modules $(JS_TESTS)/node_modules test-artifacts
