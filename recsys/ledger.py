"""The run ledger: an append-only JSON-lines file beside the served database.

Each line is one event about one run; a run's state is its events merged in order. Appends
are fsynced, so a run killed at any moment leaves at worst one torn last line, which readers
skip and the next append closes off.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STATUSES = ("running", "published", "failed", "abandoned")
# What a run id may hold: it names files and is written into the DDL of a run's tables.
RUN_ID = re.compile(r"[A-Za-z0-9._-]+")
RUN_ID_FORMAT = "%Y%m%dT%H%M%S%fZ"


def is_run_id(value: object) -> bool:
    return isinstance(value, str) and RUN_ID.fullmatch(value) is not None


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def new_run_id(after: str = "") -> str:
    """Sortable by start time, unique per microsecond: 20261129T030635123456Z; later than
    `after` even when the clock was stepped back, so published run ids only go forwards."""
    now = datetime.now(UTC)
    time.sleep(1e-6)  # two ids in one process never share a microsecond
    if after:
        try:
            floor = datetime.strptime(after, RUN_ID_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            floor = None  # a hand-made id in the ledger: order by the clock alone
        if floor is not None and now <= floor:
            now = floor + timedelta(microseconds=1)
    return now.strftime(RUN_ID_FORMAT)


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, run_id: str, **fields: Any) -> None:
        line = json.dumps({"run_id": run_id, "at": now_iso(), **fields}, default=str) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            # A run killed mid-append leaves a line without its newline; glued to it, this
            # event would be unreadable too, so start a fresh line.
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = "\n" + line
            os.write(fd, line.encode())  # one write: a kill cannot interleave two events
            os.fsync(fd)
        finally:
            os.close(fd)

    def events(self) -> list[dict[str, Any]]:
        """Every readable event, in the order written."""
        if not self.path.exists():
            return []
        events = []
        lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        for number, line in enumerate(lines, 1):
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn line from a killed run
            if not isinstance(event, dict) or not is_run_id(event.get("run_id")):
                # Hand-edited or foreign: one such line must not stop every later run.
                log.warning(
                    "%s line %d: not a run event (no text run_id); ignored", self.path, number
                )
                continue
            events.append(event)
        return events

    def runs(self) -> list[dict[str, Any]]:
        """Every run's merged state, oldest first."""
        merged: dict[str, dict[str, Any]] = {}
        for event in self.events():
            at = event.pop("at", None)
            run = merged.setdefault(event["run_id"], {"run_id": event["run_id"]})
            if event.get("event") == "rollback":
                run["rolled_back_at"] = at  # served again; what the run was stays as it was
                continue
            run.update(event)
        return sorted(merged.values(), key=lambda r: r["run_id"])

    def get(self, run_id: str) -> dict[str, Any] | None:
        return next((r for r in self.runs() if r["run_id"] == run_id), None)

    def last_run_id(self) -> str:
        return max((e["run_id"] for e in self.events()), default="")

    def served_run_id(self) -> str:
        """The run the ledger says is served: the last one published or rolled back to."""
        served = ""
        for event in self.events():
            if event.get("status") == "published" or event.get("event") == "rollback":
                served = event["run_id"]
        return served

    def mark_abandoned(self, served: dict[str, Any] | None = None) -> list[str]:
        """Runs still 'running' when the lock is free were killed: mark them abandoned, or
        published when the served file is theirs (killed after the replace, before the
        ledger heard of it); `served` is that file's own row for its run."""
        served_id = served["run_id"] if served else ""
        dead = [r["run_id"] for r in self.runs() if r.get("status") == "running"]
        for run_id in dead:
            if served and run_id == served_id:
                self.record_published(served, "published; the process died before recording it (found by the next run)")  # fmt: skip
                continue
            self.append(run_id, status="abandoned", finished_at=now_iso(),
                        message="the process died before finishing (found by the next run)")  # fmt: skip
        return [r for r in dead if r != served_id]

    def record_published(self, row: dict[str, Any], message: str) -> None:
        """Record the run whose `runs` row (from the served file) is `row` as published."""
        fields = {k: v for k, v in row.items() if k != "run_id" and v is not None}
        self.append(row["run_id"], **{**fields, "status": "published", "message": message})
