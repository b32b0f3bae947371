# Set-up and jobs. `make install` makes .venv; every other target runs inside it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= recsys.toml

.PHONY: install nightly test lint format bench quality clean

install: $(BIN)/recsys

$(BIN)/recsys: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	PIP_CONSTRAINT=constraints.txt $(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

nightly: install
	$(BIN)/recsys nightly --config $(CONFIG)

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check recsys jobs tests benchmarks
	$(BIN)/ruff format --check recsys jobs tests benchmarks

format: install
	$(BIN)/ruff format recsys jobs tests benchmarks
	$(BIN)/ruff check --fix recsys jobs tests benchmarks

# Quality on MovieLens-100K (needs ../shared/data/ml-100k): writes benchmarks/QUALITY.md.
quality: install
	PIP_CONSTRAINT=constraints.txt $(BIN)/pip install --quiet --disable-pip-version-check -e '.[bench]'
	OPENBLAS_NUM_THREADS=1 $(BIN)/python benchmarks/quality.py

clean:
	rm -rf $(VENV) warehouse *.egg-info .pytest_cache .ruff_cache
