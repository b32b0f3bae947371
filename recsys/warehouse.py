"""The served DuckDB file and the build-aside protocol that replaces it (DESIGN.md).

The job never writes the file readers open: it builds `<dir>/.staging/<run_id>.duckdb`,
checks it, hard-links it into `archive/`, then `os.replace`s it over the served file.
Readers open the served file read-only and see the old run or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import fcntl
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

from recsys.errors import AlreadyRunningError, MissingInputError, NoSpaceError, RecsysError
from recsys.ledger import Ledger

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
DDL_DIR = SQL_DIR / "ddl"
# Test hook for the free-space check (a full disk is hard to make in CI).
FREE_BYTES_ENV = "RECSYS_FAULT_FREE_BYTES"
# Rough on-disk bytes per recommendation row, for the free-space estimate.
BYTES_PER_ROW = 24
WRITE_QUEUE_DEPTH = 4


def duckdb_type(dtype: pl.DataType) -> str:
    return "BIGINT" if dtype.is_integer() else "VARCHAR"


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def open_read_only(path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open a served file read-only; a stale WAL beside it is moved aside, not fatal."""
    if not path.exists():
        raise MissingInputError(f"{path}: no published database here yet (run `recsys nightly`)")
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        wal = path.with_name(path.name + ".wal")
        if not wal.exists():
            raise MissingInputError(
                f"{path}: cannot open as DuckDB ({str(exc).splitlines()[0]})"
            ) from None
        log.warning("%s: moving aside a stale WAL left by a crashed writer", wal)
        wal.rename(wal.with_name(wal.name + ".stale"))
        con = duckdb.connect(str(path), read_only=True)
    try:
        yield con
    finally:
        con.close()


@dataclass
class Published:
    """What the served file says about the run that built it."""

    run_id: str
    runs: pl.DataFrame
    metrics: pl.DataFrame
    num_rows: int


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
        name = f"_batch_{self.table}"
        while (batch := self.queue.get()) is not None:
            if self.error is not None:
                continue  # drain so the producer never blocks
            try:
                self.con.register(name, batch)
                self.con.execute(f"insert into {self.table} by name select * from {name}")
                self.con.unregister(name)
                self.rows += batch.num_rows
            except BaseException as exc:  # surfaced to the producer
                self.error = exc


class StagedDatabase:
    """A new database being built in the staging folder; closed before the gate reads it."""

    def __init__(self, path: Path, user_type: str, item_type: str) -> None:
        self.path = path
        self.con = duckdb.connect(str(path))
        self.con.execute(f"create type user_key as {user_type}")
        self.con.execute(f"create type item_key as {item_type}")
        for ddl in sorted(DDL_DIR.glob("*.sql")):
            self.con.execute(ddl.read_text())

    def write_batches(self, table: str, batches: Iterable[pa.Table]) -> int:
        writer = ArrowWriter(self.con, table)
        try:
            for batch in batches:
                writer.put(batch)
        finally:
            rows = writer.close()
        return rows

    def insert_frame(self, table: str, frame: pl.DataFrame) -> None:
        if frame.height:
            self.write_batches(table, [frame.to_arrow()])

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        return self.con.sql(sql, params=params).fetchall()

    def close(self) -> None:
        self.con.execute("checkpoint")
        self.con.close()


class Warehouse:
    """The served file, its lock, staging folder, archive and ledger."""

    def __init__(
        self, database: str | Path, keep_archives: int = 5, free_space_factor: float = 2.0
    ) -> None:
        self.served = Path(database).resolve()
        self.dir = self.served.parent
        self.lock_path = self.dir / "nightly.lock"
        self.staging_dir = self.dir / ".staging"
        self.archive_dir = self.dir / "archive"
        self.ledger = Ledger(self.dir / f"{self.served.stem}.runs.jsonl")
        self.keep_archives = keep_archives
        self.free_space_factor = free_space_factor
        self._lock_fd: int | None = None

    @contextlib.contextmanager
    def lock(self, run_id: str) -> Iterator[Warehouse]:
        """Hold `<dir>/nightly.lock` (non-blocking); clear what killed runs left behind."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise AlreadyRunningError(
                f"another run holds {self.lock_path} ({holder}); exiting"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}, run {run_id}\n".encode(), 0)
            self._lock_fd = fd
            self.recover()
            yield self
        finally:
            self._lock_fd = None
            os.close(fd)  # closing the descriptor releases the flock

    def recover(self) -> None:
        """Under the lock: runs still 'running' are dead; their staging files are garbage."""
        dead = [r for r in self.ledger.runs() if r.get("status") == "running"]
        served = self.served_run_id() if dead else ""
        for run_id in self.ledger.mark_abandoned(served):
            log.warning("run %s was abandoned (killed before finishing)", run_id)
        if self.staging_dir.exists():
            for leftover in self.staging_dir.iterdir():
                log.info("clearing leftover %s", leftover)
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)

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
        return StagedDatabase(path, user_type, item_type)

    def discard(self, staged: StagedDatabase) -> None:
        with contextlib.suppress(duckdb.Error):
            staged.con.close()
        for path in (staged.path, staged.path.with_name(staged.path.name + ".wal")):
            path.unlink(missing_ok=True)

    def served_run_id(self) -> str:
        """The run that built the served file ('' when none or unreadable)."""
        try:
            published = self.published()
        except (RecsysError, duckdb.Error):
            return ""
        return published.run_id if published else ""

    def published(self) -> Published | None:
        """The served run's history, or None before the first publish."""
        if not self.served.exists():
            return None
        with open_read_only(self.served) as con:
            runs = con.sql("select * from runs order by run_id").pl()
            metrics = con.sql("select * from metrics").pl()
            num_rows = con.sql("select count(*) from recommendations").fetchall()[0][0]
        own = runs.filter(pl.col("status") == "published")
        run_id = own["run_id"][-1] if own.height else ""
        return Published(run_id, runs, metrics, int(num_rows))

    def publish(self, staged: StagedDatabase, run_id: str) -> None:
        """Archive the closed staged file, then atomically make it the served one."""
        fsync_path(staged.path)
        self.archive_dir.mkdir(parents=True, exist_ok=True)
        archived = self.archive_dir / f"{run_id}.duckdb"
        archived.unlink(missing_ok=True)
        try:
            os.link(staged.path, archived)
        except OSError:  # filesystems without hard links: a copy costs space, not safety
            shutil.copy2(staged.path, archived)
        fsync_path(self.archive_dir)
        self._replace(staged.path)
        self.prune_archives()

    def rollback(self, run_id: str) -> None:
        """Serve an archived run again, by the same atomic replace."""
        archived = self.archive_dir / f"{run_id}.duckdb"
        if not archived.exists():
            kept = ", ".join(self.archived_runs()) or "none"
            raise RecsysError(f"run {run_id} is not in {self.archive_dir} (archived runs: {kept})")
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        candidate = self.staging_dir / f"rollback-{run_id}.duckdb"
        candidate.unlink(missing_ok=True)
        os.link(archived, candidate)
        self._replace(candidate)

    def archived_runs(self) -> list[str]:
        if not self.archive_dir.exists():
            return []
        return sorted(p.stem for p in self.archive_dir.glob("*.duckdb"))

    def prune_archives(self) -> None:
        for run_id in self.archived_runs()[: -self.keep_archives or None]:
            (self.archive_dir / f"{run_id}.duckdb").unlink(missing_ok=True)

    def _replace(self, new_file: Path) -> None:
        wal = self.served.with_name(self.served.name + ".wal")
        if wal.exists():  # a crashed read-write opener's WAL would not match the new file
            log.warning("%s: moving aside a stale WAL before publishing", wal)
            os.replace(wal, wal.with_name(wal.name + ".stale"))
        os.replace(new_file, self.served)
        fsync_path(self.dir)
