# StopHub: `make demo` and `make test` are the two commands a newcomer types.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test lint format proto clean bench soak

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "StopHub needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP)

# A hub on a fresh SQLite file, the centre, two banks and a payment institution over gRPC.
demo: $(STAMP)
	$(BIN)/stophub demo --dir var/demo

test: $(STAMP)
	$(BIN)/python tools/protogen.py --check
	$(BIN)/pytest -q -p no:cacheprovider

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

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

proto: $(STAMP)
	$(BIN)/python tools/protogen.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
