"""The absolute sanity gate end to end (issue 13, item 5): a model that was never trained,
ranks nothing or is far below popularity is refused with exit 65 and its reason, whatever
the last run was; a good single model passes, held to popularity's metric on its own split
(computed as a baseline when popularity is not a candidate)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl
import pytest

from tests.conftest import FAST_CONFIG, invoke, read_table


def checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


def nightly(tmp_path: Path, config_text: str, *args: str, env: dict | None = None):
    config = tmp_path / "c.toml"
    config.write_text(config_text)
    db = tmp_path / "wh" / "recs.duckdb"
    result = invoke("nightly", "--config", str(config), "--database", str(db), *args, env=env)
    return result, db


def failed_reason(db: Path) -> str:
    lines = [json.loads(line) for line in (db.parent / "recs.runs.jsonl").read_text().splitlines()]
    return next(e["message"] for e in reversed(lines) if e.get("status") == "failed")


def test_flat_scores_and_a_model_far_below_popularity_are_refused(tmp_path: Path) -> None:
    """Weights of 1e-30 moved by steps of 1e-30: every score is 0 (their products underflow),
    and validation NDCG is near chance, far below popularity's on the same split."""
    text = FAST_CONFIG.replace("[model.params.bpr]\nepochs = 8\n",
                               "[model.params.bpr]\nepochs = 2\ninit_std = 1e-30\nlr = 1e-30\n")  # fmt: skip
    result, db = nightly(tmp_path, text, "--model", "bpr",
                         env={"RECSYS_GATE_MAX_BELOW_POPULARITY": "0.5"})  # fmt: skip
    assert result.returncode == 65, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: quality gate failed: every recommendation score is 0: the "
                           "model ranks nothing")  # fmt: skip
    assert "is below popularity's" in line and "gate.max_below_popularity = 0.5" in line
    assert not db.exists()  # a first run: nothing served, nothing made up
    assert failed_reason(db).startswith("quality gate failed: every recommendation score is 0")


# torch warns that the learning-rate schedule steps without any optimizer step: the point here.
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)`:UserWarning")
def test_a_model_no_optimizer_step_reached_is_refused(tmp_path: Path) -> None:
    """Rated 5 (positive at threshold 5) is only each user's latest interaction, which the
    split holds out: the ranking loss trains on nothing, and without a refit nothing else."""
    rows = ["user_id,item_id,rating,timestamp"]
    for user in range(1, 41):
        items = [(user * 7 + j) % 60 + 1 for j in range(6)]
        rows += [
            f"{user},{item},{5 if j == 5 else 3},{1_600_000_000 + j}"
            for j, item in enumerate(items)
        ]
    csv = tmp_path / "ratings.csv"
    csv.write_text("\n".join(rows) + "\n")
    env = {"RECSYS_DATA_POSITIVE_THRESHOLD": "5", "RECSYS_MODEL_REFIT": "false"}
    result, db = nightly(
        tmp_path, FAST_CONFIG, "--model", "bpr", "--interactions", str(csv), env=env
    )
    assert result.returncode == 65, result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("error: quality gate failed: the model was never trained (zero optimizer steps")
    )


def test_a_threshold_above_every_rating_is_refused_after_loading(tmp_path: Path) -> None:
    csv = tmp_path / "ratings.csv"
    csv.write_text("user_id,item_id,rating\n1,1,3\n1,2,4\n2,1,2\n")
    result, db = nightly(tmp_path, FAST_CONFIG, "--interactions", str(csv),
                         env={"RECSYS_DATA_POSITIVE_THRESHOLD": "5"})  # fmt: skip
    assert result.returncode == 65, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {csv}: no rating reaches data.positive_threshold = 5 (the highest is 4), so "
        "there would be no positive interactions; lower it"
    )


def test_a_single_model_that_learns_passes_held_to_popularitys_baseline(
    tmp_path: Path, planted_csv: Path
) -> None:
    learns = FAST_CONFIG.replace("[model.params.bpr]\nepochs = 8\n",
                                 "[model.params.bpr]\nepochs = 15\nlr = 0.05\n")  # fmt: skip
    result, db = nightly(tmp_path, learns, "--model", "bpr", "--interactions", str(planted_csv),
                         env={"RECSYS_GATE_MAX_BELOW_POPULARITY": "0.5"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics = read_table(db, "select model, value from metrics where metric = 'ndcg'")
    assert metrics["model"].to_list() == ["bpr"]  # the baseline is not published as a candidate
    runs = read_table(db, "select model from runs where status = 'published'")
    assert runs["model"].to_list() == ["bpr"]
    assert (
        pl.read_csv(planted_csv)["user_id"].n_unique()
        == read_table(db, "select count(distinct user_id) as n from recommendations")["n"][0]
    )
