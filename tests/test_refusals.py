"""What the job refuses before it works (issue 13, items 8, 10, 11 and the served-path and
DuckDB hardening): one line, the sysexits code, and nothing already published touched."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import click
import duckdb
import pytest
from click.testing import CliRunner

from jobs.cli import main
from jobs.common import handle_errors
from recsys import duck
from tests.conftest import FAST_CONFIG, invoke

# Why a write into a read-only folder fails: a read-only mount as root, permissions otherwise.
REFUSED = os.strerror(errno.EROFS if os.geteuid() == 0 else errno.EACCES)


def checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def last_line(result) -> str:
    return result.stderr.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A popularity checkpoint (fitted in no time) and a folder holding one published run."""
    root = tmp_path_factory.mktemp("refusals")
    config = root / "recsys.toml"
    config.write_text(FAST_CONFIG)
    checkpoint = root / "pop.pt"
    result = invoke(
        "train", "--config", str(config), "--model", "popularity", "--out", str(checkpoint)
    )
    assert result.returncode == 0, result.stderr
    result = invoke("score", "--checkpoint", str(checkpoint), "--config", str(config),
                     "--database", str(root / "wh" / "recs.duckdb"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    return {"config": config, "checkpoint": checkpoint, "template": root / "wh"}


@pytest.fixture
def read_only(tmp_path: Path):
    """Make a folder read-only for this process, root included: a read-only bind mount of it
    when running as root (permission bits do not stop root), else its mode."""

    def make(folder: Path) -> Path:
        if os.geteuid() != 0:
            folder.chmod(0o555)
            made.append(("chmod", folder))
            return folder
        done = subprocess.run(
            ["mount", "--bind", str(folder), str(folder)], capture_output=True, text=True
        )
        if done.returncode:
            pytest.skip(f"cannot bind-mount here ({done.stderr.strip()})")
        made.append(("mount", folder))
        done = subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return folder

    made: list[tuple[str, Path]] = []
    yield make
    for kind, folder in reversed(made):
        if kind == "chmod":
            folder.chmod(0o755)
        else:
            subprocess.run(["umount", "-l", str(folder)], check=True)


# ------------------------------------------------ item 8: cannot write -> 73, before any work


def test_read_only_served_folder_is_73_before_training(
    kit: dict, tmp_path: Path, read_only
) -> None:
    shutil.copytree(kit["template"], tmp_path / "wh")
    db = tmp_path / "wh" / "recs.duckdb"
    before, ledger = checksum(db), (tmp_path / "wh" / "recs.runs.jsonl").read_text()
    read_only(tmp_path / "wh")
    result = invoke("nightly", "--config", str(kit["config"]), "--database", str(db))
    assert result.returncode == 73, result.stderr
    assert last_line(result) == (
        f"error: {db.parent}: cannot write the served database there ({REFUSED}); nothing was done"
    )
    assert "candidate" not in result.stderr and "Traceback" not in result.stderr  # no training
    assert checksum(db) == before
    assert (tmp_path / "wh" / "recs.runs.jsonl").read_text() == ledger


def test_unwritable_log_dir_is_73_before_training(kit: dict, tmp_path: Path, read_only) -> None:
    shutil.copytree(kit["template"], tmp_path / "wh")
    db = tmp_path / "wh" / "recs.duckdb"
    (tmp_path / "logs").mkdir()
    read_only(tmp_path / "logs")
    before = checksum(db)
    result = invoke("nightly", "--config", str(kit["config"]), "--database", str(db),
                     env={"RECSYS_OUTPUT_LOG_DIR": str(tmp_path / "logs")})  # fmt: skip
    assert result.returncode == 73, result.stderr
    assert last_line(result) == (
        f"error: {tmp_path / 'logs'}: cannot write run logs there ({REFUSED}); nothing was done"
    )
    assert "candidate" not in result.stderr
    assert checksum(db) == before


@pytest.mark.parametrize("command", ["export", "predict", "train", "report"])
def test_unwritable_outputs_are_73_before_reading(
    kit: dict, tmp_path: Path, read_only, command: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    read_only(out)
    db, ckpt, config = (
        str(kit["template"] / "recs.duckdb"),
        str(kit["checkpoint"]),
        str(kit["config"]),
    )
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("user_id,item_id\n1,1\n")
    args = {
        "export": ["export", "--database", db, "--out", str(out / "parquet")],
        "predict": ["predict", "--checkpoint", ckpt, "--pairs", str(pairs), "--out", str(out / "p.parquet")],
        "train": ["train", "--config", config, "--model", "popularity", "--out", str(out / "m.pt")],
        "report": ["report", "--database", db, "--out", str(out / "r.html")],
    }[command]  # fmt: skip
    result = invoke(*args)
    assert result.returncode == 73, result.stderr
    assert last_line(result).startswith(f"error: {out}")
    assert "cannot write" in last_line(result) and "Traceback" not in result.stderr
    assert list(out.iterdir()) == []


# ---------------------------------------------- hardening: a served path the job may replace


def test_a_served_path_that_is_not_a_recsys_database_is_never_replaced(
    kit: dict, tmp_path: Path
) -> None:
    config, ckpt = str(kit["config"]), str(kit["checkpoint"])
    csv = tmp_path / "events.csv"
    csv.write_text("user_id,item_id\n1,1\n1,2\n2,1\n2,3\n3,2\n3,3\n")
    folder = tmp_path / "folder.duckdb"
    folder.mkdir()
    lite = tmp_path / "app.sqlite"
    with sqlite3.connect(lite) as con:
        con.execute("create table users(id)")
    theirs = tmp_path / "theirs.duckdb"
    with duck.connect(theirs) as con:
        con.execute("create table events as select 1 as user_id, 2 as item_id")
    cases = {
        folder: f"error: {folder}: is a directory; output.database must name a DuckDB file in it, e.g. {folder / 'recs.duckdb'}",
        csv: f"error: {csv}: is also the input (source.interactions); publishing would replace it. Set output.database to another file",
        lite: f"error: {lite}: exists and is not a DuckDB database; not replacing it (move it away or set output.database to another file)",
        theirs: f"error: {theirs}: is a DuckDB database that recsys did not publish (no runs or recommendations table); not replacing it (set output.database to another file)",
    }  # fmt: skip
    for served, message in cases.items():
        before = checksum(served) if served.is_file() else None
        # (given as the setting: Click refuses a folder as --database itself, with exit 2)
        result = invoke("score", "--checkpoint", ckpt, "--config", config,
                         env={"RECSYS_SOURCE_INTERACTIONS": str(csv),
                              "RECSYS_OUTPUT_DATABASE": str(served)})  # fmt: skip
        assert (result.returncode, last_line(result)) == (73, message), result.stderr
        assert before is None or checksum(served) == before
    # The input given as a DuckDB table is protected the same way.
    result = invoke("score", "--checkpoint", ckpt, "--config", config, "--database", str(theirs),
                     env={"RECSYS_SOURCE_INTERACTIONS": f"duckdb:{theirs}::events"})  # fmt: skip
    assert result.returncode == 73 and "is also the input (source.interactions)" in result.stderr


def test_duckdb_never_loads_or_installs_an_extension(tmp_path: Path) -> None:
    """A SQLite file given as a database: DuckDB would autoload (and download) its sqlite
    extension; every connection the job opens refuses instead."""
    lite = tmp_path / "app.sqlite"
    with sqlite3.connect(lite) as con:
        con.execute("create table users(id)")
    with pytest.raises(duckdb.Error, match="sqlite"):
        duck.connect(lite, read_only=True)
    with duck.connect() as con:
        settings = dict(con.sql("select name, value from duckdb_settings() where name like 'auto%_known_extensions'").fetchall())  # fmt: skip
    assert settings == {
        "autoinstall_known_extensions": "false",
        "autoload_known_extensions": "false",
    }


# ---------------------------------------------------- item 10: readers on a foreign file


@pytest.mark.parametrize("command", ["show", "export", "report"])
def test_readers_on_a_file_that_is_not_a_recsys_database(tmp_path: Path, command: str) -> None:
    theirs = tmp_path / "theirs.duckdb"
    with duck.connect(theirs) as con:
        con.execute("create table events as select 1 as user_id")
    text = tmp_path / "notes.duckdb"
    text.write_text("not a database\n")
    args = {"show": ["show", "user", "1"], "export": ["export", "--out", str(tmp_path / "x")],
            "report": ["report", "--out", str(tmp_path / "r.html")]}[command]  # fmt: skip
    result = invoke(*args, "--database", str(theirs))
    assert result.returncode == 65, result.stderr
    assert result.stderr.strip() == (
        f"error: {theirs}: not a recsys database (no runs or recommendations table); give the "
        "file `recsys nightly` publishes (output.database or --database)"
    )
    result = invoke(*args, "--database", str(text))
    assert result.returncode == 66, result.stderr
    assert result.stderr.strip().startswith(f"error: {text}: cannot open as DuckDB")


@click.command()
@handle_errors
def explode() -> None:
    {}["missing"]  # noqa: B018 - an unexpected error in a command that writes no run log


def test_unexpected_error_without_a_run_log_points_at_the_code_not_a_log() -> None:
    result = CliRunner().invoke(explode, [])
    assert result.exit_code == 1
    line = f"{Path(__file__).relative_to(Path(__file__).resolve().parent.parent)}"
    assert result.stderr.strip().startswith("error: unexpected KeyError: 'missing' (at ")
    assert result.stderr.strip().endswith("; no run log)") and line in result.stderr
    assert "run log)" in result.stderr and "traceback in" not in result.stderr


def test_unexpected_error_in_a_run_names_its_run_log(tmp_path: Path) -> None:
    from recsys import logs

    @click.command()
    @handle_errors
    def in_a_run() -> None:
        with logs.run_log(tmp_path / "r.log", "r1"):
            raise ZeroDivisionError("boom")

    result = CliRunner().invoke(in_a_run, [])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: unexpected ZeroDivisionError: boom (traceback in {tmp_path / 'r.log'})"
    )


# ------------------------------------- item 11: top_n beyond the catalogue, before training


def test_top_n_beyond_the_catalogue_needs_no_phantom_disk(kit: dict, tmp_path: Path) -> None:
    """300 users x 120 items: top_n 100,000 writes at most 120 rows a user. The estimate is
    min(top_n, items); the free-space reading here fits that, not 300 x 100,000 rows."""
    db = tmp_path / "wh" / "recs.duckdb"
    env = {"RECSYS_FAULT_FREE_BYTES": str(8 * 2**20), "RECSYS_SCORING_SIMILAR_ITEMS_N": "100000",
           "RECSYS_OUTPUT_FREE_SPACE_FACTOR": "1"}  # fmt: skip
    result = invoke("nightly", "--config", str(kit["config"]), "--database", str(db), "--model",
                     "popularity", "--top-n", "100000", env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_no_space_is_found_before_training(kit: dict, tmp_path: Path) -> None:
    db = tmp_path / "wh" / "recs.duckdb"
    result = invoke("nightly", "--config", str(kit["config"]), "--database", str(db),
                     env={"RECSYS_FAULT_FREE_BYTES": "1000"})  # fmt: skip
    assert result.returncode == 73, result.stderr
    assert "MiB needed to build the new database" in last_line(result)
    (failed,) = [json.loads(line) for line in (db.parent / "recs.runs.jsonl").read_text().splitlines()
                 if '"failed"' in line]  # fmt: skip
    assert "load" in failed["timings"] and "train" not in failed["timings"]


# ------------------------------------------ item 2: the demo data never replaces real lists


@pytest.mark.parametrize("command", ["nightly", "train", "evaluate"])
def test_an_empty_interactions_option_is_a_usage_error(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--interactions", ""])
    assert result.exit_code == 2
    assert "Invalid value for '--interactions': is empty" in result.output


def test_an_empty_source_variable_is_a_usage_error(tmp_path: Path) -> None:
    db = tmp_path / "recs.duckdb"
    result = invoke("nightly", "--database", str(db), env={"RECSYS_SOURCE_INTERACTIONS": ""})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: environment variable RECSYS_SOURCE_INTERACTIONS is set but empty; give a path, "
        "or unset it to leave [source] interactions as the config file has it"
    )
    assert not db.exists()


def test_demo_data_replaces_a_real_source_only_when_asked(
    kit: dict, tmp_path: Path, planted_csv: Path
) -> None:
    config, db = str(kit["config"]), tmp_path / "wh" / "recs.duckdb"
    args = ("nightly", "--config", config, "--database", str(db), "--model", "popularity")
    assert invoke(*args, "--interactions", str(planted_csv)).returncode == 0
    real = read_served_source(db)
    before = checksum(db)
    result = invoke(*args)  # the cron line's variable was unset: no source at all
    assert result.returncode == 2, result.stderr
    assert last_line(result) == (
        f"error: {db} serves run {real[0]}, built from {planted_csv}; this run has no source "
        "and would replace it with the demo data. Give --interactions (or source.interactions), "
        "or use `recsys nightly --demo` to replace it on purpose"
    )
    assert "candidate" not in result.stderr  # refused before the demo data was even made
    # A checkpoint trained on the demo data is held to the same rule.
    result = invoke("score", "--checkpoint", str(kit["checkpoint"]), "--config", config,
                     "--database", str(db))  # fmt: skip
    assert result.returncode == 2 and "replace it with the demo data" in last_line(result)
    assert checksum(db) == before
    result = invoke(*args, "--demo", "--interactions", str(planted_csv))
    assert (
        result.returncode == 2 and "--demo and --interactions exclude each other" in result.stderr
    )
    result = invoke(*args, "--demo", env={"RECSYS_SOURCE_INTERACTIONS": str(planted_csv)})
    assert result.returncode == 0, result.stderr  # on purpose: the configured source is ignored
    assert read_served_source(db)[1] == "demo data"
    assert invoke(*args).returncode == 0  # demo over demo needs no flag


def read_served_source(db: Path) -> tuple[str, str]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.sql(
            "select run_id, source from runs where status = 'published' order by run_id desc limit 1"
        ).fetchall()[0]


# ------------------------------------------------- item 7 and hardening: checkpoints


def test_checkpoints_that_cannot_be_loaded_are_refused_without_torchs_advice(
    tmp_path: Path,
) -> None:
    import torch

    class Payload:  # pickled by reference: a safe load must refuse to import and run it
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    empty, evil, partial = tmp_path / "empty.pt", tmp_path / "evil.pt", tmp_path / "partial.pt"
    empty.write_bytes(b"")
    torch.save({"format": "recsys-checkpoint/1", "x": Payload()}, evil)
    torch.save({"format": "recsys-checkpoint/1", "model": "mf"}, partial)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("user_id,item_id\n1,1\n")
    expected = {
        empty: "checkpoint file is empty (expected one `recsys train` wrote)",
        evil: "not a readable recsys checkpoint (a safe load refuses it: Trying to load "
              "unsupported GLOBAL posix.system whose module posix is blocked.)",
        partial: "incomplete recsys checkpoint (no hparams, model_args, num_users, num_items, "
                 "state_dict, users, items, seen_indptr, seen_indices, catalogue, metrics, "
                 "selection, source, num_interactions, seed)",
    }  # fmt: skip
    for checkpoint, message in expected.items():
        result = invoke("predict", "--checkpoint", str(checkpoint), "--pairs", str(pairs),
                         "--out", str(tmp_path / "p.parquet"))  # fmt: skip
        assert result.returncode == 65, result.stderr
        assert result.stderr.strip() == f"error: {checkpoint}: {message}"
        assert "weights_only" not in result.stderr
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("seed", ["-1", str(2**64)])
@pytest.mark.parametrize("command", ["nightly", "train", "evaluate"])
def test_a_seed_numpy_or_the_runs_table_cannot_take_is_a_usage_error(
    command: str, seed: str
) -> None:
    """Issue 13, item 7: refused by Click (exit 2) before any data loads, not after."""
    result = CliRunner().invoke(main, [command, "--seed", seed])
    assert result.exit_code == 2
    assert "Invalid value for '--seed'" in result.output
    assert "0<=x<=9223372036854775807" in result.output
