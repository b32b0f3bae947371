"""The served DuckDB file and the build-aside protocol that replaces it (DESIGN.md).

The job never writes the file readers open: it builds `<dir>/.<name>.staging/<run_id>.duckdb`,
checks it, hard-links it into `<name>.archive/`, then `os.replace`s it over the served file.
Readers open the served file read-only and see the old run or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import shutil
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa

from recsys import duck, faults, interrupts
from recsys.errors import (
    CannotWriteError,
    DataError,
    MissingInputError,
    NoSpaceError,
    RecsysError,
    ServedBusyError,
)
from recsys.files import check_writable, fsync_path, is_duckdb_file
from recsys.ledger import Ledger, is_run_id, new_run_id
from recsys.lock import RunLock, is_held
from recsys.state import state_paths

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
DDL_DIR = SQL_DIR / "ddl"
# The example downstream queries; the look-ups and the report run them too.
QUERIES_DIR = SQL_DIR / "queries"
# Test hook for the free-space check (a full disk is hard to make in CI).
FREE_BYTES_ENV = "RECSYS_FAULT_FREE_BYTES"
# Rough on-disk bytes per recommendation row, for the free-space estimate.
BYTES_PER_ROW = 24
WRITE_QUEUE_DEPTH = 4
# Rows per INSERT: batches are gathered up to this; each INSERT has a fixed cost (~5 ms) that
# at scoring-chunk sizes (~25k rows) cost as much as the rows themselves.
INSERT_ROWS = 1 << 20
# The storage format of every file the job writes (staged, served, archived). DuckDB 2.0's own
# format is unreadable to every DuckDB 1.x (the CLI, BI tools, pipelines not yet upgraded);
# this one is read by DuckDB 1.0 and every later release (files 0-2% larger, as measured).
STORAGE_VERSION = "v1.0.0"


def duckdb_type(dtype: pl.DataType) -> str:
    return "BIGINT" if dtype.is_integer() else "VARCHAR"


@contextlib.contextmanager
def open_read_only(path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open a served file read-only; a stale WAL beside it is moved aside, not fatal."""
    if not path.exists():
        raise MissingInputError(f"{path}: no published database here yet (run `recsys nightly`)")
    try:
        con = duck.connect(path, read_only=True)
    except duckdb.Error as exc:
        wal = path.with_name(path.name + ".wal")
        if "Could not set lock" in str(exc):
            raise ServedBusyError(
                f"{path}: another process has it open read-write, which locks everyone else "
                f"out ({_first_line(exc)}); readers must open it read-only. Try again when it exits"
            ) from None
        if not wal.exists():
            raise MissingInputError(f"{path}: cannot open as DuckDB ({_first_line(exc)})") from None
        log.warning("%s: moving aside a stale WAL left by a crashed writer", wal)
        move_aside(wal)
        con = duck.connect(path, read_only=True)
    try:
        if not (has_table(con, "runs") and has_table(con, "recommendations")):
            raise DataError(
                f"{path}: not a recsys database (no runs or recommendations table); give the "
                "file `recsys nightly` publishes (output.database or --database)"
            )
        yield con
    finally:
        con.close()


def has_table(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether the open database has `table` (files published by older versions may not)."""
    found = con.execute(
        "select count(*) from information_schema.tables where table_name = ?", [table]
    ).fetchall()
    return bool(found[0][0])


def move_aside(wal: Path) -> None:
    """Rename a stale WAL out of DuckDB's way, keeping it for inspection."""
    os.replace(wal, wal.with_name(f"{wal.name}.stale-{new_run_id()}"))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _is_no_space(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, duckdb.Error) and "No space left on device" in str(exc)


@contextlib.contextmanager
def no_space_is_exit_73(where: Path) -> Iterator[None]:
    """A disk that fills up after the free-space check is still 'no space' (exit 73), not a
    crash; the caller discards what it wrote."""
    try:
        yield
    except (OSError, duckdb.Error) as exc:
        if not _is_no_space(exc):
            raise
        raise NoSpaceError(
            f"{where}: the disk filled up while building the new database ({_first_line(exc)}); "
            "nothing was published"
        ) from None


@dataclass
class Published:
    """What the served file says about the run that built it."""

    run_id: str
    runs: pl.DataFrame
    metrics: pl.DataFrame
    num_rows: int
    by_activity: pl.DataFrame | None = None  # None: published before the table existed


class ArrowWriter:
    """Appends Arrow batches to a table on a writer thread fed by a bounded queue, so
    producing the next batch (scoring) overlaps inserting this one."""

    def __init__(self, con: duckdb.DuckDBPyConnection, table: str) -> None:
        self.con, self.table = con, table
        self.rows = 0
        self.queue: queue.Queue[pa.Table | None] = queue.Queue(maxsize=WRITE_QUEUE_DEPTH)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"write-{table}", daemon=True)
        self.thread.start()

    def put(self, batch: pa.Table) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(batch)

    def close(self) -> int:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.rows

    def _run(self) -> None:
        pending: list[pa.Table] = []
        gathered = 0
        while (batch := self.queue.get()) is not None:
            if self.error is not None:
                continue  # drain so the producer never blocks
            pending.append(batch)
            gathered += batch.num_rows
            if gathered >= INSERT_ROWS:
                self._insert(pending)
                pending, gathered = [], 0
        if pending and self.error is None:
            self._insert(pending)

    def _insert(self, batches: list[pa.Table]) -> None:
        """One INSERT of the gathered batches; a failure is kept for the producer."""
        name = f"_batch_{self.table}"
        try:
            rows = pa.concat_tables(batches)
            self.con.register(name, rows)
            self.con.execute(f"insert into {self.table} by name select * from {name}")
            self.con.unregister(name)
            self.rows += rows.num_rows
        except BaseException as exc:  # surfaced to the producer
            self.error = exc


class StagedDatabase:
    """A new database being built in the staging folder; closed before the gate reads it."""

    def __init__(self, path: Path, user_type: str, item_type: str, run_id: str) -> None:
        if not is_run_id(run_id):
            raise ValueError(f"run id {run_id!r}: expected letters, digits, '.', '_' or '-'")
        self.path = path
        with no_space_is_exit_73(path.parent):
            self.con = duck.connect(path, storage_version=STORAGE_VERSION)
            self.con.execute(f"create type user_key as {user_type}")
            self.con.execute(f"create type item_key as {item_type}")
            for ddl in sorted(DDL_DIR.glob("*.sql")):
                self.con.execute(ddl.read_text().replace("{run_id}", run_id))

    def write_batches(self, table: str, batches: Iterable[pa.Table]) -> int:
        with no_space_is_exit_73(self.path.parent):
            writer = ArrowWriter(self.con, table)
            try:
                for batch in batches:
                    writer.put(batch)
            finally:
                rows = writer.close()
        return rows

    def load_parquet(self, table: str, files: Iterable[Path]) -> int:
        """Append Parquet files to `table`, one file after another and each in its own row
        order; returns the rows added."""
        rows = 0
        with no_space_is_exit_73(self.path.parent):
            for path in files:
                done = self.con.execute(
                    f"insert into {table} by name select * from read_parquet(?)", [str(path)]
                ).fetchone()
                rows += done[0] if done else 0
        return rows

    def insert_frame(self, table: str, frame: pl.DataFrame) -> None:
        if frame.height:
            self.write_batches(table, [frame.to_arrow()])

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        return self.con.sql(sql, params=params).fetchall()

    def close(self) -> None:
        with no_space_is_exit_73(self.path.parent):
            self.con.execute("checkpoint")
            self.con.close()


class Warehouse:
    """The served file, its lock, staging folder, archive and ledger (all its own:
    `recsys.state`)."""

    def __init__(
        self, database: str | Path, keep_archives: int = 5, free_space_factor: float = 2.0
    ) -> None:
        self.paths = state_paths(database)
        self.served = self.paths.served
        self.dir = self.served.parent
        self.lock_path = self.paths.lock
        self.staging_dir = self.paths.staging
        self.archive_dir = self.paths.archive
        self.ledger = Ledger(self.paths.ledger)
        self.keep_archives = keep_archives
        self.free_space_factor = free_space_factor
        self._lock: RunLock | None = None

    @contextlib.contextmanager
    def lock(self, run_id: str | None = None) -> Iterator[str]:
        """Hold the database's lock (non-blocking; exit 75 when held), clear what killed runs
        left behind, and yield the run id: a new one is made only now, under the lock, so
        that published run ids never go backwards however runs overlap."""
        held = RunLock(self.lock_path)
        held.acquire()
        try:
            self._lock = held
            run_id = run_id or new_run_id(after=self.ledger.last_run_id())
            held.note(f"run {run_id}")
            self.recover()
            yield run_id
        finally:
            self._lock = None
            held.release()

    def recover(self) -> None:
        """Under the lock, make the ledger and folders agree with the served file again after
        a kill: runs still 'running' are dead (published if the served file is theirs, else
        abandoned, and their archive copy goes: it was never served); a rollback killed after
        its replace is recorded; staging files are garbage."""
        self.adopt_legacy_archives()
        served = self.served_row()
        for run_id in self.ledger.mark_abandoned(served):
            log.warning("run %s was abandoned (killed before finishing)", run_id)
            self.paths.archived(run_id).unlink(missing_ok=True)
        if served and self.ledger.served_run_id() != served["run_id"]:
            log.warning("run %s is served but the ledger missed it (a rollback was killed after "
                        "its replace); recording it", served["run_id"])  # fmt: skip
            self.ledger.append(served["run_id"], event="rollback",
                               message="found serving (recorded by the next run)")  # fmt: skip
        if self.staging_dir.exists():
            for leftover in self.staging_dir.iterdir():
                log.info("clearing leftover %s", leftover)
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)

    def adopt_legacy_archives(self) -> None:
        """Move this database's runs out of the folder-wide `archive/` of earlier versions
        into its own archive (the runs its ledger lists; other databases' stay)."""
        legacy = self.paths.legacy_archive
        if not legacy.is_dir():
            return
        ours = {r["run_id"] for r in self.ledger.runs()}
        for path in sorted(legacy.glob("*.duckdb")):
            if path.stem in ours and not self.paths.archived(path.stem).exists():
                self.archive_dir.mkdir(parents=True, exist_ok=True)
                os.replace(path, self.paths.archived(path.stem))
                log.info("moved archived run %s into %s", path.stem, self.archive_dir)

    def record_if_served(self, run_id: str, message: str) -> bool:
        """Record `run_id` as published if the served file is its (a run interrupted after
        its replace); True when it was."""
        try:
            row = self.served_row()
        except RecsysError:
            return False
        if row is None or row["run_id"] != run_id:
            return False
        self.ledger.record_published(row, message)
        return True

    def served_row(self) -> dict | None:
        """The served run's own row of its `runs` table, or None when nothing readable is
        served (a missing or damaged file is reported when a publish needs it)."""
        try:
            published = self.published()
        except ServedBusyError:
            raise
        except (RecsysError, duckdb.Error) as exc:
            log.warning("cannot read the served run (%s)", _first_line(exc))
            return None
        if published is None or not published.run_id:
            return None
        row = published.runs.filter(pl.col("run_id") == published.run_id).row(0, named=True)
        return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}

    def check_target(self, inputs: dict[str, Path], log_dir: Path) -> None:
        """Before any work, even the lock: the served path is one this job may replace (not a
        folder, not one of its inputs, not a file recsys did not write) and every folder the
        run writes is writable. Refused with exit 73, leaving no trace (no ledger line)."""
        served = self.served
        if served.is_dir():
            raise CannotWriteError(
                f"{served}: is a directory; output.database must name a DuckDB file in it, "
                f"e.g. {served / 'recs.duckdb'}"
            )
        for role, path in inputs.items():
            if path.resolve() == served or (
                path.exists() and served.exists() and path.samefile(served)
            ):
                raise CannotWriteError(
                    f"{served}: is also the input ({role}); publishing would replace it. Set "
                    "output.database to another file"
                )
        if served.exists():
            if not is_duckdb_file(served):
                raise CannotWriteError(
                    f"{served}: exists and is not a DuckDB database; not replacing it (move it "
                    "away or set output.database to another file)"
                )
            if not self._written_by_recsys():
                raise CannotWriteError(
                    f"{served}: is a DuckDB database that recsys did not publish (no runs or "
                    "recommendations table); not replacing it (set output.database to another file)"
                )
        for folder, what in ((self.dir, "the served database"), (self.staging_dir, "the new "
                             "database"), (self.archive_dir, "archives"), (log_dir, "run logs")):  # fmt: skip
            check_writable(folder, what)

    def _written_by_recsys(self) -> bool:
        """Whether the served file has recsys's tables; a file that cannot be opened counts as
        recsys's (damaged or busy: publishing reports it, with the way out)."""
        try:
            with duck.connect(self.served, read_only=True) as con:
                return has_table(con, "runs") and has_table(con, "recommendations")
        except duckdb.Error:
            return True

    def free_bytes(self) -> int:
        injected = os.environ.get(FREE_BYTES_ENV)
        if injected is not None:
            return int(injected)
        return shutil.disk_usage(self.dir).free

    def check_free_space(self, expected_rows: int) -> None:
        """Refuse (exit 73) before writing when the new file might not fit."""
        served_size = self.served.stat().st_size if self.served.exists() else 0
        needed = int(self.free_space_factor * max(served_size, expected_rows * BYTES_PER_ROW))
        free = self.free_bytes()
        if free < needed:
            raise NoSpaceError(
                f"{self.dir}: {free / 2**20:.1f} MiB free, about {needed / 2**20:.1f} MiB needed "
                f"to build the new database (output.free_space_factor = {self.free_space_factor}); nothing was written"
            )

    def stage(self, run_id: str, user_type: str, item_type: str) -> StagedDatabase:
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        path = self.staging_dir / f"{run_id}.duckdb"
        path.unlink(missing_ok=True)
        try:
            return StagedDatabase(path, user_type, item_type, run_id)
        except BaseException:
            for leftover in (path, path.with_name(path.name + ".wal")):
                leftover.unlink(missing_ok=True)
            raise

    def discard(self, staged: StagedDatabase) -> None:
        with contextlib.suppress(duckdb.Error):
            staged.con.close()
        for path in (staged.path, staged.path.with_name(staged.path.name + ".wal")):
            path.unlink(missing_ok=True)

    def served_run_id(self) -> str:
        """The run that built the served file ('' when none or unreadable)."""
        try:
            published = self.published()
        except (RecsysError, duckdb.Error, OSError):
            return ""
        return published.run_id if published else ""

    def history(self) -> list[dict]:
        """The ledger's runs as they stand now, oldest first, the served one flagged. Written
        by nobody (a reader may not hold the lock): a run killed since the last run shows as
        the next run will record it."""
        runs = self.ledger.runs()
        served = self.served_run_id()
        alive = is_held(self.lock_path)
        for run in runs:
            run["served"] = run["run_id"] == served
            if run.get("status") == "running" and not alive:
                run["status"] = "published" if run["served"] else "abandoned"
                run["message"] = "the process died (the next run will record it)"
        return runs

    def published(self) -> Published | None:
        """The served run's history, or None before the first publish."""
        if not self.served.exists():
            return None
        try:
            with open_read_only(self.served) as con:
                runs = con.sql("select * from runs order by run_id").pl()
                metrics = con.sql("select * from metrics").pl()
                num_rows = con.sql("select count(*) from recommendations").fetchall()[0][0]
                by_activity = (
                    con.sql("select * from metrics_by_activity").pl()
                    if has_table(con, "metrics_by_activity")
                    else None
                )
        except (MissingInputError, duckdb.Error) as exc:
            # Not publishing over it: the gate has nothing to compare with, and the operator
            # should see this. Rollback does not read it, so it is the way out.
            what = (
                str(exc)
                if isinstance(exc, RecsysError)
                else f"{self.served}: cannot read it as a published database ({_first_line(exc)})"
            )
            raise MissingInputError(
                f"{what}; serve an archived run again with `recsys rollback RUN_ID` "
                f"(archived: {', '.join(self.archived_runs()) or 'none'})"
            ) from None
        own = runs.filter(pl.col("status") == "published")
        run_id = own["run_id"][-1] if own.height else ""
        return Published(run_id, runs, metrics, int(num_rows), by_activity)

    def publish(self, staged: StagedDatabase, run_id: str) -> None:
        """Archive the closed staged file, then atomically make it the served one."""
        self.archive_dir.mkdir(parents=True, exist_ok=True)
        archived = self.paths.archived(run_id)
        try:
            with no_space_is_exit_73(self.dir):
                fsync_path(staged.path)
                archived.unlink(missing_ok=True)
                try:
                    os.link(staged.path, archived)
                except OSError as exc:  # no hard links here: a copy costs space, not safety
                    if _is_no_space(exc):
                        raise
                    shutil.copy2(staged.path, archived)
                fsync_path(self.archive_dir)
            faults.point("archived")
            self._replace(staged.path)
        except BaseException:
            archived.unlink(missing_ok=True)  # only served runs are archived
            raise
        try:
            self.prune_archives()
        except OSError as exc:  # published already; the next publish prunes again
            log.warning("%s: pruning old archives failed (%s)", self.archive_dir, exc)

    def rollback(self, run_id: str) -> str:
        """Serve archived run `run_id` again by the same atomic replace; returns the run it
        replaced. Recorded in the ledger (recovery records it if killed before that)."""
        archived = self.paths.archived(run_id)
        kept = ", ".join(self.archived_runs()) or "none"
        listed = self.ledger.get(run_id)
        if listed is None or listed.get("status") != "published":
            raise MissingInputError(
                f"run {run_id} is not a published run of {self.served} (its ledger "
                f"{self.ledger.path} does not list it); archived runs: {kept}"
            )
        if not archived.exists():
            raise MissingInputError(
                f"run {run_id} is not in {self.archive_dir} (archived runs: {kept})"
            )
        with open_read_only(archived) as con:  # refuse a damaged archive before swapping it in
            found = con.sql("select distinct run_id from recommendations").fetchall()
        if [r[0] for r in found] != [run_id]:
            raise RecsysError(
                f"{archived}: holds runs {sorted(r[0] for r in found)}, expected only {run_id}; not served"
            )
        previous = self.served_run_id()
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        candidate = self.staging_dir / f"rollback-{run_id}.duckdb"
        candidate.unlink(missing_ok=True)
        os.link(archived, candidate)
        with interrupts.Held("rolling back: the rollback is recorded first") as held:
            held.hold()
            self._replace(candidate)
            faults.point("published")
            self.ledger.append(run_id, event="rollback", rolled_back_from=previous,
                               message=f"served again by rollback (replacing run {previous or 'none'})")  # fmt: skip
        if held.received:
            log.warning("run %s is served again and recorded; %s arrived meanwhile, so the exit "
                        "is 0", run_id, " and ".join(dict.fromkeys(held.received)))  # fmt: skip
        return previous

    def archived_runs(self) -> list[str]:
        if not self.archive_dir.exists():
            return []
        return sorted(p.stem for p in self.archive_dir.glob("*.duckdb"))

    def prune_archives(self) -> None:
        """Keep the newest `keep_archives` runs; served files are hard links, so the served
        run stays readable even when its archive entry goes."""
        for run_id in self.archived_runs()[: -self.keep_archives or None]:
            self.paths.archived(run_id).unlink(missing_ok=True)

    def _replace(self, new_file: Path) -> None:
        wal = self.served.with_name(self.served.name + ".wal")
        if wal.exists():  # a crashed read-write opener's WAL would not match the new file
            log.warning("%s: moving aside a stale WAL before publishing", wal)
            move_aside(wal)
        os.replace(new_file, self.served)
        # Published from here on: what follows must not turn this into a failed run.
        try:
            fsync_path(self.dir)
        except OSError as exc:
            log.warning("%s: fsync after publishing failed (%s)", self.dir, exc)


# Tables `export_parquet` writes (those the served file has), in this order.
EXPORT_TABLES = (
    "recommendations",
    "similar_items",
    "items",
    "user_history",
    "runs",
    "metrics",
    "metrics_by_activity",
)


def export_parquet(served: Path, out: Path) -> tuple[str, dict[str, int]]:
    """Write each table of the served file as `<out>/<table>.parquet` (in the table's stored
    order: recommendations sorted by user_id, rank), each under a temporary name and then
    renamed; returns the served run's id and the rows per table. One read-only connection:
    every file comes from the same run even if a publish replaces the served file meanwhile."""
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, int] = {}
    with open_read_only(served) as con:
        found = con.sql("select max(run_id) from runs where status = 'published'").fetchall()
        for table in EXPORT_TABLES:
            if not has_table(con, table):
                continue
            target = out / f"{table}.parquet"
            tmp = out / f".{table}.parquet.tmp-{os.getpid()}"
            try:
                with no_space_is_exit_73(out):
                    con.execute(f"copy (select * from {table}) to ? (format parquet)", [str(tmp)])
                    fsync_path(tmp)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
            rows[table] = con.sql(f"select count(*) from {table}").fetchall()[0][0]
    fsync_path(out)
    return found[0][0] or "", rows
