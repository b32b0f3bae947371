"""Progress for long work: a bar on a terminal; off a terminal (cron), a heartbeat that logs
one line every few seconds through the whole job, saying the phase, the step and how far the
current loop has got, so a cron log is never silent for long."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Iterator

log = logging.getLogger(__name__)


class _Activity:
    """What the job is doing now, as the heartbeat reports it (set from the job's thread,
    read from the heartbeat's: single attribute writes, no lock needed)."""

    def __init__(self) -> None:
        self.phase, self.phase_started = "start", time.monotonic()
        self.step = ""
        self.task: Progress | None = None


ACTIVITY = _Activity()


def set_phase(name: str) -> None:
    """The job entered phase `name` (load, train, score, ...)."""
    ACTIVITY.phase, ACTIVITY.phase_started, ACTIVITY.step = name, time.monotonic(), ""


def set_step(text: str) -> None:
    """What the phase is doing now, e.g. "candidate deepfm (5/5)"."""
    ACTIVITY.step = text


class Progress:
    """`update(n)` after each unit of work; `close()` at the end logs the total rate (at INFO
    when the loop took `interval_s` or more, else only into the run log)."""

    def __init__(
        self, total: int, what: str, unit: str = "users", interval_s: float = 10.0
    ) -> None:
        self.total, self.what, self.unit = total, what, unit
        self.done = 0
        self.start = time.monotonic()
        self.interval_s = interval_s
        self.tty = sys.stderr.isatty()
        ACTIVITY.task = self

    def update(self, n: int) -> None:
        self.done += n
        if self.tty:
            self._draw(time.monotonic())

    def close(self) -> float:
        elapsed = time.monotonic() - self.start
        if ACTIVITY.task is self:
            ACTIVITY.task = None
        if self.tty:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
        level = logging.INFO if elapsed >= self.interval_s else logging.DEBUG
        log.log(level, "%s: %d %s in %.1fs (%.0f %s/s)", self.what, self.done, self.unit, elapsed,
                self.done / max(elapsed, 1e-9), self.unit)  # fmt: skip
        return elapsed

    def status(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.start, 1e-9)
        rate = self.done / elapsed
        eta = f"{(self.total - self.done) / rate:,.0f}s" if rate > 0 else "?"
        return f"{self.done:,}/{self.total:,} {self.unit} ({rate:,.0f} {self.unit}/s, ETA {eta})"

    def _draw(self, now: float) -> None:
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        bar = "#" * filled + "-" * (width - filled)
        sys.stderr.write(f"\r{self.what} [{bar}] {self.status(now)}")
        sys.stderr.flush()


def heartbeat_line(now: float | None = None) -> str:
    """One progress line: phase and its time so far, step, and the current loop's status."""
    now = now or time.monotonic()
    parts = [f"{ACTIVITY.phase} for {now - ACTIVITY.phase_started:.0f}s"]
    if ACTIVITY.step:
        parts.append(ACTIVITY.step)
    task = ACTIVITY.task
    if task is not None:
        parts.append(f"{task.what}: {task.status(now)}")
    return "; ".join(parts)


@contextlib.contextmanager
def heartbeat(interval_s: float) -> Iterator[None]:
    """While the block runs off a terminal, log `heartbeat_line()` every `interval_s` seconds
    (0 = never). A terminal has the bar instead."""
    set_phase("start")  # loading libraries, until the job names its first phase
    if interval_s <= 0 or sys.stderr.isatty():
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval_s):
            log.info("progress: %s", heartbeat_line())

    thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
