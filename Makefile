# StopHub: `make demo` and `make test` are the two commands a newcomer types.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Node.js 20+ and npm: the buf CLI (tools/buf) and the Node.js bank example (examples/node-bank),
# each installed from its package-lock.json and reinstalled when that changes.
NPM ?= npm
BUF := tools/buf/node_modules/.bin/buf
BUF_STAMP := tools/buf/node_modules/.installed-stamp
NODE_BANK_STAMP := examples/node-bank/node_modules/.installed-stamp
# The release `buf breaking` holds proto/ to (docs/proto-style.md; cut with tools/buf/cut-baseline).
PROTO_BASELINE = proto/releases/$(shell cat proto/releases/CURRENT)

.PHONY: install demo test lint format proto clean bench soak

# The C accelerator of `audit verify` (ADR 18) is built in place by the editable install: a
# change to it reinstalls.
$(STAMP): pyproject.toml setup.py hub/store/_leafscan.c hub/domain/_merklefold.c hub/crypto/_sm2.c
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "StopHub needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP)

$(BUF_STAMP): tools/buf/package.json tools/buf/package-lock.json
	$(NPM) ci --prefix tools/buf --no-audit --no-fund
	@touch $@

$(NODE_BANK_STAMP): examples/node-bank/package.json examples/node-bank/package-lock.json
	$(NPM) ci --prefix examples/node-bank --no-audit --no-fund
	@touch $@

# A hub on a fresh SQLite file, the centre, two banks and a payment institution over gRPC.
demo: $(STAMP)
	$(BIN)/stophub demo --dir var/demo

# The suite runs on TEST_WORKERS processes (pytest-xdist; tests marked with one xdist_group
# share a worker), after the few marked `alone` (a PostgreSQL restart cuts every database of
# the cluster) have run by themselves. TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/pytest -q -p no:cacheprovider

test: $(STAMP) $(BUF_STAMP) $(NODE_BANK_STAMP)
	$(BIN)/python tools/protogen.py --check
	$(PYTEST) -m alone
	$(PYTEST) -m "not alone" -n $(TEST_WORKERS) --dist loadgroup

# Every benchmark in bench/ (clocks, intake, delivery), one table of figures beside same-run
# baselines; not part of `make test`. Full run ~50 min with PostgreSQL (the clock sweep is most
# of it): `make bench BENCH_ARGS="intake"` runs one, `BENCH_ARGS=--quick` a short smoke run.
# PostgreSQL too when STOPHUB_BENCH_DATABASE_URL or STOPHUB_TEST_DATABASE_URL is set.
# See BENCHMARKS.md.
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# Soak (not part of `make test`; 10 min): a real hub under mixed load, its memory and open
# files sampled over time, with a verdict on growth. See BENCHMARKS.md.
soak: $(STAMP)
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

lint: $(STAMP) $(BUF_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BUF) lint
	$(BUF) breaking --against $(PROTO_BASELINE)

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

proto: $(STAMP)
	$(BIN)/python tools/protogen.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
	rm -f hub/store/_leafscan.*.so hub/domain/_merklefold.*.so hub/crypto/_sm2.*.so
	rm -rf tools/buf/node_modules examples/node-bank/node_modules
