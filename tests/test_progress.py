"""Progress off a terminal: heartbeat lines on a fixed interval through a whole phase, saying
the phase, the step and the current loop's count in its own unit."""

from __future__ import annotations

import io
import logging
import sys
import time

import pytest

from recsys import progress
from recsys.progress import Progress, heartbeat, heartbeat_line, set_phase, set_step


@pytest.fixture
def not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # isatty() is False


def beats(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("progress: ")]


def test_heartbeat_lines_come_on_time_across_loops_and_gaps(caplog, not_a_terminal) -> None:
    caplog.set_level(logging.INFO, logger="recsys.progress")
    interval = 0.05
    with heartbeat(interval):
        set_phase("train")
        set_step("candidate bpr (2/3)")
        loop = Progress(1000, "bpr epoch 1", unit="rows")
        for _ in range(10):
            loop.update(100)
            time.sleep(0.02)
        loop.close()
        time.sleep(0.2)  # between loops (an evaluation, a DuckDB write): still lines
        set_phase("similar_items")
        items = Progress(50, "similar items", unit="items")
        items.update(10)
        time.sleep(0.2)
        items.close()
    lines = beats(caplog)
    texts = [r.getMessage() for r in lines]
    assert any("train for " in t and "candidate bpr (2/3); bpr epoch 1: " in t and " rows (" in t
               for t in texts), texts  # fmt: skip
    assert any(t.startswith("progress: train for ") and "epoch" not in t for t in texts), texts
    assert any("similar_items for " in t and "10/50 items (" in t for t in texts), texts
    assert len(lines) >= 8  # about 0.6 s at one line per 0.05 s
    gaps = [b.created - a.created for a, b in zip(lines, lines[1:], strict=False)]
    assert max(gaps) < interval + 0.5, gaps


def test_no_heartbeat_on_a_terminal_or_when_off(caplog, monkeypatch) -> None:
    caplog.set_level(logging.INFO, logger="recsys.progress")
    with heartbeat(0):
        time.sleep(0.1)

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    with heartbeat(0.01):
        time.sleep(0.1)
    assert beats(caplog) == []
    assert not [t for t in progress.threading.enumerate() if t.name == "heartbeat"]


def test_status_has_count_rate_and_eta(not_a_terminal) -> None:
    set_phase("score")
    loop = Progress(100, "scoring users")
    assert heartbeat_line().endswith("scoring users: 0/100 users (0 users/s, ETA ?)")
    loop.update(40)
    line = heartbeat_line()
    assert "score for " in line and "scoring users: 40/100 users (" in line
    assert "users/s, ETA " in line
    loop.close()
    assert "scoring users" not in heartbeat_line()  # a closed loop is no longer reported


def test_a_long_loop_logs_its_total_at_info(caplog, not_a_terminal) -> None:
    caplog.set_level(logging.DEBUG, logger="recsys.progress")
    quick = Progress(5, "similar items", unit="items", interval_s=10)
    quick.update(5)
    quick.close()
    slow = Progress(5, "scoring users", interval_s=0)
    slow.update(5)
    slow.close()
    levels = {r.getMessage().split(":")[0]: r.levelname for r in caplog.records}
    assert levels == {"similar items": "DEBUG", "scoring users": "INFO"}
    assert "similar items: 5 items in " in caplog.text
