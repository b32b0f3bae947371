"""Fault-injection points for the reliability tests: RECSYS_FAULT_PAUSE=<point>:<seconds>
makes the job sleep at that point so a test can overlap, kill or read it there.

Points, in order: starting (before the lock), locked, trained, staged, gated (the staged
file is closed and passed), archived (hard-linked into archive/), published (the served file
is replaced; the ledger does not know yet). A rollback pauses at published too.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger(__name__)
PAUSE_ENV = "RECSYS_FAULT_PAUSE"
POINTS = ("starting", "locked", "trained", "staged", "gated", "archived", "published")


def point(name: str) -> None:
    spec = os.environ.get(PAUSE_ENV, "")
    if not spec:
        return
    where, _, seconds = spec.partition(":")
    if where == name:
        log.info("fault injection: pausing %ss at '%s'", seconds or "30", name)
        time.sleep(float(seconds or 30))
