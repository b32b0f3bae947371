"""The quality gate: checks on the staged database before it may replace the served one."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from recsys.config import GateConfig
from recsys.metrics import LOWER_IS_BETTER
from recsys.warehouse import Published, StagedDatabase


@dataclass(frozen=True)
class GateInput:
    metric: str  # the selection metric, e.g. ndcg
    k: int | None
    value: float | None  # this run's validation value of the served model
    popularity: float | None = None  # popularity's value on the same split (the floor)
    fitted: bool | None = None  # any optimizer step (closed form counts); None: not known
    # The model's widest score range over the catalogue for sampled users (None: not known,
    # then the published scores stand in): 0 means every item scores the same for them.
    score_spread: float | None = None


def check(
    staged: StagedDatabase, gate: GateConfig, current: GateInput, previous: Published | None
) -> list[str]:
    """Reasons the staged result must not be published; empty when it passes."""
    problems: list[str] = []
    (num_rows, null_keys, bad_ranks, dup_ranks) = staged.query(
        """
        with ranked as (
            select
                user_id,
                item_id,
                rank,
                row_number() over (partition by user_id order by rank) as expected,
                count(*) over (partition by user_id, rank) as copies
            from recommendations
        )
        select
            count(*),
            count(*) filter (where user_id is null or item_id is null or rank is null),
            count(*) filter (where rank <> expected),
            count(*) filter (where copies > 1)
        from ranked
        """
    )[0]
    nan_scores = staged.query(
        "select count(*) from recommendations where isnan(score) or isinf(score)"
    )[0][0]
    if num_rows == 0:
        problems.append("recommendations is empty")
    if null_keys:
        problems.append(f"{null_keys} recommendation rows have NULL keys")
    if bad_ranks or dup_ranks:
        problems.append(
            f"ranks are not 1..N unique per user ({bad_ranks} out of sequence, {dup_ranks} repeated)"
        )
    if nan_scores:
        problems.append(f"{nan_scores} recommendation scores are NaN or infinite")
    problems += check_absolute(staged, gate, current)
    if previous is None or not previous.run_id:
        return problems
    if previous.num_rows and num_rows:
        ratio = num_rows / previous.num_rows
        if not (1 / gate.max_row_ratio <= ratio <= gate.max_row_ratio):
            problems.append(
                f"row count {num_rows} is {ratio:.2f}x the last published run's {previous.num_rows} "
                f"(allowed 1/{gate.max_row_ratio:g}..{gate.max_row_ratio:g}, gate.max_row_ratio)"
            )
    old = previous_metric(previous, current.metric, current.k)
    if current.value is not None and old is not None:
        drop = (current.value - old) if current.metric in LOWER_IS_BETTER else (old - current.value)
        if drop > gate.max_metric_drop:
            problems.append(
                f"validation {current.metric}{f'@{current.k}' if current.k else ''} fell from "
                f"{old:.4f} to {current.value:.4f} "
                f"(more than gate.max_metric_drop = {gate.max_metric_drop:g})"
            )
    return problems


def check_absolute(staged: StagedDatabase, gate: GateConfig, current: GateInput) -> list[str]:
    """Checks that need no earlier run (the first run has none): the model was trained at
    all, its scores rank something, and it is not far below popularity on validation."""
    problems: list[str] = []
    if current.fitted is False:
        problems.append(
            "the model was never trained (zero optimizer steps: no training batch reached it; "
            "check training.batch_size, the model's epochs and data.positive_threshold)"
        )
    low, high, num_rows = staged.query(
        "select min(score), max(score), count(*) from recommendations"
    )[0]
    # Equal scores in the lists alone may be the data's own ties (every unseen item with the
    # same count); the model ranks nothing only when its whole score rows are flat.
    flat = current.score_spread == 0 if current.score_spread is not None else low == high
    if num_rows > 1 and flat:
        problems.append(
            f"every recommendation score is {low:g}: the model ranks nothing (its weights may "
            "all be equal, e.g. init_std near 0 or a learning rate near 0)"
        )
    value, floor = current.value, current.popularity
    if value is not None and floor is not None and current.metric not in LOWER_IS_BETTER:
        least = floor * (1 - gate.max_below_popularity)
        if value < least:
            label = f"{current.metric}{f'@{current.k}' if current.k else ''}"
            problems.append(
                f"validation {label} {value:.4f} is below popularity's {floor:.4f} by more than "
                f"gate.max_below_popularity = {gate.max_below_popularity:g} (at least "
                f"{least:.4f} needed)"
            )
    return problems


def previous_metric(previous: Published, metric: str, k: int | None) -> float | None:
    """The last published run's validation value of `metric` for the model it served."""
    own = previous.runs.filter(pl.col("run_id") == previous.run_id)
    if own.height == 0:
        return None
    rows = previous.metrics.filter(
        (pl.col("run_id") == previous.run_id)
        & (pl.col("model") == own["model"][0])
        & (pl.col("split") == "validation")
        & (pl.col("metric") == metric)
        & (pl.col("k").is_null() if k is None else pl.col("k") == k)
    )
    return float(rows["value"][0]) if rows.height else None
