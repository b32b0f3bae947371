"""What the job writes for others to read (issue 13, hardening): credentials in a source spec
never reach runs.source, the ledger, logs, error lines or the report; the report shows no
server paths; every file and folder gets explicit permissions whatever the umask."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import polars as pl
import pytest

from recsys import duck, synthetic
from tests.conftest import FAST_CONFIG, RECSYS, invoke, read_table

SECRET = "hunter2"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    data = synthetic.planted(num_users=60, num_items=40, per_user=8, seed=5).interactions
    path = tmp_path / "events.duckdb"
    with duck.connect(path) as con:
        con.register("frame", data.select("user_id", "item_id").to_arrow())
        con.execute("create table events as select * from frame")
    return path


def test_credentials_in_a_source_spec_are_hidden_everywhere(tmp_path: Path, source: Path) -> None:
    spec = (f"duckdb:{source}::select user_id, item_id from events where "
            f"'password={SECRET} https://bob:{SECRET}@example.com' <> ''")  # fmt: skip
    config = tmp_path / "c.toml"
    config.write_text(FAST_CONFIG)
    db = tmp_path / "wh" / "recs.duckdb"
    result = invoke("nightly", "--config", str(config), "--database", str(db), "--model",
                     "popularity", "--interactions", spec, env={"RECSYS_OUTPUT_REPORT": "true"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    shown = read_table(db, "select source from runs")["source"][0]
    assert shown == (f"{source}::select user_id, item_id from events where "
                     "'password=*** https://bob:***@example.com' <> ''")  # fmt: skip
    failing = spec.replace("item_id from", "no_such_column, item_id from")
    failed = invoke("nightly", "--config", str(config), "--database", str(db), "--model",
                     "popularity", "--interactions", failing)  # fmt: skip
    assert failed.returncode == 65 and "query failed" in failed.stderr
    written = [*db.parent.rglob("*.jsonl"), *db.parent.rglob("*.log"), *db.parent.glob("*.html")]
    assert len(written) >= 4  # ledger, two run logs, report
    for path in written:
        assert SECRET not in path.read_text(errors="replace"), path
    for output in (result.stdout, result.stderr, failed.stdout, failed.stderr):
        assert SECRET not in output
    report = next(db.parent.glob("recs.report-2*.html")).read_text()
    assert str(tmp_path) not in report  # no server paths in a page that is mailed around
    assert "events.duckdb::select user_id" in report


def test_files_get_explicit_permissions_whatever_the_umask(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(FAST_CONFIG)
    env = {**os.environ, "RECSYS_OUTPUT_REPORT": "true"}

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([RECSYS, *args], env={**env, **extra}, capture_output=True,
                              text=True, timeout=300, preexec_fn=lambda: os.umask(0o077))  # fmt: skip

    for folder, mode, extra in ((tmp_path / "a", 0o644, {}),
                                (tmp_path / "b", 0o640, {"RECSYS_OUTPUT_FILE_MODE": "640"})):  # fmt: skip
        db = folder / "wh" / "recs.duckdb"
        result = run("nightly", "--config", str(config), "--database", str(db), "--model",
                     "popularity", **extra)  # fmt: skip
        assert result.returncode == 0, result.stderr
        result = run("export", "--database", str(db), "--out", str(folder / "export"), **extra)
        assert result.returncode == 0, result.stderr
        files = [db, *db.parent.glob("recs.*.html"), db.parent / "recs.runs.jsonl",
                 db.parent / "recs.lock", *db.parent.glob("recs.archive/*"),
                 *db.parent.glob("recs.logs/*"), *(folder / "export").glob("*.parquet")]  # fmt: skip
        folders = [db.parent / "recs.archive", db.parent / "recs.logs",
                   db.parent / ".recs.staging", folder / "export"]  # fmt: skip
        assert len(files) >= 10
        for path in files:
            assert stat.S_IMODE(path.stat().st_mode) == mode, path
        for path in folders:
            assert stat.S_IMODE(path.stat().st_mode) == mode | ((mode & 0o444) >> 2), path
    assert pl.read_parquet(tmp_path / "a" / "export" / "recommendations.parquet").height > 0
