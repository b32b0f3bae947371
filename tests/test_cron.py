"""Cron-friendly output: the whole nightly output piped through `cat` (no terminal) never
stays silent for long, says when each candidate starts and ends and when the refit runs, and
the stderr level follows -v, -q and --log-level. Real subprocess runs on small data."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import RECSYS, run_cli

INTERVAL = 0.5  # output.progress_seconds here; the default is 15 s against the 30 s bar


def test_nightly_through_cat_is_never_silent_for_long(tmp_path: Path, fast_config: Path) -> None:
    db = tmp_path / "wh" / "recs.duckdb"
    env = {**os.environ, "RECSYS_OUTPUT_PROGRESS_SECONDS": str(INTERVAL),
           "RECSYS_MODEL_CANDIDATES": "mf_bias,bpr", "RECSYS_OUTPUT_REPORT": "true"}  # fmt: skip
    started = time.monotonic()
    job = subprocess.Popen(
        ["bash", "-c", '"$0" nightly --config "$1" --database "$2" 2>&1 | cat', RECSYS,
         str(fast_config), str(db)],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    arrivals: list[tuple[float, str]] = []
    assert job.stdout is not None
    for line in job.stdout:
        arrivals.append((time.monotonic(), line.rstrip("\n")))
    assert job.wait(timeout=300) == 0, "\n".join(line for _, line in arrivals)
    ended = time.monotonic()
    lines = [line for _, line in arrivals]
    text = "\n".join(lines)

    # Lines keep coming: the heartbeat, at the interval, from the first line to the last (the
    # slack is for a loaded machine); after the last line only the interpreter's exit, which
    # unloading torch makes take seconds.
    times = [at for at, _ in arrivals]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    worst = max(range(len(gaps)), key=gaps.__getitem__)
    assert times[0] - started < 15, "the first line came late"
    assert gaps[worst] < INTERVAL + 4, (gaps[worst], lines[worst : worst + 2])
    assert ended - times[-1] < 30, "exiting took longer than the 30 s bar"
    beats = [line for line in lines if " recsys.progress: progress: " in line]
    assert len(beats) >= 0.5 * (ended - arrivals[0][0]) / INTERVAL, text
    assert any(re.search(r"progress: train for \d+s; candidate \w+ \(\d/2\)", b) for b in beats)

    # A first line at once, naming the version; then one when each candidate starts and ends
    # (metric, seconds), and for the refit.
    assert re.search(r" recsys\.jobs: nightly: starting, recsys \d+\.\d+\.\d+ \(commit ", lines[0])
    for number, name in enumerate(["mf_bias", "bpr"], 1):
        assert re.search(rf"candidate {name} \({number}/2\): training on \d+ interactions", text)
        assert re.search(rf"candidate {name}: ndcg@10 = 0\.\d{{4}} \(best epoch \d+, [\d.]+s\)",
                         text), name  # fmt: skip
    chosen = re.search(r"(\w+) chosen by validation ndcg@10", text)[1]
    assert re.search(rf"refit {chosen} on all 4500 interactions for \d+ epoch\(s\)", text)
    assert re.search(rf"refit {chosen}: done in [\d.]+s", text)

    # The report's path once, not twice.
    (report,) = (db.parent).glob(f"{db.stem}.report-2*.html")
    assert [line for line in lines if str(report) in line] == [f"report: {report}"]

    # Every bar counts what it loops over: similar items count items (in the run log).
    (run_log,) = (db.parent / f"{db.stem}.logs").glob("*.log")
    logged = run_log.read_text()
    assert re.search(r"similar items: 120 items in [\d.]+s", logged), logged
    assert re.search(r"scoring users: 300 users in [\d.]+s", logged)
    assert not re.search(r"similar items: .* users", logged)


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from recsys import synthetic

    path = tmp_path_factory.mktemp("levels") / "interactions.csv"
    synthetic.planted(num_users=60, num_items=40, per_user=8, seed=1).interactions.write_csv(path)
    return path


def evaluate(small_csv: Path, *global_options: str) -> subprocess.CompletedProcess:
    return run_cli(*global_options, "evaluate", "--interactions", str(small_csv), "--model",
                   "popularity", env={"RECSYS_OUTPUT_PROGRESS_SECONDS": "0"})  # fmt: skip


def levels(stderr: str) -> set[str]:
    return {
        line.split(" ")[1] for line in stderr.splitlines() if re.match(r"\d{4}-\d\d-\d\dT", line)
    }


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ((), {"INFO"}),
        (("-v",), {"DEBUG", "INFO"}),
        (("--log-level", "debug"), {"DEBUG", "INFO"}),
        (("-q",), set()),
        (("--log-level", "WARNING"), set()),
    ],
)
def test_log_level_options(small_csv: Path, options: tuple[str, ...], expected: set[str]) -> None:
    result = evaluate(small_csv, *options)
    assert result.returncode == 0, result.stderr
    assert levels(result.stderr) == expected, result.stderr
    assert "popularity chosen by validation" in result.stdout  # the result, whatever the level


def test_contradicting_log_options_are_a_usage_error(small_csv: Path) -> None:
    result = evaluate(small_csv, "-v", "-q")
    assert result.returncode == 2
    assert (
        result.stderr.strip().splitlines()[-1] == "Error: -v and -q contradict each other: give one"
    )
    result = evaluate(small_csv, "--log-level", "loud")
    assert result.returncode == 2
    assert "Invalid value for '--log-level'" in result.stderr
