"""End-to-end: the default nightly (tuned ranking candidates, a blend when it wins) as a real
subprocess, and the settings of the item-item models refused with one line."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from tests.conftest import read_table, run_cli

# The shipped defaults on small demo data, with a short tuning budget.
DEFAULT_CONFIG = """
[source]
demo_users = 250
demo_items = 100
demo_interactions_per_user = 15

[model.tuning]
budget_seconds = 6
trials = 4

[model.params.fm]
epochs = 4
"""


def test_default_nightly_tunes_ranking_candidates_and_records_the_choice(tmp_path: Path) -> None:
    config = tmp_path / "recsys.toml"
    config.write_text(DEFAULT_CONFIG)
    db = tmp_path / "recs.duckdb"
    result = run_cli("nightly", "--config", str(config), "--database", str(db))
    assert result.returncode == 0, result.stderr
    metrics = read_table(db, "select * from metrics")
    assert set(metrics["model"]) >= {"popularity", "ease", "itemknn", "ials", "fm"}
    assert "mf_bias" not in set(metrics["model"])  # a rating model: not a ranking candidate
    run = read_table(db, "select model, params, message from runs").row(0, named=True)
    params = json.loads(run["params"])
    assert " chosen by validation ndcg@10 = " in run["message"]
    if run["model"] == "blend":  # the message says what was blended, and the members' settings
        assert run["message"].startswith("blend of ") and "it beats" in run["message"]
        assert len(params["weights"]) == 2 and len(params["members"]) == 2
    else:
        assert run["message"].startswith(run["model"])
        chosen = metrics.filter(
            (pl.col("model") == run["model"]) & pl.col("metric").str.starts_with("param.")
        )
        for row in chosen.iter_rows(named=True):
            assert params[row["metric"].removeprefix("param.")] == row["value"]
    trials = metrics.filter(pl.col("metric") == "tuning_trials")
    assert trials.filter(pl.col("model") == "ease")["value"][0] >= 1
    recs = read_table(db, "select count(distinct user_id) as n from recommendations")
    assert recs["n"][0] == 250


def test_item_item_model_serves_similar_items_from_its_matrix(
    tmp_path: Path, planted_csv: Path
) -> None:
    config = tmp_path / "recsys.toml"
    config.write_text("[model.tuning]\nbudget_seconds = 0\n[scoring]\nsimilar_items_n = 5\n")
    db = tmp_path / "recs.duckdb"
    result = run_cli("nightly", "--config", str(config), "--database", str(db),
                     "--interactions", str(planted_csv), "--model", "itemknn")  # fmt: skip
    assert result.returncode == 0, result.stderr
    similar = read_table(db, "select * from similar_items")
    assert similar.height > 0
    assert similar.filter(pl.col("item_id") == pl.col("similar_item_id")).height == 0
    assert (similar["score"] > 0).all()  # neighbours only: cosine similarities


def test_bad_item_item_settings_exit_65_with_one_line(tmp_path: Path, planted_csv: Path) -> None:
    for setting, expected in (
        ("half_life = -2.0", "model 'ease': [model.params.ease] half_life = -2.0 must be at least 0"),
        ('confidence = "loud"', "model 'ease': unknown confidence 'loud' (expected one of: none, log, bm25, tfidf)"),
        ("max_items = 10", "model 'ease': ease needs a dense 100 x 100 matrix"),
    ):  # fmt: skip
        config = tmp_path / "recsys.toml"
        config.write_text(f"[model.params.ease]\n{setting}\n")
        result = run_cli("nightly", "--config", str(config), "--database", str(tmp_path / "r.duckdb"),
                         "--interactions", str(planted_csv), "--model", "ease")  # fmt: skip
        assert result.returncode == 65, result.stderr
        assert expected in result.stderr.strip().splitlines()[-1], result.stderr
        assert "Traceback" not in result.stderr
