"""End-to-end: the installed `recsys` command as a real subprocess on temp directories."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from jobs.cli import main
from tests.conftest import RECSYS, read_table, run_cli


def checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def published_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with one published run (copied by tests that need a previous result)."""
    from tests.conftest import FAST_CONFIG

    folder = tmp_path_factory.mktemp("published")
    (folder / "recsys.toml").write_text(FAST_CONFIG)
    result = run_cli(
        "nightly",
        "--config",
        str(folder / "recsys.toml"),
        "--database",
        str(folder / "recs.duckdb"),
    )
    assert result.returncode == 0, result.stderr
    return folder


def test_nightly_publishes_n_rows_for_every_user(tmp_path: Path, fast_config: Path) -> None:
    db = tmp_path / "wh" / "recs.duckdb"
    result = run_cli("nightly", "--config", str(fast_config), "--database", str(db), "--top-n", "7")
    assert result.returncode == 0, result.stderr
    assert "published run" in result.stdout
    recs = read_table(db, "select * from recommendations order by user_id, rank")
    per_user = recs.group_by("user_id").agg(
        pl.len().alias("n"), pl.col("rank").sort().alias("ranks")
    )
    assert per_user.height == 300  # every demo user has >= 7 unseen items
    assert (per_user["n"] == 7).all()
    assert all(r == list(range(1, 8)) for r in per_user["ranks"].to_list())
    assert recs["run_id"].n_unique() == 1
    # sorted by user_id, rank as stored
    stored = read_table(db, "select user_id, rank from recommendations")
    assert stored.equals(stored.sort("user_id", "rank"))
    runs = read_table(db, "select * from runs")
    assert runs.filter(pl.col("status") == "published").height == 1
    metrics = read_table(db, "select * from metrics")
    assert {"popularity", "mf_bias", "bpr"} <= set(metrics["model"])
    similar = read_table(db, "select * from similar_items")
    assert similar.filter(pl.col("item_id") == pl.col("similar_item_id")).height == 0


def test_nightly_excludes_seen_items(tmp_path: Path, fast_config: Path, planted_csv: Path) -> None:
    db = tmp_path / "recs.duckdb"
    result = run_cli("nightly", "--config", str(fast_config), "--database", str(db),
                     "--interactions", str(planted_csv), "--model", "bpr")  # fmt: skip
    assert result.returncode == 0, result.stderr
    recs = read_table(db, "select user_id, item_id from recommendations")
    seen = pl.read_csv(planted_csv).select("user_id", "item_id")
    assert recs.join(seen, on=["user_id", "item_id"], how="inner").height == 0
    assert recs["user_id"].n_unique() == seen["user_id"].n_unique()


def test_second_concurrent_run_exits_75_and_first_result_stands(
    tmp_path: Path, fast_config: Path
) -> None:
    db = tmp_path / "recs.duckdb"
    env = {**os.environ, "RECSYS_FAULT_PAUSE": "locked:3"}  # hold the lock long enough to overlap
    first = subprocess.Popen([RECSYS, "nightly", "--config", str(fast_config), "--database", str(db)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    ledger = tmp_path / "recs.runs.jsonl"
    deadline = time.monotonic() + 60
    while not (ledger.exists() and '"running"' in ledger.read_text()):
        assert time.monotonic() < deadline and first.poll() is None, "first run never started"
        time.sleep(0.05)
    started = time.monotonic()
    second = run_cli("nightly", "--config", str(fast_config), "--database", str(db))
    assert second.returncode == 75, second.stderr
    assert time.monotonic() - started < 10
    assert second.stderr.strip().splitlines()[-1].startswith("error: another run holds")
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert read_table(db, "select count(*) as n from recommendations")["n"][0] > 0


@pytest.mark.parametrize(
    ("content", "code", "message"),
    [
        (None, 66, "error: {path}: file not found"),
        (
            "user_id,item_id,rating\n1,2,x\n",
            65,
            "error: {path}: column 'rating' row 1: expected a number, found 'x'",
        ),
        (
            "user,item_id\n1,2\n",
            65,
            "error: {path}: column 'user_id' missing (found: user, item_id); set columns.user in recsys.toml",
        ),
        ("", 65, "error: {path}: file is empty (expected a header and rows)"),
        (
            "user_id,item_id\n1,2\n,3\n",
            65,
            "error: {path}: column 'user_id' has 1 empty or NULL values (first at row 2); every row needs an ID",
        ),
    ],
)
def test_bad_input_exits_cleanly_and_leaves_published_db(
    tmp_path: Path, fast_config: Path, published_dir: Path, content, code, message
) -> None:
    shutil.copytree(published_dir, tmp_path / "wh")
    db = tmp_path / "wh" / "recs.duckdb"
    before = checksum(db)
    bad = tmp_path / "bad.csv"
    if content is not None:
        bad.write_text(content)
    result = run_cli(
        "nightly", "--config", str(fast_config), "--database", str(db), "--interactions", str(bad)
    )
    assert result.returncode == code
    assert result.stderr.strip().splitlines()[-1] == message.format(path=bad)
    assert "Traceback" not in result.stderr
    assert checksum(db) == before


def test_train_then_score_from_checkpoint(tmp_path: Path, fast_config: Path) -> None:
    ckpt = tmp_path / "model.pt"
    db = tmp_path / "recs.duckdb"
    assert (
        run_cli(
            "train", "--config", str(fast_config), "--model", "bpr", "--out", str(ckpt)
        ).returncode
        == 0
    )
    result = run_cli(
        "score", "--checkpoint", str(ckpt), "--config", str(fast_config), "--database", str(db)
    )
    assert result.returncode == 0, result.stderr
    recs = read_table(db, "select * from recommendations")
    assert recs.height == 300 * 10
    listing = run_cli("runs", "--database", str(db))
    assert "published" in listing.stdout and "bpr" in listing.stdout


def test_usage_errors_exit_2() -> None:
    result = CliRunner().invoke(main, ["nightly", "--top-n", "0"])
    assert result.exit_code == 2
    assert "Invalid value for '--top-n'" in result.output


def test_unknown_config_key_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[scoring]\ntopn = 3\n")
    result = CliRunner().invoke(
        main, ["nightly", "--config", str(config), "--database", str(tmp_path / "x.duckdb")]
    )
    assert result.exit_code == 65
    assert result.output.strip() == (
        f"error: {config}: unknown key 'topn' in [scoring] (expected one of: device, dtype, "
        "memory_budget_bytes, similar_items_n, top_n)"
    )


@pytest.mark.parametrize("command", ["nightly", "train", "evaluate"])
def test_unknown_model_is_a_usage_error_before_anything_loads(
    tmp_path: Path, fast_config: Path, command: str
) -> None:
    args = [command, "--config", str(fast_config), "--model", "svdpp"]
    if command == "nightly":
        args += ["--database", str(tmp_path / "wh" / "x.duckdb")]
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: Invalid value for '--model': 'svdpp' is not one of 'bpr', ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recsys.toml"]  # no ledger, no log


@pytest.mark.parametrize("command", ["nightly", "train", "evaluate"])
def test_help_lists_every_registered_model(command: str) -> None:
    from recsys.models import REGISTRY

    result = CliRunner().invoke(main, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0
    askable = sorted(name for name, cls in REGISTRY.items() if cls.selectable)  # not "blend"
    assert askable and "blend" not in askable
    assert f"--model [{'|'.join([*askable, 'auto'])}]" in result.output


def test_every_command_has_help() -> None:
    def walk(group, prefix=()):
        for name, command in group.commands.items():
            yield (*prefix, name), command
            if hasattr(command, "commands"):
                yield from walk(command, (*prefix, name))

    for path, command in walk(main):
        assert command.help, f"recsys {' '.join(path)} has no help text"
        assert CliRunner().invoke(main, [*path, "--help"]).exit_code == 0


@pytest.mark.parametrize(
    "args", [["show", "user", "{user}"], ["show", "item", "{item}"], ["runs", "-v"]]
)
def test_output_into_a_closed_pipe_ends_quietly(two_runs, args) -> None:
    """`recsys show user 1 | head -2`: once the reader has gone, exit 0 with nothing on stderr.
    The read end is closed before the command writes, so every write meets a closed pipe."""
    args = [a.format(user=two_runs.user_id, item=two_runs.item_id) for a in args]
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([RECSYS, *args, "--database", str(two_runs.database)],
                                stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)  # fmt: skip
    finally:
        os.close(write_end)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_output_piped_into_head_shell(two_runs) -> None:
    """The issue's own pipeline, through a shell: exit status of recsys 0, first line shown."""
    db = str(two_runs.database)
    result = subprocess.run(
        ["bash", "-c", 'set -o pipefail; "$0" runs -v --database "$1" | head -1; '
         '"$0" show user "$2" --database "$1" | head -2', RECSYS, db, str(two_runs.user_id)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and lines[0].lstrip().startswith("run_id")
    assert lines[1].startswith(f"user {two_runs.user_id}:")
