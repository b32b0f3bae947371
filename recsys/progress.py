"""Progress for long loops: a bar on a terminal, periodic log lines (rate, ETA) under cron."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger(__name__)


class Progress:
    """`update(n)` after each unit of work; `close()` at the end logs the total rate."""

    def __init__(
        self, total: int, what: str, unit: str = "users", interval_s: float = 10.0
    ) -> None:
        self.total, self.what, self.unit = total, what, unit
        self.done = 0
        self.start = self.last = time.monotonic()
        self.interval_s = interval_s
        self.tty = sys.stderr.isatty()

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.tty:
            self._draw(now)
        elif now - self.last >= self.interval_s:
            self.last = now
            log.info("%s: %s", self.what, self._status(now))

    def close(self) -> float:
        elapsed = time.monotonic() - self.start
        if self.tty:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
        # Short loops (an epoch, an evaluation) only go to the run log.
        level = logging.INFO if elapsed >= self.interval_s else logging.DEBUG
        log.log(level, "%s: %d %s in %.1fs (%.0f %s/s)", self.what, self.done, self.unit, elapsed,
                self.done / max(elapsed, 1e-9), self.unit)  # fmt: skip
        return elapsed

    def _status(self, now: float) -> str:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        return f"{self.done}/{self.total} {self.unit} ({rate:,.0f}/s, ETA {eta:,.0f}s)"

    def _draw(self, now: float) -> None:
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        bar = "#" * filled + "-" * (width - filled)
        sys.stderr.write(f"\r{self.what} [{bar}] {self._status(now)}")
        sys.stderr.flush()
