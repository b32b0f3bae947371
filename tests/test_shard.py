"""Sharded scoring: torchrun ranks and --shard processes write Parquet parts that publish as the
same tables a single process publishes; a killed rank, a truncated or duplicated part, or
parts of another checkpoint publish nothing and say which rank."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result
from polars.testing import assert_frame_equal

from jobs.cli import main
from recsys.checkpoint import load_checkpoint
from recsys.shard import TABLES, file_sha256, part_file, shard_range, write_shard
from recsys.warehouse import Warehouse
from tests.conftest import FAST_CONFIG, RECSYS, read_table, run_cli
from tests.faultkit import Job, read_served

RECS = "select user_id, rank, item_id, score, source from recommendations"
SIMILAR = "select item_id, rank, similar_item_id, score from similar_items"


@dataclass(frozen=True)
class Kit:
    root: Path
    config: Path
    checkpoint: Path
    single: Path  # the served file of a plain single-process `recsys score`
    parts: Path  # a complete folder of 3 shards (`--shard 0/3 .. 2/3`)


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    root = tmp_path_factory.mktemp("shard")
    config = root / "recsys.toml"
    config.write_text(FAST_CONFIG)
    checkpoint = root / "ials.pt"
    done = run_cli("train", "--config", str(config), "--model", "ials", "--out", str(checkpoint))
    assert done.returncode == 0, done.stderr
    single = root / "single" / "recs.duckdb"
    done = score_cli(config, checkpoint, "--database", str(single))
    assert done.returncode == 0, done.stderr
    parts = root / "parts3"
    shards = [start_shard(config, checkpoint, parts, f"{k}/3") for k in range(3)]
    for process in shards:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    return Kit(root, config, checkpoint, single, parts)


def score_cli(config: Path, checkpoint: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli("score", "--config", str(config), "--checkpoint", str(checkpoint), *args)


def start_shard(config: Path, checkpoint: Path, parts: Path, shard: str) -> subprocess.Popen:
    return subprocess.Popen(
        [RECSYS, "score", "--config", str(config), "--checkpoint", str(checkpoint),
         "--parts", str(parts), "--shard", shard],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def torchrun(kit: Kit, parts: Path, database: Path, log: Path, env: dict | None = None):
    """`torchrun --nproc-per-node 2` (gloo on CPU) running `recsys score --parts`; its output
    (every rank's) goes to `log`."""
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
             "--master-port", str(port), "--no-python", RECSYS, "score", "--config",
             str(kit.config), "--checkpoint", str(kit.checkpoint), "--parts", str(parts),
             "--database", str(database)],
            env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def publish(kit: Kit, parts: Path, database: Path) -> Result:
    """`recsys publish` in this process (the suite's real subprocess runs are the ranks)."""
    return CliRunner().invoke(main, ["publish", "--config", str(kit.config), "--checkpoint",
                                     str(kit.checkpoint), "--parts", str(parts),
                                     "--database", str(database)])  # fmt: skip


def assert_same_tables(database: Path, single: Path) -> None:
    """The same rows in the same stored order (user_id, rank), the same items at each rank,
    scores equal up to float rounding."""
    for sql in (RECS, SIMILAR):
        got, want = read_table(database, sql), read_table(single, sql)
        assert got.height == want.height > 0
        assert_frame_equal(got.drop("score"), want.drop("score"))
        assert_frame_equal(got.select("score"), want.select("score"), abs_tol=1e-6)
    stored = read_table(database, "select user_id, rank from recommendations")
    assert stored.equals(stored.sort("user_id", "rank"))


def checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def served_copy(kit: Kit, tmp_path: Path) -> Path:
    """A warehouse serving the single-process run, to publish parts over."""
    shutil.copytree(kit.single.parent, tmp_path / "wh")
    return tmp_path / "wh" / "recs.duckdb"


def last_run(database: Path) -> dict:
    return Warehouse(database).ledger.runs()[-1]


def refused(kit: Kit, parts: Path, database: Path) -> str:
    """Publish `parts` in-process; it must refuse (exit 65) and change nothing. Its line."""
    before = checksum(database)
    result = publish(kit, parts, database)
    assert result.exit_code == 65, result.output
    assert checksum(database) == before
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {parts}: parts refused, nothing was published: "), line
    assert last_run(database)["message"] == line.removeprefix("error: ")
    return line


# ------------------------------------------------------------------------------- slices


@pytest.mark.parametrize("num", [0, 1, 7, 300, 1001])
@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
def test_shard_ranges_are_contiguous_balanced_and_cover_everything(num, world_size) -> None:
    ranges = [shard_range(num, rank, world_size) for rank in range(world_size)]
    assert ranges[0][0] == 0 and ranges[-1][1] == num
    assert all(ranges[r][1] == ranges[r + 1][0] for r in range(world_size - 1))
    sizes = [stop - start for start, stop in ranges]
    assert max(sizes) - min(sizes) <= 1


# ------------------------------------------------------------------- equal to one process


def test_torchrun_two_ranks_publish_the_single_process_tables(kit: Kit, tmp_path: Path) -> None:
    database, parts = tmp_path / "wh" / "recs.duckdb", tmp_path / "parts"
    log = tmp_path / "torchrun.log"
    assert torchrun(kit, parts, database, log).wait(timeout=180) == 0, log.read_text()
    assert "rank 0 of 2 (local 0 of 2): cpu, backend gloo, 1 CPU thread(s)" in log.read_text()
    assert f"from 2 part(s) in {parts}" in log.read_text()
    assert_same_tables(database, kit.single)
    manifests = sorted(p.name for p in parts.glob("manifest-*.json"))
    assert manifests == ["manifest-00000-of-00002.json", "manifest-00001-of-00002.json"]
    run = last_run(database)
    assert (run["status"], run["num_rows"]) == ("published", 3000)
    assert read_served(database).run_id == run["run_id"]


def test_shards_then_publish_equal_the_single_process(kit: Kit, tmp_path: Path) -> None:
    database = tmp_path / "wh" / "recs.duckdb"
    done = publish(kit, kit.parts, database)
    assert done.exit_code == 0, done.output
    assert f"from {kit.parts} -> {database}" in done.stdout
    assert_same_tables(database, kit.single)
    for rank in range(3):  # each rank's manifest: its slice, whole, from this checkpoint
        manifest = json.loads((kit.parts / f"manifest-0000{rank}-of-00003.json").read_text())
        recs = manifest["tables"]["recommendations"]
        assert recs["index_range"] == list(shard_range(300, rank, 3))
        assert (recs["rows"], recs["users"]) == (1000, 100)
        assert recs["sha256"] == file_sha256(kit.parts / recs["file"])
        assert manifest["checkpoint"]["fingerprint"] == "sha256:" + file_sha256(kit.checkpoint)


def test_parts_without_torchrun_are_world_size_one(kit: Kit, tmp_path: Path) -> None:
    database, parts = tmp_path / "wh" / "recs.duckdb", tmp_path / "parts"
    result = CliRunner().invoke(main, ["score", "--config", str(kit.config), "--checkpoint",
                                       str(kit.checkpoint), "--parts", str(parts),
                                       "--database", str(database)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in parts.glob("manifest-*")) == ["manifest-00000-of-00001.json"]
    assert_same_tables(database, kit.single)


def test_a_rank_with_an_empty_slice_writes_empty_parts(kit: Kit, tmp_path: Path) -> None:
    """More ranks than users: some slices are empty, and still leave valid parts."""
    from recsys.config import ScoringConfig
    from recsys.score import resolve_device

    trained = load_checkpoint(kit.checkpoint)
    manifest = write_shard(trained, "sha256:x", tmp_path, 0, 400, ScoringConfig(top_n=5),
                           resolve_device("cpu"))  # fmt: skip
    assert manifest["tables"]["recommendations"]["rows"] == 0
    schema = pq.read_schema(tmp_path / part_file("recommendations", 0, 400))
    assert schema.names == ["user_id", "rank", "item_id", "score", "source"]


# ----------------------------------------------------------------------------- failures


def test_killed_shard_publishes_nothing_then_rerunning_it_publishes(
    kit: Kit, tmp_path: Path
) -> None:
    database, parts = served_copy(kit, tmp_path), tmp_path / "parts"
    args = ["score", "--config", str(kit.config), "--checkpoint", str(kit.checkpoint),
            "--parts", str(parts)]  # fmt: skip
    assert CliRunner().invoke(main, [*args, "--shard", "0/2"]).exit_code == 0
    killed = Job([*args, "--shard", "1/2"], tmp_path / "jobs",
                 env={"RECSYS_FAULT_PAUSE": "scoring:60"})  # fmt: skip
    killed.wait_for("pausing 60s at 'scoring'")
    assert list((parts / "recommendations").glob(".part-00001-of-00002.parquet.tmp-*"))
    killed.kill()
    assert killed.wait() == -signal.SIGKILL

    line = refused(kit, parts, database)  # the served file as it was, the ledger says why
    assert line.startswith(f"error: {parts}: parts refused, nothing was published: rank 1 of 2 "
                           "missing (no manifest: not run, still running or killed) (re-run a "
                           f"rank K with `recsys score --checkpoint {kit.checkpoint} --parts "
                           f"{parts} --shard K/2`)")  # fmt: skip
    assert last_run(database)["status"] == "failed"
    assert list((database.parent / f".{database.stem}.staging").glob("*")) == []

    again = Job([*args, "--shard", "1/2"], tmp_path / "jobs")  # idempotent: replaces its own
    assert again.wait() == 0, again.stderr
    assert not list((parts / "recommendations").glob(".*tmp*")), "the re-run left a temp file"
    done = publish(kit, parts, database)
    assert done.exit_code == 0, done.output
    assert_same_tables(database, kit.single)
    assert last_run(database)["status"] == "published"


def test_torchrun_rank_killed_publishes_nothing_and_the_ledger_says_why(
    kit: Kit, tmp_path: Path
) -> None:
    database = served_copy(kit, tmp_path)
    before, parts = checksum(database), tmp_path / "parts"
    log = tmp_path / "torchrun.log"
    env = {"RECSYS_FAULT_PAUSE": "scoring:60", "RECSYS_FAULT_RANK": "1"}
    job = torchrun(kit, parts, database, log, env)
    deadline = time.monotonic() + 120
    # rank 1 paused mid-part, rank 0 done and waiting at the barrier
    while "(pid " not in log.read_text() or not (parts / "manifest-00000-of-00002.json").exists():
        assert job.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.01)
    pid = int(log.read_text().split("pausing 60s at 'scoring' (pid ")[1].split(")")[0])
    os.kill(pid, signal.SIGKILL)
    assert job.wait(timeout=120) != 0, log.read_text()
    assert checksum(database) == before
    run = last_run(database)
    assert run["status"] == "failed", run
    assert run["message"].startswith(("rank 0: lost the other ranks at the barrier", "stopped by SIGTERM")), run  # fmt: skip
    assert run["message"].endswith("rank 1 of 2 unfinished"), run

    shard = CliRunner().invoke(main, ["score", "--config", str(kit.config), "--checkpoint",
                                      str(kit.checkpoint), "--parts", str(parts), "--shard", "1/2"])  # fmt: skip
    assert shard.exit_code == 0, shard.output
    done = publish(kit, parts, database)
    assert done.exit_code == 0, done.output
    assert_same_tables(database, kit.single)
    assert last_run(database)["status"] == "published"


@pytest.fixture
def broken(kit: Kit, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the 3-shard parts folder to damage, and a served file to publish over."""
    shutil.copytree(kit.parts, tmp_path / "parts")
    return tmp_path / "parts", served_copy(kit, tmp_path)


def test_truncated_part_is_refused(kit: Kit, broken: tuple[Path, Path]) -> None:
    parts, database = broken
    part = parts / part_file("recommendations", 1, 3)
    size = part.stat().st_size
    with part.open("r+b") as fh:
        fh.truncate(size // 2)
    line = refused(kit, parts, database)
    assert (f"rank 1: recommendations/part-00001-of-00003.parquet is {size // 2} bytes, its "
            f"manifest says {size} (truncated or overwritten)") in line  # fmt: skip


def test_overwritten_part_is_refused(kit: Kit, broken: tuple[Path, Path]) -> None:
    parts, database = broken
    part = parts / part_file("similar_items", 2, 3)
    data = bytearray(part.read_bytes())
    data[100] ^= 0xFF  # same size, other bytes
    part.write_bytes(bytes(data))
    line = refused(kit, parts, database)
    assert ("rank 2: similar_items/part-00002-of-00003.parquet does not match its manifest's "
            "sha256 (corrupt or overwritten)") in line  # fmt: skip


def test_duplicated_part_file_is_refused(kit: Kit, broken: tuple[Path, Path]) -> None:
    parts, database = broken
    shutil.copy(parts / part_file("recommendations", 0, 3),
                parts / "recommendations" / "part-00000-of-00003 (copy).parquet")  # fmt: skip
    line = refused(kit, parts, database)
    assert ("recommendations/part-00000-of-00003 (copy).parquet: not in any manifest (a "
            f"duplicate or a part of another run?); move it out of {parts}") in line  # fmt: skip


def test_part_holding_another_ranks_users_is_refused(kit: Kit, broken: tuple[Path, Path]) -> None:
    """A part whose manifest agrees with it (as a faulty writer would leave it) but that holds
    users of rank 0 as well as its own: users twice across parts."""
    parts, database = broken
    part = parts / part_file("recommendations", 1, 3)
    both = pl.concat([pl.read_parquet(parts / part_file("recommendations", 0, 3)),
                      pl.read_parquet(part)])  # fmt: skip
    both.write_parquet(part)
    manifest_file = parts / "manifest-00001-of-00003.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["tables"]["recommendations"].update(
        rows=both.height, bytes=part.stat().st_size, sha256=file_sha256(part)
    )
    manifest_file.write_text(json.dumps(manifest))
    ids = load_checkpoint(kit.checkpoint).users.ids
    line = refused(kit, parts, database)
    assert (f"rank 1: recommendations/part-00001-of-00003.parquet has user_id {ids[0]}..{ids[199]}, "
            f"outside its slice {ids[100]}..{ids[199]} (a user_id twice?)") in line  # fmt: skip


def test_missing_manifest_and_other_checkpoint_name_their_ranks(
    kit: Kit, broken: tuple[Path, Path]
) -> None:
    parts, database = broken
    (parts / "manifest-00002-of-00003.json").unlink()
    (parts / "error-00002-of-00003.json").write_text(
        json.dumps({"rank": 2, "error": "/x: 0.1 MiB free, about 3 MiB needed"})
    )
    manifest_file = parts / "manifest-00000-of-00003.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["checkpoint"]["fingerprint"] = "sha256:" + "0" * 64
    manifest_file.write_text(json.dumps(manifest))
    line = refused(kit, parts, database)
    assert ("rank 2 of 3 missing (no manifest: it failed: /x: 0.1 MiB free, about 3 MiB needed)"
            in line)  # fmt: skip
    assert (
        "rank 0: scored with another checkpoint (sha256:000000000000…, this one is sha256:" in line
    )
    assert "not in any manifest" not in line  # rank 2's parts are there, but rank 2 is missing


def test_parts_of_two_world_sizes_are_refused(kit: Kit, broken: tuple[Path, Path]) -> None:
    parts, database = broken
    shutil.copy(parts / "manifest-00000-of-00003.json", parts / "manifest-00000-of-00002.json")
    line = refused(kit, parts, database)
    assert line == (f"error: {parts}: parts refused, nothing was published: manifests of "
                    "different runs (world sizes 2, 3); use one folder per run")  # fmt: skip


# ---------------------------------------------------------------------------- export, CLI


def test_export_writes_every_table_as_parquet(kit: Kit, tmp_path: Path) -> None:
    out = tmp_path / "export"
    result = CliRunner().invoke(main, ["export", "--database", str(kit.single), "--out", str(out)])
    assert result.exit_code == 0, result.output
    run_id = read_served(kit.single).run_id
    assert result.stdout.startswith(f"exported run {run_id} to {out}: recommendations 3000, ")
    with duckdb.connect() as con:  # both read by DuckDB: the same types (time zones too)
        for table in (*TABLES, "items", "user_history", "runs", "metrics", "metrics_by_activity"):
            exported = con.sql(f"select * from '{out / table}.parquet'").pl()
            # an ENUM column (recommendations.source) is a plain string column in Parquet
            served = read_table(kit.single, f"select * from {table}")
            assert_frame_equal(
                exported, served.with_columns(pl.col(pl.Categorical).cast(pl.String))
            )
    recs = pl.read_parquet(out / "recommendations.parquet")
    assert recs.select("user_id", "rank").equals(
        recs.sort("user_id", "rank").select("user_id", "rank")
    )
    assert recs["run_id"].unique().to_list() == [run_id]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shard", "0/2"], "--shard needs --parts DIR (the folder the shards write to)"),
        (["--parts", "p", "--shard", "2/2"],
         "Invalid value for '--shard': expected K/N with 0 <= K < N (e.g. 0/4), found '2/2'"),
        (["--parts", "p", "--shard", "x"],
         "Invalid value for '--shard': expected K/N with 0 <= K < N (e.g. 0/4), found 'x'"),
    ],
)  # fmt: skip
def test_shard_option_errors_are_usage_errors(kit: Kit, args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["score", "--checkpoint", str(kit.checkpoint), *args])
    assert result.exit_code == 2
    assert message in result.stderr


def test_duckdb_reads_the_parts_directly(kit: Kit) -> None:
    """The parts are plain Parquet: downstream tools can read a run before it is published."""
    with duckdb.connect() as con:
        rows = con.execute(
            "select count(*), count(distinct user_id) from read_parquet(?)",
            [str(kit.parts / "recommendations" / "*.parquet")],
        ).fetchall()
    assert rows == [(3000, 300)]
