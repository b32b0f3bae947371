"""The quality gate on hand-made staged databases: each rule refuses what it should, names
the rule and the numbers, and lets a good result through."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from recsys.config import GateConfig
from recsys.gate import GateInput, check
from recsys.warehouse import Published, StagedDatabase

GATE = GateConfig(enabled=True, max_row_ratio=3.0, max_metric_drop=0.05)
NDCG = GateInput("ndcg", 10, 0.30)


def recommendations(users: int = 4, n: int = 3) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": [u for u in range(users) for _ in range(n)],
            "rank": [r for _ in range(users) for r in range(1, n + 1)],
            "item_id": [100 + r for _ in range(users) for r in range(n)],
            "score": [1.0 / r for _ in range(users) for r in range(1, n + 1)],
            "source": "model",
        },
        schema_overrides={"rank": pl.Int32, "score": pl.Float32},
    )


def staged(tmp_path: Path, frame: pl.DataFrame) -> StagedDatabase:
    db = StagedDatabase(tmp_path / "staged.duckdb", "BIGINT", "BIGINT", "B")
    db.insert_frame("recommendations", frame)
    return db


def previous(num_rows: int, value: float, metric: str = "ndcg", k: int | None = 10) -> Published:
    runs = pl.DataFrame({"run_id": ["A"], "model": ["bpr"], "status": ["published"]})
    metrics = pl.DataFrame(
        {"run_id": ["A", "A"], "model": ["bpr", "popularity"], "split": "validation",
         "metric": metric, "k": [k, k], "value": [value, 0.99]},
        schema_overrides={"k": pl.Int64},
    )  # fmt: skip
    return Published("A", runs, metrics, num_rows)


def test_a_good_result_passes(tmp_path: Path) -> None:
    (tmp_path / "first").mkdir()
    assert check(staged(tmp_path / "first", recommendations()), GATE, NDCG, None) == []
    assert check(staged(tmp_path, recommendations()), GATE, NDCG, previous(12, 0.31)) == []


def test_empty_result(tmp_path: Path) -> None:
    problems = check(staged(tmp_path, recommendations().head(0)), GATE, NDCG, None)
    assert problems == ["recommendations is empty"]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (pl.col("rank").replace({3: 4}), "ranks are not 1..N unique per user (4 out of sequence, 0 repeated)"),
        (pl.col("rank").replace({3: 2}), "ranks are not 1..N unique per user (4 out of sequence, 8 repeated)"),
        (pl.col("rank").replace({1: 0}), "ranks are not 1..N unique per user (4 out of sequence, 0 repeated)"),
    ],
)  # fmt: skip
def test_ranks_must_be_one_to_n_per_user(tmp_path: Path, change: pl.Expr, problem: str) -> None:
    frame = recommendations().with_columns(change.alias("rank"))
    assert check(staged(tmp_path, frame), GATE, NDCG, None) == [problem]


def test_null_keys_and_nan_scores(tmp_path: Path) -> None:
    db = StagedDatabase(tmp_path / "staged.duckdb", "BIGINT", "BIGINT", "B")
    for column in ("user_id", "item_id"):  # the DDL refuses NULLs; the gate checks anyway
        db.con.execute(f"alter table recommendations alter column {column} drop not null")
    db.insert_frame("recommendations", recommendations())
    db.con.execute("update recommendations set item_id = null where user_id = 0 and rank = 1")
    db.con.execute("update recommendations set score = 'nan' where user_id = 1")
    assert check(db, GATE, NDCG, None) == [
        "1 recommendation rows have NULL keys",
        "3 recommendation scores are NaN or infinite",
    ]


@pytest.mark.parametrize("old_rows", [3, 37])
def test_row_count_within_ratio_of_the_last_published(tmp_path: Path, old_rows: int) -> None:
    problems = check(staged(tmp_path, recommendations()), GATE, NDCG, previous(old_rows, 0.30))
    assert len(problems) == 1
    assert problems[0].startswith(f"row count 12 is {12 / old_rows:.2f}x the last published run's")
    assert problems[0].endswith("(allowed 1/3..3, gate.max_row_ratio)")


def test_validation_metric_may_not_drop_more_than_the_margin(tmp_path: Path) -> None:
    db = staged(tmp_path, recommendations())
    assert check(db, GATE, GateInput("ndcg", 10, 0.26), previous(12, 0.30)) == []  # within 0.05
    assert check(db, GATE, GateInput("ndcg", 10, 0.24), previous(12, 0.30)) == [
        "validation ndcg@10 fell from 0.3000 to 0.2400 (more than gate.max_metric_drop = 0.05)"
    ]
    # Lower is better for rating errors: a rise is the drop.
    rmse = previous(12, 0.90, "rmse", None)
    assert check(db, GATE, GateInput("rmse", None, 0.88), rmse) == []
    assert check(db, GATE, GateInput("rmse", None, 0.99), rmse) == [
        "validation rmse fell from 0.9000 to 0.9900 (more than gate.max_metric_drop = 0.05)"
    ]


# ------------------------------------------- the absolute checks (issue 13, item 5)


def test_a_model_never_trained_is_refused(tmp_path: Path) -> None:
    never = GateInput("ndcg", 10, 0.30, fitted=False)
    assert check(staged(tmp_path, recommendations()), GATE, never, None) == [
        "the model was never trained (zero optimizer steps: no training batch reached it; check "
        "training.batch_size, the model's epochs and data.positive_threshold)"
    ]
    for fitted in (True, None):  # trained, or not known (a checkpoint from before)
        (tmp_path / str(fitted)).mkdir()
        db = staged(tmp_path / str(fitted), recommendations())
        assert check(db, GATE, GateInput("ndcg", 10, 0.30, fitted=fitted), None) == []


def test_constant_scores_are_refused_even_on_a_first_run(tmp_path: Path) -> None:
    flat = recommendations().with_columns(pl.lit(0.0, dtype=pl.Float32).alias("score"))
    assert check(staged(tmp_path, flat), GATE, NDCG, None) == [
        "every recommendation score is 0: the model ranks nothing (its weights may all be "
        "equal, e.g. init_std near 0 or a learning rate near 0)"
    ]
    (tmp_path / "one").mkdir()  # a single row has nothing to be constant against
    assert check(staged(tmp_path / "one", flat.head(1)), GATE, NDCG, None) == []


@pytest.mark.parametrize(
    ("value", "popularity", "margin", "refused"),
    [(0.30, 0.31, 0.5, False), (0.16, 0.31, 0.5, False), (0.15, 0.31, 0.5, True),
     (0.0, 0.31, 0.5, True), (0.0, 0.31, 1.0, False), (0.30, 0.31, 0.0, True),
     (0.30, None, 0.5, False)],
)  # fmt: skip
def test_the_served_model_is_held_to_popularitys_metric(
    tmp_path: Path, value: float, popularity: float | None, margin: float, refused: bool
) -> None:
    gate = GateConfig(max_below_popularity=margin)
    current = GateInput("ndcg", 10, value, popularity)
    problems = check(staged(tmp_path, recommendations()), gate, current, None)
    if not refused:
        assert problems == []
        return
    least = popularity * (1 - margin)
    assert problems == [
        f"validation ndcg@10 {value:.4f} is below popularity's {popularity:.4f} by more than "
        f"gate.max_below_popularity = {margin:g} (at least {least:.4f} needed)"
    ]


def test_lower_is_better_metrics_have_no_popularity_floor(tmp_path: Path) -> None:
    current = GateInput("rmse", None, 3.0, popularity=0.1)  # rmse: lower is better
    assert check(staged(tmp_path, recommendations()), GATE, current, None) == []
