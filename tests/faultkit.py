"""Helpers for the fault-injection tests: `recsys` runs as killable processes, and the checks
that the served file, the ledger and the folders agree after whatever happened.

Each `recsys` process spends ~2 s of CPU importing torch before it does anything. Dozens of
kill -9 runs pay that once: they are forked from a forkserver that has torch preloaded, then
run the installed command's own entry point (`jobs.cli:main`) as a separate process that is
killed for real. Tests that need the console script itself use `Popen(RECSYS)`.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

_FORKSERVER = multiprocessing.get_context("forkserver")
# torch only: polars and pyarrow start threads on import, which a fork must not copy.
_FORKSERVER.set_forkserver_preload(["torch"])


def _main(args: list[str], cwd: str, env: dict[str, str], out: str, err: str) -> None:
    """The child: `recsys ARGS` with stdout and stderr in files; exits with its code."""
    os.chdir(cwd)
    os.environ.update(env)
    for fd, path in ((1, out), (2, err)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    from jobs.cli import main

    main(args, prog_name="recsys")


class Job:
    """One `recsys` process; `kill()` is SIGKILL, `wait()` its exit code (-9 when killed)."""

    def __init__(
        self,
        args: list[str],
        logs: Path,
        env: dict[str, str] | None = None,
        stderr: Path | None = None,
    ) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        stem = f"job-{time.monotonic_ns()}"
        self.out, self.err = logs / f"{stem}.out", stderr or logs / f"{stem}.err"
        self.args = args
        self.started = time.monotonic()
        self.process = _FORKSERVER.Process(
            target=_main, args=(args, str(logs), env or {}, str(self.out), str(self.err))
        )
        self.process.start()

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)

    def wait(self, timeout: float = 120) -> int:
        self.process.join(timeout)
        assert self.process.exitcode is not None, f"recsys {self.args} still running"
        return self.process.exitcode

    def running(self) -> bool:
        return self.process.is_alive()

    @property
    def stderr(self) -> str:
        return self.err.read_text() if self.err.exists() else ""

    @property
    def stdout(self) -> str:
        return self.out.read_text() if self.out.exists() else ""

    def wait_for(self, text: str, timeout: float = 60) -> float:
        """Seconds until `text` appears on its stderr (it is logged there as it happens)."""
        while text not in self.stderr:
            assert self.running(), f"exited {self.process.exitcode} first:\n{self.stderr}"
            assert time.monotonic() - self.started < timeout, f"no {text!r}:\n{self.stderr}"
            time.sleep(0.01)
        return time.monotonic() - self.started


@dataclass(frozen=True)
class Served:
    """What a reader of the served file sees: one run's rows, as its own runs table says."""

    run_id: str
    num_rows: int


def read_served(database: Path) -> Served:
    """Open the served file read-only as a downstream query would, and check it holds exactly
    one complete run: every row of every table from one run, as many as that run wrote."""
    with duckdb.connect(str(database), read_only=True) as con:
        rec_runs = [r[0] for r in con.sql("select distinct run_id from recommendations").fetchall()]
        num_rows = con.sql("select count(*) from recommendations").fetchall()[0][0]
        sim_runs = {r[0] for r in con.sql("select distinct run_id from similar_items").fetchall()}
        sim_runs |= {r[0] for r in con.sql("select distinct run_id from user_history").fetchall()}
        runs = con.sql(
            "select run_id, num_rows from runs where status = 'published' order by run_id"
        ).fetchall()
    assert len(rec_runs) == 1, f"{database}: recommendations from runs {rec_runs}"
    (run_id,) = rec_runs
    assert sim_runs <= {run_id}, (
        f"{database}: similar_items or user_history from runs {sim_runs}, not {run_id}"
    )
    assert runs and runs[-1][0] == run_id, f"{database}: runs table says {runs}, rows say {run_id}"
    assert runs[-1][1] == num_rows > 0, f"{database}: {num_rows} rows, runs table says {runs[-1]}"
    return Served(run_id, num_rows)


def reader_script(database: Path, stop: Path) -> list[str]:
    """argv for a separate reader process that polls the served file read-only until `stop`
    exists, printing one line per read: `ok RUN_ID ROWS` or `bad ERROR`."""
    code = f"""
import pathlib, sys, time
sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
from tests.faultkit import read_served
database, stop = pathlib.Path({str(database)!r}), pathlib.Path({str(stop)!r})
end = time.monotonic() + 300
while not stop.exists() and time.monotonic() < end:
    try:
        served = read_served(database)
        print("ok", served.run_id, served.num_rows, flush=True)
    except BaseException as exc:
        print("bad", type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "", flush=True)
    time.sleep(0.002)
"""
    return [sys.executable, "-c", code]
