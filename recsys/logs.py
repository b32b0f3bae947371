"""Logging for jobs: structured lines (UTC time, level, run_id) on stderr and a per-run file."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from recsys.redact import redact

FORMAT = "%(asctime)s %(levelname)s run=%(run_id)s %(name)s: %(message)s"


class RunIdFilter(logging.Filter):
    run_id = "-"

    def filter(self, record: logging.LogRecord) -> bool:
        record.run_id = self.run_id
        return True


RUN_ID = RunIdFilter()
# The run log this process wrote last (None: none yet), for pointing at the traceback.
_last_run_log: Path | None = None


def last_run_log() -> Path | None:
    return _last_run_log


class RedactingFormatter(logging.Formatter):
    """Lines (tracebacks included) with credentials hidden, for the terminal and run logs."""

    converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def _formatter() -> logging.Formatter:
    return RedactingFormatter(FORMAT, datefmt="%Y-%m-%dT%H:%M:%SZ")


def configure(level: int = logging.INFO) -> None:
    """stderr handler for the whole `recsys` logger tree (idempotent); a command starts
    without a run log."""
    global _last_run_log
    _last_run_log = None
    root = logging.getLogger("recsys")
    root.setLevel(logging.DEBUG)
    for handler in list(root.handlers):
        if getattr(handler, "_recsys_stderr", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler()
    handler._recsys_stderr = True  # type: ignore[attr-defined]
    handler.setLevel(level)
    handler.setFormatter(_formatter())
    handler.addFilter(RUN_ID)
    root.addHandler(handler)


@contextmanager
def run_log(path: Path, run_id: str) -> Iterator[Path]:
    """Tag log lines with `run_id` and copy them (DEBUG and up) into `path`."""
    global _last_run_log
    path.parent.mkdir(parents=True, exist_ok=True)
    RUN_ID.run_id = run_id
    handler = logging.FileHandler(path, encoding="utf-8")
    _last_run_log = path
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(_formatter())
    handler.addFilter(RUN_ID)
    root = logging.getLogger("recsys")
    root.addHandler(handler)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        handler.close()
        RUN_ID.run_id = "-"
