# Set-up and jobs. `make install` makes .venv; every other target runs inside it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= recsys.toml
# `make bench SIZES=1000000x100000` for one size (e.g. on a GPU machine); BENCH_ARGS for more.
SIZES ?= 943x1682,100000x20000,200000x50000
BENCH_ARGS ?=

.PHONY: install duckdb-cli nightly test lint format bench bench-shards bench-train bench-itemknn quality report-screenshot clean

install: $(BIN)/recsys

# setup.py compiles recsys/_topk.c (the scoring engine's top-k selection) into the package.
$(BIN)/recsys: pyproject.toml setup.py recsys/_topk.c constraints.txt
	$(PYTHON) -m venv $(VENV)
	PIP_CONSTRAINT=constraints.txt $(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

# The DuckDB command line (PyPI's duckdb-cli) as .venv/bin/duckdb, for the README's queries.
duckdb-cli: install
	$(BIN)/pip install --quiet --disable-pip-version-check duckdb-cli

nightly: install
	$(BIN)/recsys nightly --config $(CONFIG)

test: install
	$(BIN)/python -m pytest

# Benchmark-only peers (implicit, faiss-cpu, psutil) come from the `bench` extra, never the tests.
bench: install
	PIP_CONSTRAINT=constraints.txt $(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	$(BIN)/python benchmarks/bench_scoring.py --sizes $(SIZES) $(BENCH_ARGS)

lint: install
	$(BIN)/ruff check recsys jobs tests benchmarks scripts
	$(BIN)/ruff format --check recsys jobs tests benchmarks scripts

format: install
	$(BIN)/ruff format recsys jobs tests benchmarks scripts
	$(BIN)/ruff check --fix recsys jobs tests benchmarks scripts

# Training at 2M and 20M interactions: each candidate, implicit's ALS and the default nightly
# (seconds and peak RSS); TRAIN_ARGS for more, e.g. TRAIN_ARGS="--sizes 2M --no-nightly".
TRAIN_ARGS ?=
bench-train: install
	PIP_CONSTRAINT=constraints.txt $(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	OPENBLAS_NUM_THREADS=1 $(BIN)/python benchmarks/bench_train.py $(TRAIN_ARGS)

# Item-kNN at 200,000 users x 1,000,000 items: fit and scoring seconds, peak memory.
bench-itemknn: install
	$(BIN)/python benchmarks/bench_itemknn.py

# One process x 2 threads against 2 ranks x 1 thread (docs/scaling.md); SHARDS_ARGS for more,
# e.g. SHARDS_ARGS="--users 5000 --items 1000000 --no-end-to-end".
SHARDS_ARGS ?=
bench-shards: install
	$(BIN)/python benchmarks/bench_shards.py $(SHARDS_ARGS)

# Quality on MovieLens-100K (needs ../shared/data/ml-100k): writes benchmarks/QUALITY.md.
quality: install
	PIP_CONSTRAINT=constraints.txt $(BIN)/pip install --quiet --disable-pip-version-check -e '.[bench]'
	OPENBLAS_NUM_THREADS=1 $(BIN)/python benchmarks/quality.py

# The served run's report, full height, in headless Chromium (apt-get install chromium), offline.
DATABASE ?= warehouse/recs.duckdb
SCREENSHOT ?= docs/report.png
report-screenshot: install
	@mkdir -p $(dir $(SCREENSHOT))
	$(BIN)/recsys report --database $(DATABASE) --out build/report.html
	$(BIN)/python scripts/report_screenshot.py build/report.html $(SCREENSHOT)

clean:
	rm -rf $(VENV) warehouse *.egg-info .pytest_cache .ruff_cache
