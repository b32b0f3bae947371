"""The run ledger: merged run states, torn lines from kills, the served run, recovery."""

from __future__ import annotations

import json
from pathlib import Path

from recsys.ledger import Ledger, new_run_id


def test_events_merge_into_runs_in_order(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "runs.jsonl")
    ledger.append("B", status="running", started_at="t1")
    ledger.append("A", status="running")
    ledger.append("B", status="published", num_rows=7)
    runs = ledger.runs()
    assert [r["run_id"] for r in runs] == ["A", "B"]
    assert runs[1] == {"run_id": "B", "status": "published", "started_at": "t1", "num_rows": 7}


def test_a_torn_last_line_is_skipped_and_the_next_event_survives(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "runs.jsonl")
    ledger.append("A", status="published")
    with ledger.path.open("a") as fh:
        fh.write('{"run_id": "B", "status": "runn')  # a write cut short
    assert [r["run_id"] for r in ledger.runs()] == ["A"]
    ledger.append("C", status="running")
    lines = ledger.path.read_text().splitlines()
    assert json.loads(lines[-1])["run_id"] == "C"
    assert [r["run_id"] for r in ledger.runs()] == ["A", "C"]


def test_served_run_is_the_last_published_or_rolled_back(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "runs.jsonl")
    assert ledger.served_run_id() == ""
    ledger.append("A", status="published")
    ledger.append("B", status="published")
    ledger.append("C", status="failed")
    assert ledger.served_run_id() == "B"
    ledger.append("A", event="rollback")
    assert ledger.served_run_id() == "A"
    a = ledger.get("A")
    assert a["status"] == "published" and a["rolled_back_at"]  # what A was is unchanged


def test_new_run_ids_only_go_forward(tmp_path: Path) -> None:
    first = new_run_id()
    assert new_run_id(after=first) > first
    future = "29991231T235959999999Z"  # a ledger written while the clock ran ahead
    assert new_run_id(after=future) == "30000101T000000000000Z"
    assert new_run_id(after="hand-made") > first


def test_dead_runs_become_abandoned_or_published_when_served(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "runs.jsonl")
    ledger.append("A", status="published")
    ledger.append("B", status="running")
    assert ledger.mark_abandoned({"run_id": "A"}) == ["B"]
    assert ledger.get("B")["status"] == "abandoned"
    ledger.append("C", status="running", started_at="t0")
    served_row = {"run_id": "C", "model": "bpr", "num_rows": 9, "timings": None}
    assert ledger.mark_abandoned(served_row) == []
    c = ledger.get("C")
    assert (c["status"], c["model"], c["num_rows"], c["started_at"]) == (
        "published",
        "bpr",
        9,
        "t0",
    )
    assert ledger.served_run_id() == "C"
    assert ledger.mark_abandoned(None) == []  # nothing is running any more


def test_a_line_without_a_text_run_id_is_ignored_not_fatal(tmp_path: Path) -> None:
    """Issue 13, item 13: one hand-edited line used to stop every later run and `recsys runs`."""
    ledger = Ledger(tmp_path / "runs.jsonl")
    ledger.append("A", status="published")
    with ledger.path.open("a") as fh:
        for bad in ({"run_id": 7, "status": "published"}, {"run_id": None}, {"run_id": ["x"]},
                    {"run_id": "../../etc"}, ["A"], "text", {"status": "published"}):  # fmt: skip
            fh.write(json.dumps(bad) + "\n")
    ledger.append("B", status="running")
    assert [r["run_id"] for r in ledger.runs()] == ["A", "B"]
    assert ledger.last_run_id() == "B" and ledger.served_run_id() == "A"
    assert new_run_id(after=ledger.last_run_id())


def test_runs_lists_a_ledger_with_hand_edited_lines(tmp_path: Path) -> None:
    """`recsys runs` on a ledger holding a non-text run_id and odd values still lists the
    readable runs (exit 0), as the next nightly reads it."""
    from click.testing import CliRunner

    from jobs.cli import main

    ledger = Ledger(tmp_path / "recs.runs.jsonl")
    ledger.append("20260101T000000000000Z", status="published", model="bpr", num_rows={"x": 1},
                  metrics={"bpr.ndcg@10": "high", "bpr.recall@10": 0.5}, timings=[1, 2])  # fmt: skip
    with ledger.path.open("a") as fh:
        fh.write(json.dumps({"run_id": 20260102, "status": "published"}) + "\n")
    result = CliRunner().invoke(main, ["runs", "-v", "--database", str(tmp_path / "recs.duckdb")])
    assert result.exit_code == 0, result.output
    assert "20260101T000000000000Z  published  bpr" in result.output
    assert "metrics: bpr.recall@10 0.5" in result.output
    assert "20260102" not in result.output
