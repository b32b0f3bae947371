"""Shared fixtures: small planted datasets on disk and a runner for the installed CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from recsys import synthetic

RECSYS = str(Path(sys.executable).parent / "recsys")
# The nightly's HTML report costs about a second of CPU per publish and the suite publishes
# about a hundred times: off for the suite; the report tests (two_runs) turn it back on.
os.environ.setdefault("RECSYS_OUTPUT_REPORT", "false")
# The suite's models train a few epochs on tiny data, near chance level, to stay fast: the
# gate's floor at popularity's metric is off for them, and tested on its own (test_gate.py,
# test_sanity.py).
os.environ.setdefault("RECSYS_GATE_MAX_BELOW_POPULARITY", "1")

# A small, fast configuration for end-to-end runs (a few seconds each on 2 cores).
FAST_CONFIG = """
[source]
demo_users = 300
demo_items = 120
demo_interactions_per_user = 15

[model]
candidates = ["popularity", "mf_bias", "bpr"]
dim = 16

[model.tuning]
budget_seconds = 0  # each candidate's defaults: tuning has tests of its own
blend = false

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


def invoke(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `recsys ARGS` in this process (Click's runner: no second torch import, so seconds
    faster than `run_cli`), answered like a subprocess run: returncode, stdout, stderr."""
    from click.testing import CliRunner

    from jobs.cli import main

    result = CliRunner().invoke(main, list(args), env=env)
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def read_table(database: Path, sql: str) -> pl.DataFrame:
    import duckdb

    with duckdb.connect(str(database), read_only=True) as con:
        return con.sql(sql).pl()


@dataclass
class TwoRuns:
    """A warehouse with two published runs, and what readers saw while the second published."""

    database: Path
    run_ids: list[str]  # oldest first
    user_id: object  # a user and an item of the first run (as their key type)
    item_id: object
    nightly_stdout: str  # the second run's
    during_publish: dict[str, subprocess.CompletedProcess]


@pytest.fixture(scope="session")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> TwoRuns:
    """Two published runs of FAST_CONFIG with candidates mf_bias and bpr (both have item
    vectors, so similar_items is filled). The second is paused between its archive link and
    its replace, a publish in progress, while `show user`, `show item` and `report` read the
    served file; their results are kept for the tests to check."""
    folder = tmp_path_factory.mktemp("two_runs")
    config = folder / "recsys.toml"
    config.write_text(FAST_CONFIG)
    database = folder / "recs.duckdb"
    env = {"RECSYS_MODEL_CANDIDATES": "mf_bias,bpr", "RECSYS_OUTPUT_REPORT": "true"}
    first = run_cli("nightly", "--config", str(config), "--database", str(database), env=env)
    assert first.returncode == 0, first.stderr
    with_ids = read_table(
        database,
        "select (select min(run_id) from recommendations) as run_id, "
        "(select min(user_id) from recommendations) as user_id, "
        "(select min(item_id) from similar_items) as item_id",
    ).row(0, named=True)
    resume, err = folder / "resume", folder / "second.err"
    with err.open("w") as stderr:
        second = subprocess.Popen(
            [RECSYS, "nightly", "--config", str(config), "--database", str(database)],
            env={
                **os.environ,
                **env,
                "RECSYS_FAULT_PAUSE": "archived:120",
                "RECSYS_FAULT_RESUME": str(resume),
            },  # fmt: skip
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        try:
            deadline = time.monotonic() + 240
            while "pausing" not in err.read_text():
                assert second.poll() is None, f"exited {second.returncode}:\n{err.read_text()}"
                assert time.monotonic() < deadline, err.read_text()
                time.sleep(0.05)
            db = str(database)
            during = {
                "user": run_cli(
                    "show", "user", str(with_ids["user_id"]), "--database", db, "--tsv"
                ),
                "item": run_cli(
                    "show", "item", str(with_ids["item_id"]), "--database", db, "--tsv"
                ),
                "report": run_cli("report", "--database", db, "--out", str(folder / "during.html")),
            }
        finally:
            resume.touch()
        stdout, _ = second.communicate(timeout=240)
    assert second.returncode == 0, err.read_text()
    second_id = read_table(database, "select min(run_id) as r from recommendations")["r"][0]
    return TwoRuns(database, [with_ids["run_id"], second_id], with_ids["user_id"],
                   with_ids["item_id"], stdout, during)  # fmt: skip
