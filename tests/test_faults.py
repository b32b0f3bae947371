"""Fault injection: kill -9 at random moments and after every phase, overlapping runs, bad
input, a failed gate, a full disk, a stale WAL and readers held open. After each, the served
file holds exactly one whole run (the old or the new), the ledger agrees, nothing is left over
and the next run succeeds. `-m soak` runs the long variant of the random kills."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from jobs.cli import main
from recsys.lock import is_held
from recsys.warehouse import Warehouse
from tests.conftest import FAST_CONFIG, RECSYS
from tests.faultkit import Job, Served, read_served, reader_script

SOAK_KILLS = 200


@dataclass(frozen=True)
class Kit:
    root: Path
    config: Path
    checkpoint: Path
    template: Path  # a warehouse folder holding one published run


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    """One trained checkpoint (so most runs skip training) and one published warehouse."""
    root = tmp_path_factory.mktemp("faults")
    config = root / "recsys.toml"
    config.write_text(FAST_CONFIG)
    checkpoint = root / "bpr.pt"
    train = Job(["train", "--config", str(config), "--model", "bpr", "--out", str(checkpoint)],
                root / "logs")  # fmt: skip
    assert train.wait() == 0, train.stderr
    kit = Kit(root, config, checkpoint, root / "template")
    first = score(kit, kit.template / "recs.duckdb")
    assert first.wait() == 0, first.stderr
    return kit


@pytest.fixture
def db(kit: Kit, tmp_path: Path) -> Path:
    """The served file of a fresh copy of the published warehouse."""
    shutil.copytree(kit.template, tmp_path / "wh")
    return tmp_path / "wh" / "recs.duckdb"


def score(
    kit: Kit, db: Path, *extra: str, pause: str = "", env: dict | None = None, **job_args
) -> Job:
    """Start `recsys score` (publishing the shared checkpoint) as a killable process."""
    env = {**(env or {}), **({"RECSYS_FAULT_PAUSE": pause} if pause else {})}
    args = ["score", "--checkpoint", str(kit.checkpoint), "--config", str(kit.config),
            "--database", str(db), *extra]  # fmt: skip
    return Job(args, db.parent.parent / "jobs", env, **job_args)


def checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(db: Path) -> list[str]:
    staging = db.parent / f".{db.stem}.staging"
    return sorted(p.name for p in staging.iterdir()) if staging.exists() else []


def ledger_ids(db: Path) -> set[str]:
    return {r["run_id"] for r in Warehouse(db).ledger.runs()}


def assert_settled(db: Path) -> Served:
    """After a run that finished: the served file, the ledger, `recsys runs`, the archive and
    the staging folder all agree, and nothing is left over."""
    served = read_served(db)
    warehouse = Warehouse(db)
    runs = {r["run_id"]: r for r in warehouse.ledger.runs()}
    assert [r for r in runs.values() if r.get("status") == "running"] == []
    assert warehouse.ledger.served_run_id() == served.run_id
    assert runs[served.run_id]["num_rows"] == served.num_rows
    assert [r["run_id"] for r in warehouse.history() if r["served"]] == [served.run_id]
    assert leftovers(db) == []
    published = {i for i, r in runs.items() if r.get("status") == "published"}
    assert served.run_id in warehouse.archived_runs()
    assert set(warehouse.archived_runs()) <= published, "an archive of a run never served"
    with duckdb.connect(str(db), read_only=True) as con:  # its history is the ledger's
        history = con.sql("select run_id, status from runs").fetchall()
    assert all(runs[i]["status"] == status for i, status in history), history
    return served


def assert_old_or_new(db: Path, old: Served, known: set[str]) -> tuple[Served, str]:
    """Right after a kill: the served file is one whole run, the old one or the killed one;
    the ledger says so too, or (killed between the replace and the ledger line) still says
    'running', which `recsys runs` already shows as published. Returns what is served and
    the killed run's id ('' when it died before it had one)."""
    served = read_served(db)
    warehouse = Warehouse(db)
    new = [r for r in warehouse.ledger.runs() if r["run_id"] not in known]
    assert len(new) <= 1, new
    killed = new[0]["run_id"] if new else ""
    assert served.run_id in {old.run_id, killed}, f"served {served}, old {old}, killed {killed}"
    if served.run_id == old.run_id:
        # the old run itself may still be 'running' in the ledger: killed after its replace,
        # and this run died before its recovery could record it (history shows it published)
        assert warehouse.ledger.served_run_id() == old.run_id or (
            warehouse.ledger.get(old.run_id)["status"] == "running"
        )
        assert new == [] or new[0]["status"] == "running", new
    else:
        assert new[0]["status"] in ("running", "published"), new[0]
    shown = {r["run_id"]: r for r in warehouse.history()}
    assert [i for i, r in shown.items() if r["served"]] == [served.run_id]
    assert [r for r in shown.values() if r["status"] == "running"] == []
    assert shown[served.run_id]["status"] == "published"
    return served, killed


# ------------------------------------------------------------------- 1. readers during publish


def test_reader_polling_through_publishes_sees_only_whole_runs(kit: Kit, db: Path) -> None:
    old = read_served(db)
    rows = {old.run_id: old.num_rows}
    stop, log = db.parent / "stop-reader", db.parent / "reader.log"
    with log.open("w") as out:
        reader = subprocess.Popen(reader_script(db, stop), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: log.read_text().count("\n") >= 3, what="the reader's first reads")
        for top_n in ("9", "8"):  # each run its own row count, so a mix would show
            job = score(kit, db, "--top-n", top_n)
            assert job.wait() == 0, job.stderr
            new = read_served(db)
            rows[new.run_id] = new.num_rows
        wait_until(lambda: f"ok {new.run_id} " in log.read_text(), what="the new run")
    finally:
        stop.touch()
        reader.wait(timeout=30)
    seen = [line.split() for line in log.read_text().splitlines()]
    assert [s for s in seen if s[0] != "ok"] == []
    assert all(rows[run_id] == int(num_rows) for _, run_id, num_rows in seen)
    order = [s[1] for s in seen]
    assert order == sorted(order), "the reader saw an older run after a newer one"
    assert len(seen) >= 20, f"only {len(seen)} reads"


# --------------------------------------------------------------- 2. kill -9 at random moments


def kill_at_random_moments(kit: Kit, db: Path, kills: int, seed: int) -> Counter:
    """Start runs and kill -9 each at a seeded random moment, checking the state after each
    kill; after some kills the next run is left to finish (it must succeed and clear up),
    after others it is killed too (so kills also land in a run that is recovering)."""
    rng = random.Random(seed)
    served = assert_settled(db)
    known = ledger_ids(db)
    # Calibrate on this machine now: when a run records itself (after the lock and the
    # recovery) and when it exits.
    job = score(kit, db)
    t_running = wait_for_new_run(db, known, job)
    assert job.wait() == 0, job.stderr
    t_end = time.monotonic() - job.started
    served, known = assert_settled(db), ledger_ids(db)
    landed: Counter = Counter()
    unresolved = ""  # a killed run no later run has cleared up after yet
    for i in itertools.count():  # until `kills` runs died (some finish before their moment)
        if landed.total() - landed["finished"] >= kills:
            break
        assert i < 3 * kills, f"runs keep finishing before their kill: {dict(landed)}"
        job = score(kit, db)
        if rng.random() < 0.25:  # before the lock, in the recovery, just after: from the start
            time.sleep(rng.uniform(0, t_running * 1.2))
        else:  # anywhere in the run's real work, up to and past its end
            wait_for_new_run(db, known, job)
            time.sleep(rng.uniform(0, (t_end - t_running) * 1.1))
        if job.running():
            job.kill()
        code = job.wait()
        assert code in (0, -signal.SIGKILL), f"kill {i}: exit {code}\n{job.stderr}"
        old = served
        served, killed = assert_old_or_new(db, old, known)
        landed[phase_of(code, killed, served, db)] += 1
        if unresolved and killed:  # this run got as far as recording itself: it recovered
            status = Warehouse(db).ledger.get(unresolved)["status"]
            assert status in ("published", "abandoned"), f"kill {i}: {unresolved} {status}"
            assert not [n for n in leftovers(db) if n.startswith(unresolved)]
            unresolved = ""
        unresolved = killed if code != 0 and killed else unresolved
        if code == 0:
            assert_settled(db)
            unresolved = ""
        elif rng.random() < 0.5:  # the next run must clear up after the killed one
            job = score(kit, db)
            assert job.wait() == 0, f"run after kill {i}:\n{job.stderr}"
            runs = {r["run_id"]: r for r in Warehouse(db).ledger.runs()}
            if killed:
                expected = "published" if served.run_id == killed else "abandoned"
                assert runs[killed]["status"] == expected, runs[killed]
                if expected == "published":  # its details, from the served file
                    assert runs[killed]["num_rows"] == served.num_rows
                    assert runs[killed]["model"] == "bpr"
            served, unresolved = assert_settled(db), ""
        known = ledger_ids(db)
    job = score(kit, db)
    assert job.wait() == 0, job.stderr
    assert_settled(db)
    statuses = Counter(r["status"] for r in Warehouse(db).ledger.runs())
    assert set(statuses) <= {"published", "abandoned"}, statuses
    return landed


def wait_for_new_run(db: Path, known: set[str], job: Job) -> float:
    """Seconds from the job's start until it records itself as running in the ledger."""
    ledger = Warehouse(db).ledger.path
    while True:
        text = ledger.read_text()
        if '"running"' in text and any(
            r["run_id"] not in known and r.get("status") == "running"
            for r in Warehouse(db).ledger.runs()
        ):
            return time.monotonic() - job.started
        assert job.running(), f"exited {job.process.exitcode} before running:\n{job.stderr}"
        assert time.monotonic() - job.started < 120, "never started"
        time.sleep(0.003)


def phase_of(code: int, killed: str, served: Served, db: Path) -> str:
    """Where a kill landed, from what it left behind."""
    if code == 0:
        return "finished"
    if not killed:
        return "before recording itself"
    if served.run_id == killed:
        return "served, ledger not told"
    if any(name.startswith(killed) for name in leftovers(db)):
        return "staging"
    return "running"


def test_kill_9_at_20_random_moments(kit: Kit, db: Path) -> None:
    landed = kill_at_random_moments(kit, db, kills=20, seed=20261129)
    print("kills landed:", dict(landed))
    assert landed.total() - landed["finished"] == 20
    killed_mid_run = landed["running"] + landed["staging"] + landed["served, ledger not told"]
    assert killed_mid_run >= 8, f"too few kills landed inside a run: {dict(landed)}"


@pytest.mark.soak
def test_kill_9_soak(kit: Kit, db: Path) -> None:
    seed = int(os.environ.get("RECSYS_SOAK_SEED", "7"))
    kills = int(os.environ.get("RECSYS_SOAK_KILLS", SOAK_KILLS))
    landed = kill_at_random_moments(kit, db, kills=kills, seed=seed)
    print(f"seed {seed}, kills landed:", dict(landed))
    assert landed["staging"] > 0


# ------------------------------------------------------------- 2. kill -9 right after each phase


@pytest.mark.parametrize("point", ["locked", "trained", "staged", "gated", "archived", "published"])
def test_kill_9_right_after_each_phase(kit: Kit, db: Path, point: str) -> None:
    old, known = assert_settled(db), ledger_ids(db)
    archived_before = Warehouse(db).archived_runs()
    job = score(kit, db, pause=f"{point}:60")
    job.wait_for(f"pausing 60s at '{point}'")
    job.kill()
    assert job.wait() == -signal.SIGKILL
    served, killed = assert_old_or_new(db, old, known)
    assert killed
    assert not is_held(Warehouse(db).lock_path), "the dead run still holds the lock"
    staged = [n for n in leftovers(db) if n.startswith(killed)]
    assert bool(staged) == (point in ("staged", "gated", "archived"))
    assert (killed in Warehouse(db).archived_runs()) == (point in ("archived", "published"))
    assert (served.run_id == killed) == (point == "published")

    after = score(kit, db)
    assert after.wait() == 0, after.stderr
    record = Warehouse(db).ledger.get(killed)
    assert record is not None
    if point == "published":
        assert record["status"] == "published"
        assert (record["model"], record["num_rows"]) == ("bpr", served.num_rows)
    else:
        assert record["status"] == "abandoned"
        assert "died" in record["message"]
    final = assert_settled(db)  # an abandoned run's archive entry went with it
    assert final.run_id > killed > old.run_id
    assert set(Warehouse(db).archived_runs()) - set(archived_before) == (
        {killed, final.run_id} if point == "published" else {final.run_id}
    )


@pytest.mark.parametrize(
    ("signum", "point"),
    [(signal.SIGINT, "gated"), (signal.SIGTERM, "staged"), (signal.SIGTERM, "archived"),
     (signal.SIGINT, "published"), (signal.SIGTERM, "recorded")],
    ids=["INT-gated", "TERM-staged", "TERM-archived", "INT-published", "TERM-recorded"],
)  # fmt: skip
def test_interrupt_is_recorded_as_what_it_left(
    kit: Kit, db: Path, tmp_path: Path, signum: int, point: str
) -> None:
    """Ctrl-C and SIGTERM are not kill -9. Before the publish begins the run stops: exit 130 or
    143 with its one line, recorded as failed, its staging file gone. From the publish on
    (issue 13, item 4) the signal waits: the run is served and recorded, then exits 0 with a
    warning, the run report skipped: a served file with a non-zero exit would mislead cron."""
    old, known = read_served(db), ledger_ids(db)
    resume = tmp_path / "resume"
    job = score(kit, db, pause=f"{point}:60", env={"RECSYS_FAULT_RESUME": str(resume),
                                                   "RECSYS_OUTPUT_REPORT": "true"})  # fmt: skip
    job.wait_for(f"pausing 60s at '{point}'")
    os.kill(job.pid, signum)
    name = signal.Signals(signum).name
    (run,) = [r for r in Warehouse(db).ledger.runs() if r["run_id"] not in known]
    if point in ("gated", "staged"):
        assert job.wait() == {signal.SIGINT: 130, signal.SIGTERM: 143}[signum], job.stderr
        line = {signal.SIGINT: "error: interrupted", signal.SIGTERM: "error: stopped by SIGTERM"}
        assert job.stderr.strip().splitlines()[-1] == line[signum]
        (run,) = [r for r in Warehouse(db).ledger.runs() if r["run_id"] not in known]
        reason = {signal.SIGINT: "KeyboardInterrupt", signal.SIGTERM: "stopped by SIGTERM"}
        assert (run["status"], run["message"]) == ("failed", reason[signum])
        assert read_served(db) == old
    else:
        job.wait_for(f"{name} received while publishing: the run is recorded first")
        resume.touch()
        assert job.wait() == 0, job.stderr
        warning = job.stderr.strip().splitlines()[-1]
        assert warning.endswith(f"run {run['run_id']} is published and recorded; {name} arrived "
                                "after its publish began, so the run report is skipped and the "
                                "exit is 0")  # fmt: skip
        (run,) = [r for r in Warehouse(db).ledger.runs() if r["run_id"] not in known]
        assert run["status"] == "published" and job.stdout.startswith("published run")
        assert read_served(db).run_id == run["run_id"]
        assert not list(db.parent.glob("recs.report-*.html"))
    assert leftovers(db) == []
    assert_settled(db)


def test_a_signal_during_a_rollback_waits_for_its_ledger_line(
    kit: Kit, db: Path, tmp_path: Path
) -> None:
    first = read_served(db)
    second = score(kit, db)
    assert second.wait() == 0, second.stderr
    resume = tmp_path / "resume"
    job = Job(["rollback", first.run_id, "--database", str(db)], tmp_path / "jobs",
              {"RECSYS_FAULT_PAUSE": "published:60", "RECSYS_FAULT_RESUME": str(resume)})  # fmt: skip
    job.wait_for("pausing 60s at 'published'")
    os.kill(job.pid, signal.SIGTERM)
    job.wait_for("SIGTERM received while rolling back")
    resume.touch()
    assert job.wait() == 0, job.stderr
    assert job.stdout.startswith(f"now serving run {first.run_id}")
    assert Warehouse(db).ledger.served_run_id() == first.run_id  # recorded by itself
    assert assert_settled(db).run_id == first.run_id


# ------------------------------------------------------------------ 3. overlapping runs


def test_overlapping_run_exits_75_at_once_and_ids_only_go_forward(kit: Kit, db: Path) -> None:
    env = {**os.environ, "RECSYS_FAULT_PAUSE": "locked:60"}
    holder = subprocess.Popen(
        [RECSYS, "score", "--checkpoint", str(kit.checkpoint), "--config", str(kit.config),
         "--database", str(db)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until(lambda: is_held(Warehouse(db).lock_path), what="the first run to lock")
        for command in (["nightly"], ["score", "--checkpoint", str(kit.checkpoint)]):
            started = time.monotonic()
            second = subprocess.run(
                [RECSYS, *command, "--config", str(kit.config), "--database", str(db)],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            elapsed = time.monotonic() - started
            assert second.returncode == 75, second.stderr
            last = second.stderr.strip().splitlines()[-1]
            assert last.startswith(f"error: another run holds {Warehouse(db).lock_path} (pid ")
            assert elapsed < 1.0, f"recsys {command[0]} took {elapsed:.2f}s to refuse"
    finally:
        holder.kill()
        holder.wait()

    # A run that started first but reaches the lock last still gets the later run id.
    before, resume = read_served(db), db.parent / "resume"
    slow = score(kit, db, pause="starting:60", env={"RECSYS_FAULT_RESUME": str(resume)})
    slow.wait_for("pausing 60s at 'starting'")
    fast = score(kit, db)
    assert fast.wait() == 0, fast.stderr
    fast_id = read_served(db).run_id
    resume.touch()
    assert slow.wait() == 0, slow.stderr
    slow_id = assert_settled(db).run_id
    assert before.run_id < fast_id < slow_id
    served_order = [
        e["run_id"] for e in Warehouse(db).ledger.events() if e.get("status") == "published"
    ]
    assert served_order == sorted(served_order)


# ---------------------------------------------------------- 4. kill -9 of the lock holder


def test_kill_9_of_the_lock_holder_frees_the_lock(kit: Kit, db: Path) -> None:
    known = ledger_ids(db)
    holder = subprocess.Popen(  # the real console script, killed mid-training, no pause
        [RECSYS, "nightly", "--config", str(kit.config), "--database", str(db)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(lambda: "candidate popularity" in new_run_log(db, known),
                   what="training to start", timeout=240)  # fmt: skip
        assert is_held(Warehouse(db).lock_path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert not is_held(Warehouse(db).lock_path)
    (dead,) = ledger_ids(db) - known
    listing = CliRunner().invoke(main, ["runs", "--database", str(db)])
    assert f"{dead}  abandoned" in listing.stdout  # shown as dead before anyone records it
    job = score(kit, db)
    assert job.wait() == 0, job.stderr
    record = Warehouse(db).ledger.get(dead)
    assert record["status"] == "abandoned" and record["finished_at"]
    assert_settled(db)


def new_run_log(db: Path, known: set[str]) -> str:
    """The run log of the run that started after `known` ('' before it has one)."""
    new = ledger_ids(db) - known
    return (db.parent / f"{db.stem}.logs" / f"{new.pop()}.log").read_text() if new else ""


# ------------------------------------------------------ 5. bad input and a failed quality gate


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def duckdb_source(folder: Path) -> Path:
    path = folder / "source.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create table events as select 1 as user_id, 2 as item_id")
    return path


def parquet(folder: Path, frame: dict) -> Path:
    import polars as pl

    path = folder / "x.parquet"
    pl.DataFrame(frame).write_parquet(path)
    return path


BAD_INPUTS = {
    # name: (make the --interactions value from a folder, exit code, the stderr line after "error: ")
    "missing file": (lambda d: d / "nope.csv", 66, "{d}/nope.csv: file not found"),
    "empty file": (lambda d: write(d / "x.csv", ""), 65,
                   "{d}/x.csv: file is empty (expected a header and rows)"),
    "header only": (lambda d: write(d / "x.csv", "user_id,item_id,rating\n"), 65,
                    "{d}/x.csv: no rows (expected at least one interaction)"),
    "non-numeric rating": (lambda d: write(d / "x.csv", "user_id,item_id,rating\n1,2,4\n1,3,abc\n"),
                           65, "{d}/x.csv: column 'rating' row 2: expected a number, found 'abc'"),
    "NULL user id": (lambda d: write(d / "x.csv", "user_id,item_id\n1,2\n,3\n"), 65,
                     "{d}/x.csv: column 'user_id' has 1 empty or NULL values (first at row 2); every row needs an ID"),
    "NULL item id": (lambda d: parquet(d, {"user_id": [1, 2], "item_id": [5, None]}), 65,
                     "{d}/x.parquet: column 'item_id' has 1 empty or NULL values (first at row 2); every row needs an ID"),
    "missing column": (lambda d: write(d / "x.csv", "user,item_id\n1,2\n"), 65,
                       "{d}/x.csv: column 'user_id' missing (found: user, item_id); set columns.user in recsys.toml"),
    "all-NULL column": (lambda d: write(d / "x.csv", "user_id,item_id,rating\n1,2,\n1,3,\n"), 65,
                        "{d}/x.csv: column 'rating' is entirely NULL (expected rating values)"),
    "duplicate header": (lambda d: write(d / "x.csv", "user_id,item_id,user_id\n1,2,3\n"), 65,
                         "{d}/x.csv: column 'user_id' appears twice in the header"),
    "rating out of range": (lambda d: write(d / "x.csv", "user_id,item_id,rating\n1,2,9\n"), 65,
                            "{d}/x.csv: column 'rating' row 1: rating 9 outside [1, 5]; set data.min_rating/max_rating in recsys.toml"),
    "future timestamp": (lambda d: write(d / "x.csv", "user_id,item_id,timestamp\n1,2,4102444800\n"),
                         65, "{d}/x.csv: column 'timestamp' row 1: timestamp '4102444800' is in the future"),
    "unparsable timestamp": (lambda d: write(d / "x.csv", "user_id,item_id,timestamp\n1,2,yesterday\n"),
                             65, "{d}/x.csv: column 'timestamp' row 1: expected Unix seconds or an ISO date/time, found 'yesterday'"),
    "missing DuckDB table": (lambda d: f"duckdb:{duckdb_source(d)}::clicks", 65,
                             "{d}/source.duckdb::clicks: table or view does not exist in {d}/source.duckdb"),
    "missing DuckDB file": (lambda d: f"duckdb:{d}/none.duckdb::events", 66, "{d}/none.duckdb: file not found"),
    "corrupt Parquet": (lambda d: write(d / "x.parquet", "PAR1 not really Parquet PAR1"), 65,
                        "{d}/x.parquet: not a readable Parquet file"),
}  # fmt: skip


# A column named in the config but not in the data.
MISNAMED = {"RECSYS_COLUMNS_RATING": "stars"}
BAD_INPUTS["misnamed column"] = (
    lambda d: write(d / "x.csv", "user_id,item_id,rating\n1,2,4\n"), 65,
    "{d}/x.csv: rating column 'stars' missing (found: user_id, item_id, rating); fix columns.rating in recsys.toml",
)  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_refused_and_changes_nothing(db: Path, kit: Kit, case: str) -> None:
    make, code, message = BAD_INPUTS[case]
    folder = db.parent.parent
    before, archived, known = checksum(db), Warehouse(db).archived_runs(), ledger_ids(db)
    result = CliRunner().invoke(main, ["nightly", "--config", str(kit.config), "--database",
                                       str(db), "--interactions", str(make(folder))],
                                env=MISNAMED if case == "misnamed column" else {})  # fmt: skip
    assert result.exit_code == code, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: " + message.format(d=folder)), line
    assert "Traceback" not in result.output
    assert checksum(db) == before
    assert (Warehouse(db).archived_runs(), leftovers(db)) == (archived, [])
    (failed,) = [r for r in Warehouse(db).ledger.runs() if r["run_id"] not in known]
    assert (failed["status"], failed["message"]) == ("failed", line.removeprefix("error: "))
    log = (db.parent / f"{db.stem}.logs" / f"{failed['run_id']}.log").read_text()
    assert f"run={failed['run_id']}" in log and "Traceback" in log  # the fuller story


BAD_CONFIGS = {
    "not TOML": ("[scoring\ntop_n = 3\n", "{c}: not valid TOML (Expected ']'"),
    "unknown key": ("[scoring]\ntopn = 3\n", "{c}: unknown key 'topn' in [scoring] (expected one of: device, dtype, memory_budget_bytes, similar_items_n, top_n)"),
    "unknown section": ("[scorer]\ntop_n = 3\n", "{c}: unknown section [scorer]"),
    "wrong type": ("[scoring]\ntop_n = 'ten'\n", "{c}: [scoring] top_n: expected an integer, found 'ten'"),
    "top_n 0": ("[scoring]\ntop_n = 0\n", "{c}: [scoring] top_n = 0 must be at least 1"),
    # issue 13: a NaN margin switched the gate off, inf crashed, the rest failed after loading
    "nan margin": ("[gate]\nmax_metric_drop = nan\n", "{c}: [gate] max_metric_drop: expected a finite number, found nan"),
    "inf space": ("[output]\nfree_space_factor = inf\n", "{c}: [output] free_space_factor: expected a finite number, found inf"),
    "batch 0": ("[training]\nbatch_size = 0\n", "{c}: [training] batch_size = 0 must be at least 1"),
    "device": ("[scoring]\ndevice = 'banana'\n", "{c}: [scoring] device = 'banana' unknown (expected auto, cpu, cuda, cuda:N or mps)"),
    "holdout": ("[data]\nholdout_fraction = 1.5\n", "{c}: [data] holdout_fraction = 1.5 must be in (0, 1)"),
    "threshold": ("[data]\npositive_threshold = 9\n", "[data] positive_threshold = 9 is above max_rating = 5, so no rating would count as positive"),
    "model dim": ("[model.params.bpr]\ndim = -4\n", "model 'bpr': [model.params.bpr] dim = -4 must be at least 1"),
    "model lr": ("[model.params.bpr]\nlr = 'fast'\n", "model 'bpr': [model.params.bpr] lr = 'fast': expected a number"),
    "init_std 0": ("[model.params.bpr]\ninit_std = 0\n", "model 'bpr': [model.params.bpr] init_std = 0 must be above 0"),
    "epochs 0": ("[model.params.bpr]\nepochs = 0\n", "model 'bpr': [model.params.bpr] epochs = 0 must be at least 1"),
    "unknown params": ("[model.params.svdpp]\ndim = 8\n", "[model.params.svdpp]: unknown model 'svdpp' (expected one of: "),
    "selection_k": ("[model]\nselection_k = 0\n", "{c}: [model] selection_k = 0 must be at least 1"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_is_refused_before_any_run(db: Path, case: str) -> None:
    text, message = BAD_CONFIGS[case]
    config = write(db.parent.parent / "bad.toml", text)
    before, known = checksum(db), ledger_ids(db)
    result = CliRunner().invoke(main, ["nightly", "--config", str(config), "--database", str(db),
                                       "--model", "bpr"])  # fmt: skip
    assert result.exit_code == 65, result.output
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line, no log
    assert result.stderr.startswith("error: " + message.format(c=config))
    assert (checksum(db), ledger_ids(db)) == (before, known)


@pytest.mark.parametrize("top_n", ["0", "-3"])
def test_top_n_below_one_is_a_usage_error(db: Path, kit: Kit, top_n: str) -> None:
    before, known = checksum(db), ledger_ids(db)
    result = CliRunner().invoke(main, ["score", "--checkpoint", str(kit.checkpoint), "--database",
                                       str(db), "--top-n", top_n])  # fmt: skip
    assert result.exit_code == 2
    assert f"Invalid value for '--top-n': {top_n} is not in the range x>=1" in result.stderr
    assert (checksum(db), ledger_ids(db)) == (before, known)


def test_failed_gate_publishes_nothing_and_says_why(kit: Kit, db: Path) -> None:
    old = assert_settled(db)
    before, known = checksum(db), ledger_ids(db)
    job = score(kit, db, "--top-n", "40")  # 4x the rows of the served run
    assert job.wait() == 65, job.stderr
    reason = (
        f"quality gate failed: row count {4 * old.num_rows} is 4.00x the last published run's "
        f"{old.num_rows} (allowed 1/3..3, gate.max_row_ratio); nothing was published (if the "
        "change is intended, publish it with --force-publish REASON)"
    )
    assert job.stderr.strip().splitlines()[-1] == f"error: {reason}"
    assert checksum(db) == before and leftovers(db) == []
    (failed,) = [r for r in Warehouse(db).ledger.runs() if r["run_id"] not in known]
    assert (failed["status"], failed["message"], failed["model"]) == ("failed", reason, "bpr")
    assert failed["run_id"] not in Warehouse(db).archived_runs()
    assert_settled(db)
    # The same run with the gate switched off publishes.
    job = score(kit, db, "--top-n", "40", env={"RECSYS_GATE_ENABLED": "false"})
    assert job.wait() == 0, job.stderr
    assert assert_settled(db).num_rows == 4 * old.num_rows


def test_gate_refuses_a_worse_validation_metric(kit: Kit, tmp_path: Path) -> None:
    from recsys.checkpoint import load_checkpoint

    popularity = tmp_path / "popularity.pt"
    train = Job(["train", "--config", str(kit.config), "--model", "popularity", "--out",
                 str(popularity)], tmp_path / "jobs")  # fmt: skip
    assert train.wait() == 0, train.stderr
    ndcg = {
        path: next(m.value for m in load_checkpoint(path).metrics if m.metric == "ndcg")
        for path in (kit.checkpoint, popularity)
    }
    worse, better = sorted(ndcg, key=ndcg.get)
    assert ndcg[better] > ndcg[worse]
    config = write(tmp_path / "strict.toml", FAST_CONFIG + "\n[gate]\nmax_metric_drop = 0.0\n")
    db = tmp_path / "wh" / "recs.duckdb"
    runner = CliRunner()
    for path, code in ((better, 0), (worse, 65)):
        result = runner.invoke(main, ["score", "--checkpoint", str(path), "--config", str(config),
                                      "--database", str(db)])  # fmt: skip
        assert result.exit_code == code, result.output
    assert f"validation ndcg@10 fell from {ndcg[better]:.4f} to {ndcg[worse]:.4f}" in result.stderr
    assert_settled(db)


# ---------------------------------------------------------------------- 6. not enough disk


def test_too_little_free_space_exits_73_before_writing(kit: Kit, db: Path) -> None:
    before, archived, known = checksum(db), Warehouse(db).archived_runs(), ledger_ids(db)
    job = score(kit, db, env={"RECSYS_FAULT_FREE_BYTES": str(100_000)})
    assert job.wait() == 73, job.stderr
    line = job.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {db.parent}: 0.1 MiB free, about ")
    assert line.endswith("nothing was written")
    assert checksum(db) == before
    assert (Warehouse(db).archived_runs(), leftovers(db)) == (archived, [])
    (failed,) = [r for r in Warehouse(db).ledger.runs() if r["run_id"] not in known]
    assert failed["status"] == "failed"
    assert_settled(db)


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 2.6 MiB tmpfs: room for one published run (~1.5 MiB) but not for building another."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip(
            "mounting a small tmpfs needs root; the injected free-space reading is tested above"
        )
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2600k", "tmpfs", str(mount)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_full_small_filesystem_exits_73_and_leaves_nothing(kit: Kit, small_disk: Path) -> None:
    db = small_disk / "recs.duckdb"
    first = score(kit, db)
    assert first.wait() == 0, first.stderr
    served, before = assert_settled(db), checksum(db)
    contents = sorted(p.name for p in small_disk.iterdir())
    # The free-space check, reading the real filesystem: about 1 MiB free, 3 MiB needed.
    job = score(kit, db)
    assert job.wait() == 73, job.stderr
    assert "MiB needed to build the new database" in job.stderr.strip().splitlines()[-1]
    # The disk filling up mid-write, past a check told to let it through.
    job = score(kit, db, env={"RECSYS_OUTPUT_FREE_SPACE_FACTOR": "0"})
    assert job.wait() == 73, job.stderr
    line = job.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {small_disk}/.recs.staging: the disk filled up while building")
    assert "No space left on device" in line and "Traceback" not in job.stderr
    assert checksum(db) == before and leftovers(db) == []
    assert sorted(p.name for p in small_disk.iterdir()) == contents
    assert assert_settled(db) == served
    failed = [r for r in Warehouse(db).ledger.runs() if r["status"] == "failed"]
    assert len(failed) == 2


# ------------------------------------------------------------------------- 7. a stale WAL


def crash_read_write_opener(db: Path) -> Path:
    """What someone opening `db` read-write and dying leaves beside it: `<db>.wal`."""
    code = (
        "import duckdb, os, signal, sys\n"
        "con = duckdb.connect(sys.argv[1])\n"
        "con.execute('create table scratch as select 1 as x')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(db)])
    assert done.returncode == -signal.SIGKILL
    wal = db.with_name(db.name + ".wal")
    assert wal.exists()
    return wal


def test_stale_wal_does_not_stop_a_publish_or_readers(kit: Kit, db: Path) -> None:
    wal = crash_read_write_opener(db)  # a WAL that matches the served file
    job = score(kit, db)
    assert job.wait() == 0, job.stderr
    assert not wal.exists() and len(list(db.parent.glob("recs.duckdb.wal.stale-*"))) == 1
    assert_settled(db)
    # A WAL that belongs to another file: how a crashed opener's WAL looks once the file was
    # replaced under it. Readers that do not know about it are stuck until it goes.
    shutil.copy(crash_read_write_opener(db.parent / "other.duckdb"), wal)
    with pytest.raises(duckdb.IOException, match="WAL does not match database file"):
        duckdb.connect(str(db), read_only=True)
    job = score(kit, db)
    assert job.wait() == 0, job.stderr
    assert not wal.exists() and len(list(db.parent.glob("recs.duckdb.wal.stale-*"))) == 2
    served = assert_settled(db)  # plain read-only readers again
    shutil.copy(db.parent / "other.duckdb.wal", wal)
    listing = CliRunner().invoke(main, ["runs", "--database", str(db)])  # our readers cope
    assert listing.exit_code == 0 and f"* {served.run_id}" in listing.stdout


def test_served_file_held_read_write_refuses_with_75(kit: Kit, db: Path) -> None:
    code = "import duckdb, sys, time\ncon = duckdb.connect(sys.argv[1])\nprint(flush=True)\ntime.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", code, str(db)], stdout=subprocess.PIPE)  # fmt: skip
    try:
        holder.stdout.readline()
        job = score(kit, db)
        assert job.wait() == 75, job.stderr
        line = job.stderr.strip().splitlines()[-1]
        assert line.startswith(f"error: {db}: another process has it open read-write")
    finally:
        holder.kill()
        holder.wait()
    job = score(kit, db)
    assert job.wait() == 0, job.stderr
    assert_settled(db)


# --------------------------------------------------------------- 8. a reader held open


def test_reader_held_open_keeps_its_view_and_does_not_block(kit: Kit, db: Path) -> None:
    old = read_served(db)
    code = (
        "import duckdb, sys\n"
        "con = duckdb.connect(sys.argv[1], read_only=True)\n"
        "q = 'select min(run_id), count(*) from recommendations'\n"
        "print(*con.execute(q).fetchall()[0], flush=True)\n"
        "sys.stdin.readline()\n"
        "print(*con.execute(q).fetchall()[0], flush=True)\n"
    )
    reader = subprocess.Popen([sys.executable, "-c", code, str(db)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert reader.stdout.readline().split() == [old.run_id, str(old.num_rows)]
        started = time.monotonic()
        job = score(kit, db)
        assert job.wait() == 0, job.stderr
        assert time.monotonic() - started < 60
        new = assert_settled(db)  # a fresh reader sees the new run
        assert new.run_id > old.run_id
        reader.stdin.write("\n")
        reader.stdin.flush()
        assert reader.stdout.readline().split() == [old.run_id, str(old.num_rows)]
    finally:
        reader.kill()
        reader.wait()


# ---------------------------------------------------- 9, 10. archives, rollback, file size


def test_keeps_k_archives_rolls_back_atomically_and_does_not_grow(kit: Kit, tmp_path: Path) -> None:
    config = write(tmp_path / "k3.toml", FAST_CONFIG + "\n[output]\nkeep_archives = 3\n")
    db = tmp_path / "wh" / "recs.duckdb"
    published, sizes = [], []
    for _ in range(10):
        job = Job(["score", "--checkpoint", str(kit.checkpoint), "--config", str(config),
                   "--database", str(db)], tmp_path / "jobs")  # fmt: skip
        assert job.wait() == 0, job.stderr
        published.append(assert_settled(db).run_id)
        sizes.append(db.stat().st_size)
        archive = Warehouse(db).archived_runs()
        assert archive == published[-3:]
    assert max(sizes) <= 1.1 * sizes[0], sizes
    assert (
        db.stat().st_ino == (db.parent / "recs.archive" / f"{published[-1]}.duckdb").stat().st_ino
    )

    # Roll back while a reader polls: it sees the newest run, then the previous, nothing else.
    stop, log = tmp_path / "stop", tmp_path / "reader.log"
    with log.open("w") as out:
        reader = subprocess.Popen(reader_script(db, stop), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: log.read_text().count("\n") >= 3, what="the reader's first reads")
        rollback = subprocess.run([RECSYS, "rollback", published[-2], "--config", str(config),
                                   "--database", str(db)], capture_output=True, text=True)  # fmt: skip
        assert rollback.returncode == 0, rollback.stderr
        assert rollback.stdout.strip() == (
            f"now serving run {published[-2]} from {db} (was {published[-1]})"
        )
        wait_until(lambda: f"ok {published[-2]} " in log.read_text(), what="the rolled-back run")
    finally:
        stop.touch()
        reader.wait(timeout=30)
    seen = [line.split() for line in log.read_text().splitlines()]
    assert [s for s in seen if s[0] != "ok"] == []
    order = [s[1] for s in seen]
    assert order == sorted(order, reverse=True) and set(order) == set(published[-2:])
    assert assert_settled(db).run_id == published[-2]
    listing = CliRunner().invoke(main, ["runs", "--database", str(db)])
    assert f"* {published[-2]}  published" in listing.stdout
    assert "served again by rollback" in listing.stdout

    # A pruned run cannot come back; the served file stays as it is.
    before = checksum(db)
    gone = CliRunner().invoke(main, ["rollback", published[0], "--database", str(db)])
    assert gone.exit_code == 66
    assert gone.stderr.strip() == (
        f"error: run {published[0]} is not in {db.parent / 'recs.archive'} "
        f"(archived runs: {', '.join(published[-3:])})"
    )
    assert checksum(db) == before

    # A rollback killed after its replace, before its ledger line: the next run records it.
    job = Job(["rollback", published[-3], "--database", str(db)], tmp_path / "jobs",
              {"RECSYS_FAULT_PAUSE": "published:60"})  # fmt: skip
    job.wait_for("pausing 60s at 'published'")
    job.kill()
    job.wait()
    assert read_served(db).run_id == published[-3]
    assert Warehouse(db).ledger.served_run_id() == published[-2]  # not told yet
    assert [r["run_id"] for r in Warehouse(db).history() if r["served"]] == [published[-3]]
    job = Job(["score", "--checkpoint", str(kit.checkpoint), "--config", str(config),
               "--database", str(db)], tmp_path / "jobs")  # fmt: skip
    assert job.wait() == 0, job.stderr
    events = [e for e in Warehouse(db).ledger.events() if e.get("event") == "rollback"]
    assert [e["run_id"] for e in events] == [published[-2], published[-3]]
    assert_settled(db)


def test_damaged_served_file_is_refused_and_rollback_recovers(kit: Kit, db: Path) -> None:
    served = read_served(db)
    with db.open("r+b") as fh:  # what a bad disk or a careless copy leaves
        fh.truncate(db.stat().st_size // 3)
    job = score(kit, db)
    assert job.wait() == 66, job.stderr
    line = job.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {db}: cannot read it as a published database (IO Error: ")
    assert line.endswith(f"serve an archived run again with `recsys rollback RUN_ID` "
                         f"(archived: {served.run_id})")  # fmt: skip
    rollback = CliRunner().invoke(main, ["rollback", served.run_id, "--database", str(db)])
    assert rollback.exit_code == 0, rollback.output
    assert read_served(db) == served
    job = score(kit, db)
    assert job.wait() == 0, job.stderr
    assert_settled(db)


def test_rollback_refuses_an_archive_holding_another_run(db: Path) -> None:
    served = read_served(db)
    archive = db.parent / "recs.archive"
    shutil.copy(archive / f"{served.run_id}.duckdb", archive / "29990101T000000000000Z.duckdb")
    ledger = Warehouse(db).ledger.path  # a forged first line lists it as published
    ledger.write_text(
        '{"run_id": "29990101T000000000000Z", "status": "published"}\n' + ledger.read_text()
    )
    before = checksum(db)
    result = CliRunner().invoke(main, ["rollback", "29990101T000000000000Z", "--database", str(db)])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: {archive}/29990101T000000000000Z.duckdb: holds runs ['{served.run_id}'], "
        "expected only 29990101T000000000000Z; not served"
    )
    assert checksum(db) == before


# --------------------------------------------------------------------- the ledger and logs


def test_torn_ledger_line_from_a_kill_mid_append_is_skipped(kit: Kit, db: Path) -> None:
    ledger = Warehouse(db).ledger.path
    with ledger.open("a") as fh:  # what a write cut short by kill -9 or power loss leaves
        fh.write('{"run_id": "20200101T000000000000Z", "status": "runn')
    job = score(kit, db)
    assert job.wait() == 0, job.stderr
    served = assert_settled(db)
    events = [e["status"] for e in Warehouse(db).ledger.events() if e["run_id"] == served.run_id]
    assert events == ["running", "published"]  # the first line after the torn one survived
    assert "20200101T000000000000Z" not in ledger_ids(db)


def test_runs_shows_status_model_metric_rows_and_timings(kit: Kit, db: Path) -> None:
    published = read_served(db)
    CliRunner().invoke(main, ["nightly", "--config", str(kit.config), "--database", str(db),
                              "--interactions", str(db.parent / "none.csv")])  # fmt: skip
    gated = score(kit, db, "--top-n", "40")
    assert gated.wait() == 65
    killed = score(kit, db, pause="staged:60")
    killed.wait_for("pausing 60s at 'staged'")
    killed.kill()
    killed.wait()
    missing, gated_id, killed_id = sorted(ledger_ids(db) - {published.run_id})
    result = CliRunner().invoke(main, ["runs", "--config", str(kit.config), "--database", str(db),
                                       "-v"])  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "run_id",
        "status",
        "model",
        "rows",
        "ndcg@10",
        "seconds",
        "message",
    ]
    rows = [line[2:].split() for line in lines[1:] if line[:1] in (" ", "*") and line[2:3] != " "]
    assert [r[:4] for r in rows] == [
        [killed_id, "abandoned", "-", "-"],  # dead, not yet recorded: shown as it will be
        [gated_id, "failed", "bpr", "-"],
        [missing, "failed", "-", "-"],
        [published.run_id, "published", "bpr", str(published.num_rows)],
    ]
    ndcg = Warehouse(db).ledger.get(published.run_id)["metrics"]["bpr.ndcg@10"]
    assert rows[3][4] == f"{ndcg:.4f}" and float(rows[3][5]) > 0
    assert [line[:1] for line in lines[1:] if published.run_id in line] == ["*"]
    assert " ".join(rows[2][6:]) == f"{db.parent / 'none.csv'}: file not found"
    assert " ".join(rows[1][6:]).startswith("quality gate failed: row count")
    assert " ".join(rows[0][6:]) == "the process died (the next run will record it)"
    detail = [line.strip() for line in lines if line.startswith("    ")]
    assert detail[-2].startswith("timings: load ") and ", score " in detail[-2]
    assert detail[-2].endswith("s")
    assert detail[-1].startswith("metrics: ") and f"bpr.ndcg@10 {ndcg:g}" in detail[-1]


def test_run_log_and_stderr_lines_are_structured(kit: Kit, db: Path) -> None:
    job = score(kit, db)
    assert job.wait() == 0
    run_id = read_served(db).run_id
    lines = (db.parent / f"{db.stem}.logs" / f"{run_id}.log").read_text().splitlines()
    assert lines
    for line in lines + job.stderr.splitlines():
        stamp, level, tag, *_ = line.split(" ", 3)
        assert len(stamp) == 20 and stamp.endswith("Z") and stamp[10] == "T", line
        assert level in ("DEBUG", "INFO", "WARNING", "ERROR"), line
        assert tag.startswith("run="), line
    assert any(f"run={run_id}" in line for line in lines)
    assert "\r" not in job.stderr  # no progress bar off a terminal


def test_progress_bar_only_on_a_terminal(kit: Kit, db: Path) -> None:
    main_fd, terminal_fd = os.openpty()
    seen = bytearray()

    def drain() -> None:  # keep the terminal from filling up and blocking the job
        with contextlib.suppress(OSError):
            while chunk := os.read(main_fd, 4096):
                seen.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        job = score(kit, db, stderr=Path(os.ttyname(terminal_fd)))
        assert job.wait() == 0
        wait_until(lambda: b"\r\x1b[K" in seen, what="the bar to be cleared", timeout=10)
    finally:
        os.close(terminal_fd)
        os.close(main_fd)
    assert b"\rscoring users [" in seen and b"300/300 users" in seen


# ----------------------------------------------------------------------------------- helpers


def wait_until(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except FileNotFoundError:
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)
