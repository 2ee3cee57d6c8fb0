# The two set-up commands of the README:
#   make dev    install, then run the whole pipeline (embedded broker + database) with the dashboard on :4000
#   make test   install with test tools, make sure MariaDB runs, run the test suite
# `make dev` needs Python >= 3.11 (the dashboard's libraries are vendored in the package). `make test` also
# needs Node.js/npm (the official Socket.IO client's tests), Java 17+ and Maven (Apache Kafka comes from
# Maven Central), and installs MariaDB and Chromium with Debian's apt when they are missing.

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
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

install-test: install
	$(BIN)/python -m pip install --quiet -e '.[test]'
	npm ci --prefix $(JS_TESTS) --no-audit --no-fund
	@command -v chromium >/dev/null || scripts/install-chromium

# MariaDB installed (as root, when missing) and running; Apache Kafka's jars fetched once into .kafka/.
# The tests start their own Kafka brokers with scripts/kafka-broker.
services:
	scripts/ensure-mariadb
	scripts/kafka-broker --install-only

clean:
	rm -rf $(VENV) $(JS_TESTS)/node_modules test-artifacts .kafka
