"""Per-database state (issue 13, item 3): two databases in one folder share no lock, staging
folder, archive, ledger, logs or reports; a rollback takes only a run of its own ledger."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from recsys.lock import RunLock
from recsys.state import state_paths
from recsys.warehouse import Warehouse
from tests.conftest import FAST_CONFIG, invoke, read_table


def checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("state")
    config = folder / "recsys.toml"
    config.write_text(FAST_CONFIG + "\n[output]\nkeep_archives = 1\n")
    out = folder / "bpr.pt"
    result = invoke("train", "--config", str(config), "--model", "bpr", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def score(checkpoint: Path, database: Path, env: dict | None = None):
    config = checkpoint.parent / "recsys.toml"
    return invoke("score", "--checkpoint", str(checkpoint), "--config", str(config),
                   "--database", str(database), env={"RECSYS_OUTPUT_REPORT": "true", **(env or {})})  # fmt: skip


def served_run(database: Path) -> str:
    return read_table(database, "select min(run_id) as r from recommendations")["r"][0]


def test_two_databases_in_one_folder_share_nothing(checkpoint: Path, tmp_path: Path) -> None:
    recs, other = tmp_path / "recs.duckdb", tmp_path / "other.duckdb"
    for database in (recs, recs, other):
        result = score(checkpoint, database)
        assert result.returncode == 0, result.stderr
    recs_runs = [r["run_id"] for r in Warehouse(recs).ledger.runs()]
    other_runs = [r["run_id"] for r in Warehouse(other).ledger.runs()]
    assert len(recs_runs) == 2 and len(other_runs) == 1
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([
        ".other.staging", ".recs.staging", "other.archive", "other.duckdb", "other.lock",
        "other.logs", "other.report-latest.html", f"other.report-{other_runs[0]}.html",
        "other.runs.jsonl", "recs.archive", "recs.duckdb", "recs.lock", "recs.logs",
        "recs.report-latest.html", f"recs.report-{recs_runs[0]}.html",
        f"recs.report-{recs_runs[1]}.html", "recs.runs.jsonl",
    ])  # fmt: skip
    # keep_archives = 1 pruned recs's first run, and nothing of other's.
    assert Warehouse(recs).archived_runs() == recs_runs[1:]
    assert Warehouse(other).archived_runs() == other_runs
    assert sorted(p.stem for p in (tmp_path / "recs.logs").iterdir()) == recs_runs
    assert sorted(p.stem for p in (tmp_path / "other.logs").iterdir()) == other_runs

    # A run of recs.duckdb is not a rollback point of other.duckdb, even when its archived file
    # is copied into other's archive by hand: other's ledger does not list it.
    before = checksum(other)
    result = invoke("rollback", recs_runs[1], "--database", str(other))
    assert result.returncode == 66
    assert result.stderr.strip() == (
        f"error: run {recs_runs[1]} is not a published run of {other} (its ledger "
        f"{tmp_path / 'other.runs.jsonl'} does not list it); archived runs: {other_runs[0]}"
    )
    os.link(tmp_path / "recs.archive" / f"{recs_runs[1]}.duckdb",
            tmp_path / "other.archive" / f"{recs_runs[1]}.duckdb")  # fmt: skip
    result = invoke("rollback", recs_runs[1], "--database", str(other))
    assert result.returncode == 66 and "does not list it" in result.stderr
    assert checksum(other) == before and served_run(other) == other_runs[0]


def test_one_databases_lock_does_not_hold_up_another(checkpoint: Path, tmp_path: Path) -> None:
    held = RunLock(state_paths(tmp_path / "recs.duckdb").lock)
    held.acquire()
    try:
        result = score(checkpoint, tmp_path / "recs.duckdb")
        assert result.returncode == 75, result.stderr
        result = score(checkpoint, tmp_path / "other.duckdb")
        assert result.returncode == 0, result.stderr
    finally:
        held.release()


def test_archives_of_the_old_folder_wide_layout_are_adopted(
    checkpoint: Path, tmp_path: Path
) -> None:
    """Earlier versions archived every database of a folder in `archive/`: each database takes
    back the runs its ledger lists (so rollback points survive the upgrade), no others."""
    recs = tmp_path / "recs.duckdb"
    for _ in range(2):
        assert score(checkpoint, recs, {"RECSYS_OUTPUT_KEEP_ARCHIVES": "2"}).returncode == 0
    first, second = [r["run_id"] for r in Warehouse(recs).ledger.runs()]
    legacy = tmp_path / "archive"
    legacy.mkdir()
    for run_id in (first, second):
        os.replace(tmp_path / "recs.archive" / f"{run_id}.duckdb", legacy / f"{run_id}.duckdb")
    foreign = legacy / "20000101T000000000000Z.duckdb"  # another database's
    foreign.write_bytes(b"theirs")
    result = invoke("rollback", first, "--database", str(recs))
    assert result.returncode == 0, result.stderr
    assert served_run(recs) == first
    assert Warehouse(recs).archived_runs() == [first, second]
    assert sorted(p.name for p in legacy.iterdir()) == [foreign.name]
