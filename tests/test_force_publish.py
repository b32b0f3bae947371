"""`--force-publish REASON`: a run the gate refuses only by comparison with the last published
run (one changed on purpose) is published, and the reason is kept in the ledger, the runs
table and the report; a run whose own rows are broken is refused all the same."""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest

from recsys.config import Config
from recsys.errors import QualityGateError
from recsys.pipeline import _gate
from tests.conftest import read_table, run_cli
from tests.test_gate import NDCG, previous, recommendations, staged

REASON = "lists of 40 for the new home page"


def test_force_overrides_only_the_comparison_with_the_last_run(tmp_path: Path) -> None:
    config = Config()
    grown = staged(tmp_path, recommendations(users=40))  # 120 rows against 12: 10x
    with pytest.raises(QualityGateError, match=r"row count 120 is 10.00x .*nothing was "
                       r"published \(if the change is intended, publish it with --force-publish"):  # fmt: skip
        _gate(grown, config, NDCG, previous(12, 0.30), "")
    note = _gate(grown, config, NDCG, previous(12, 0.30), REASON)
    assert note.startswith(f"; published past the quality gate by --force-publish ({REASON}): ")
    assert "row count 120 is 10.00x" in note
    assert _gate(grown, config, NDCG, previous(120, 0.30), REASON) == (
        f"; --force-publish ({REASON}) not needed: the gate passed"
    )


def test_force_never_overrides_broken_rows(tmp_path: Path) -> None:
    broken = recommendations(users=40).with_columns(
        pl.when(pl.col("user_id") == 3).then(math.nan).otherwise(pl.col("score")).alias("score")
    )
    with pytest.raises(QualityGateError) as failed:
        _gate(staged(tmp_path, broken), Config(), NDCG, previous(12, 0.30), REASON)
    assert str(failed.value) == (
        "quality gate failed: 3 recommendation scores are NaN or infinite; --force-publish does "
        "not override these; nothing was published"
    )


def test_nightly_force_publish_end_to_end(tmp_path: Path, fast_config: Path) -> None:
    db = tmp_path / "recs.duckdb"
    env = {"RECSYS_OUTPUT_REPORT": "true"}
    first = run_cli("nightly", "--config", str(fast_config), "--database", str(db), env=env)
    assert first.returncode == 0, first.stderr
    args = ["nightly", "--config", str(fast_config), "--database", str(db), "--top-n", "40"]
    refused = run_cli(*args, env=env)
    assert refused.returncode == 65
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("error: quality gate failed: row count 12000 is 4.00x")
    assert last.endswith("(if the change is intended, publish it with --force-publish REASON)")

    forced = run_cli(*args, "--force-publish", REASON, env=env)
    assert forced.returncode == 0, forced.stderr
    note = (
        f"published past the quality gate by --force-publish ({REASON}): row count 12000 is 4.00x"
    )
    assert any(line.startswith(note) for line in forced.stdout.splitlines()), forced.stdout
    assert "published anyway by --force-publish" in forced.stderr  # a WARNING line

    runs = read_table(db, "select run_id, status, force_publish, message from runs order by run_id")
    assert runs["status"].to_list() == ["published", "failed", "published"]
    assert runs["force_publish"].to_list() == [None, None, REASON]
    assert note in runs["message"][2]
    ledger = [json.loads(line) for line in (tmp_path / "recs.runs.jsonl").read_text().splitlines()]
    final = [
        e for e in ledger if e["run_id"] == runs["run_id"][2] and e.get("status") == "published"
    ]
    assert final[-1]["force_publish"] == REASON and note in final[-1]["message"]
    listing = run_cli("runs", "--database", str(db))
    assert note in listing.stdout
    report = (tmp_path / "recs.report-latest.html").read_text()
    assert "Published past the quality gate" in report and REASON in report


def test_force_publish_needs_a_reason_and_a_publishing_command(tmp_path: Path) -> None:
    result = run_cli("nightly", "--database", str(tmp_path / "x.duckdb"), "--force-publish", " ")
    assert result.returncode == 2
    assert "give the reason" in result.stderr
    result = run_cli("score", "--checkpoint", "m.pt", "--parts", str(tmp_path), "--shard", "0/2",
                     "--force-publish", REASON)  # fmt: skip
    assert result.returncode == 2
    assert "--shard publishes nothing" in result.stderr
