"""Shared fixtures: small planted datasets on disk and a runner for the installed CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from recsys import synthetic

RECSYS = str(Path(sys.executable).parent / "recsys")

# A small, fast configuration for end-to-end runs (a few seconds each on 2 cores).
FAST_CONFIG = """
[source]
demo_users = 300
demo_items = 120
demo_interactions_per_user = 15

[model]
candidates = ["popularity", "mf_bias", "bpr"]
dim = 16

[model.params.bpr]
epochs = 8

[model.params.mf_bias]
epochs = 8

[scoring]
top_n = 10
similar_items_n = 5
"""


@pytest.fixture
def fast_config(tmp_path: Path) -> Path:
    path = tmp_path / "recsys.toml"
    path.write_text(FAST_CONFIG)
    return path


@pytest.fixture
def planted_csv(tmp_path: Path) -> Path:
    data = synthetic.planted(num_users=200, num_items=100, per_user=15, seed=3)
    path = tmp_path / "interactions.csv"
    data.interactions.write_csv(path)
    return path


def run_cli(
    *args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run the installed `recsys` command as a real subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [RECSYS, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def read_table(database: Path, sql: str) -> pl.DataFrame:
    import duckdb

    with duckdb.connect(str(database), read_only=True) as con:
        return con.sql(sql).pl()
