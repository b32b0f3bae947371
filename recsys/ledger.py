"""The run ledger: an append-only JSON-lines file beside the served database.

Each line is one event about one run; a run's state is its events merged in order. Appends
are fsynced, so a run killed at any moment leaves at worst one torn last line, which readers
skip.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

STATUSES = ("running", "published", "failed", "abandoned")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def new_run_id() -> str:
    """Sortable by start time, unique per microsecond: 20261129T030635123456Z."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    time.sleep(1e-6)  # two ids in one process never share a microsecond
    return stamp


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, run_id: str, **fields: Any) -> None:
        line = json.dumps({"run_id": run_id, "at": now_iso(), **fields}, default=str)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def runs(self) -> list[dict[str, Any]]:
        """Every run's merged state, oldest first."""
        merged: dict[str, dict[str, Any]] = {}
        if not self.path.exists():
            return []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn line from a killed run
            if not isinstance(event, dict) or "run_id" not in event:
                continue
            event.pop("at", None)
            merged.setdefault(event["run_id"], {}).update(event)
        return sorted(merged.values(), key=lambda r: r["run_id"])

    def get(self, run_id: str) -> dict[str, Any] | None:
        return next((r for r in self.runs() if r["run_id"] == run_id), None)

    def mark_abandoned(self, served_run_id: str = "") -> list[str]:
        """Runs still 'running' when the lock is free were killed: mark them abandoned, or
        published when the served file is theirs (killed after the replace)."""
        dead = [r["run_id"] for r in self.runs() if r.get("status") == "running"]
        for run_id in dead:
            if run_id == served_run_id:
                self.append(
                    run_id, status="published", message="published; the process died just after"
                )
                continue
            self.append(run_id, status="abandoned", finished_at=now_iso(),
                        message="the process died before finishing (found by the next run)")  # fmt: skip
        return [r for r in dead if r != served_run_id]
