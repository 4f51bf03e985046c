# The two commands: `make demo` runs the demo, `make test` runs every check and test.
# Each sets up its own virtual environment on first use (or when pyproject.toml changes).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TEST_WORKERS ?= 2
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test test-unit lint docs bench bench-aggregates bench-subscriptions bench-outbox bench-outbox-faststream bench-projections generate clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
		echo "eventkeeper needs Python >= 3.11: run make PYTHON=python3.11 (or newer)"; exit 1; }
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

demo: $(STAMP)
	$(BIN)/eventstore demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy --strict tests/typing
	$(BIN)/lint-imports
	$(BIN)/python tools/async_to_sync.py --check

test: lint docs
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup -m "not serial"
	$(BIN)/pytest -m serial

# The documentation site with its API reference from the docstrings, into site/; any
# warning (a broken link, an unknown name, a bad docstring) fails the build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# The inner loop: pure modules only, no database needed (a few seconds).
test-unit: $(STAMP)
	$(BIN)/pytest tests/unit -m "not postgres" -q

bench: $(STAMP)
	$(BIN)/python benchmarks/append.py

# The comparison with the `eventsourcing` package runs in its own environment, so that
# package never becomes a dependency of this project.
bench-aggregates:
	$(PYTHON) -m venv .venv-bench
	.venv-bench/bin/python -m pip install -q -e . -r benchmarks/requirements-aggregates.txt
	.venv-bench/bin/python benchmarks/aggregates.py

# The subscription engine against raw psycopg and `eventsourcing`'s projection runner, in
# the same environment (a full run takes a while: see benchmarks/README.md).
bench-subscriptions:
	$(PYTHON) -m venv .venv-bench
	.venv-bench/bin/python -m pip install -q -e . -r benchmarks/requirements-aggregates.txt
	.venv-bench/bin/python benchmarks/subscriptions.py

# The outbox relay against raw nats-py and aio-pika loops, and append-to-broker latency: needs
# NATS JetStream on 127.0.0.1:4222 and RabbitMQ on 127.0.0.1:5672 (up to two minutes).
bench-outbox: $(STAMP)
	$(BIN)/python benchmarks/outbox.py

# The outbox relay to RabbitMQ against the `faststream-outbox` package's relay, in its own
# environment (so that package never becomes a dependency): needs RabbitMQ on
# 127.0.0.1:5672 (about three minutes: see benchmarks/README.md).
bench-outbox-faststream:
	$(PYTHON) -m venv .venv-bench-fso
	.venv-bench-fso/bin/python -m pip install -q -e . -r benchmarks/requirements-outbox-faststream.txt
	.venv-bench-fso/bin/python benchmarks/outbox_faststream.py

# A projection rebuild against raw psycopg and `eventsourcing`'s projection runner, in the
# same environment (about two minutes: see benchmarks/README.md).
bench-projections:
	$(PYTHON) -m venv .venv-bench
	.venv-bench/bin/python -m pip install -q -e . -r benchmarks/requirements-aggregates.txt
	.venv-bench/bin/python benchmarks/projections.py

generate: $(STAMP)
	$(BIN)/python tools/async_to_sync.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache site
