"""Train/validation splits that keep the vocabularies, so indices stay comparable."""

from __future__ import annotations

import numpy as np
import polars as pl

from recsys.data.interactions import Interactions


def temporal_split(
    data: Interactions, fraction: float, seed: int, min_user_interactions: int = 3
) -> tuple[Interactions, Interactions]:
    """Hold out each user's latest `fraction` of interactions (at least one).

    Users with fewer than `min_user_interactions` rows stay wholly in training. Equal
    timestamps are ordered by a seeded shuffle, so the split is reproducible and unbiased.
    """
    rng = np.random.default_rng(seed)
    frame = data.frame.with_columns(pl.Series("tie", rng.permutation(data.frame.height)))
    # _rev: 1 for a user's latest interaction, 2 for the one before, ...
    ranked = frame.sort("user_idx", "timestamp", "tie").with_columns(
        pl.int_range(pl.len(), 0, -1).over("user_idx").alias("_rev"),
        pl.len().over("user_idx").alias("_n"),
    )
    return _split(data, ranked, fraction, min_user_interactions)


def _split(
    data: Interactions, ranked: pl.DataFrame, fraction: float, min_user_interactions: int
) -> tuple[Interactions, Interactions]:
    """Hold out rows with `_rev` (1-based within the user) up to the user's share."""
    held = (pl.col("_n") >= min_user_interactions) & (
        pl.col("_rev") <= (pl.col("_n") * fraction).floor().clip(lower_bound=1)
    )
    columns = data.frame.columns
    return (
        data.with_frame(ranked.filter(~held).select(columns)),
        data.with_frame(ranked.filter(held).select(columns)),
    )


def holdout_split(
    data: Interactions, fraction: float, seed: int, min_user_interactions: int = 3
) -> tuple[Interactions, Interactions]:
    """The validation holdout: each user's latest `fraction` when the data has time, else a
    seeded random `fraction` of each user's interactions (file order is not time)."""
    split = temporal_split if data.has_time else user_random_split
    return split(data, fraction, seed, min_user_interactions)


def user_random_split(
    data: Interactions, fraction: float, seed: int, min_user_interactions: int = 3
) -> tuple[Interactions, Interactions]:
    """Hold out a seeded random `fraction` of each user's interactions (at least one), with
    the same rule as `temporal_split` for users with few interactions."""
    rng = np.random.default_rng(seed)
    frame = data.frame.with_columns(pl.Series("_draw", rng.permutation(data.frame.height)))
    ranked = frame.with_columns(
        pl.col("_draw").rank("ordinal").over("user_idx").alias("_rev"),
        pl.len().over("user_idx").alias("_n"),
    )
    return _split(data, ranked, fraction, min_user_interactions)


def random_split(
    data: Interactions, fraction: float, seed: int
) -> tuple[Interactions, Interactions]:
    """Seeded random split of rows: `fraction` of them go to the second part."""
    rng = np.random.default_rng(seed)
    held = rng.random(data.frame.height) < fraction
    mask = pl.Series(held)
    return data.with_frame(data.frame.filter(~mask)), data.with_frame(data.frame.filter(mask))
