"""Fault-injection points for the reliability tests: RECSYS_FAULT_PAUSE=<point>:<seconds>
makes the job sleep at that point so a test can overlap, kill or read it there; with
RECSYS_FAULT_RESUME=<path> the pause ends as soon as that file exists.

Points, in order: starting (before the lock), locked, trained, staged, gated (the staged
file is closed and passed), archived (hard-linked into archive/), published (the served file
is replaced; the ledger does not know yet), recorded (the ledger says published; the report
is next). A rollback pauses at published too. A sharded
rank (`score --parts`) pauses at scoring, with its first rows in its temporary part file;
RECSYS_FAULT_RANK=<rank> limits the pause to that torchrun rank (RANK).
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger(__name__)
PAUSE_ENV = "RECSYS_FAULT_PAUSE"
RESUME_ENV = "RECSYS_FAULT_RESUME"
RANK_ENV = "RECSYS_FAULT_RANK"
POINTS = ("starting", "locked", "trained", "scoring", "staged", "gated", "archived", "published",
          "recorded")  # fmt: skip


def point(name: str) -> None:
    spec = os.environ.get(PAUSE_ENV, "")
    if not spec:
        return
    where, _, seconds = spec.partition(":")
    if where != name:
        return
    rank = os.environ.get(RANK_ENV, "")
    if rank and rank != os.environ.get("RANK", "0"):
        return
    log.info("fault injection: pausing %ss at '%s' (pid %d)", seconds or "30", name, os.getpid())
    resume = os.environ.get(RESUME_ENV, "")
    end = time.monotonic() + float(seconds or 30)
    while time.monotonic() < end and not (resume and os.path.exists(resume)):
        time.sleep(min(0.01, max(end - time.monotonic(), 0)))
