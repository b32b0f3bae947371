"""Everything a run learns from: interactions, side features and the item catalogue, from the
configured sources or the seeded demo data.

The user and item vocabularies cover more than the interactions: users in the user feature
table or the users-to-score list and items in the item feature table are included, so cold
users still get a list and new items can be recommended by feature-aware models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import polars as pl

from recsys import synthetic
from recsys.config import ColumnsConfig, Config
from recsys.data.features import SideFeatures, configured_kinds, encode_side, read_feature_table
from recsys.data.idmap import IdMap
from recsys.data.interactions import (
    Interactions,
    interactions_from_frame,
    load_interactions,
    parse_ids,
)
from recsys.data.tables import read_table
from recsys.errors import DataError

log = logging.getLogger(__name__)
# The source label of the seeded demo data (runs.source, the ledger, checkpoints).
DEMO_SOURCE = "demo data"


@dataclass
class Dataset:
    interactions: Interactions  # vocabularies include cold users and new items
    catalogue: pl.DataFrame  # per item index: item_id, title, genres, num_interactions
    user_features: SideFeatures  # rows aligned with interactions.users (ID field at least)
    item_features: SideFeatures


def load_dataset(config: Config) -> Dataset:
    """Interactions from the configured source, or the seeded demo data when none is set."""
    src = config.source
    if src.interactions:
        interactions = load_interactions(
            src.interactions, config.columns, config.data, src.delimiter
        )
        user_table = (
            read_feature_table(src.user_features, config.columns.user, "user")
            if src.user_features
            else None
        )
        item_table = (
            read_feature_table(src.item_features, config.columns.item, "item")
            if src.item_features
            else None
        )
    else:
        demo = synthetic.demo(
            src.demo_users, src.demo_items, src.demo_interactions_per_user, config.training.seed
        )
        interactions = interactions_from_frame(
            demo.interactions, DEMO_SOURCE, ColumnsConfig(), config.data
        )
        user_table = demo.user_features.rename({"user_id": "id"})
        item_table = demo.item_features.rename({"item_id": "id"})
    check_positives(interactions, config.data.positive_threshold)
    specs = {
        "user": src.user_features or "demo user features",
        "item": src.item_features or "demo item features",
    }
    for side, ids, table in (
        ("user", interactions.users, user_table),
        ("item", interactions.items, item_table),
    ):
        if table is not None:
            check_overlap(table, ids, specs[side], side)
    extra_users = [
        t["id"]
        for t in (user_table, read_users_to_score(src.users_to_score, config))
        if t is not None
    ]
    extra_items = [item_table["id"]] if item_table is not None else []
    interactions = widen(interactions, extra_users, extra_items)
    sides = []
    for side, ids, table in (
        ("user", interactions.users, user_table),
        ("item", interactions.items, item_table),
    ):
        kinds = (
            configured_kinds(table, config.features, side, specs[side]) if table is not None else {}
        )
        active = np.bincount(interactions.frame[f"{side}_idx"].to_numpy(), minlength=len(ids)) > 0
        sides.append(encode_side(ids, table, kinds, config.features, side, active=active))
    return Dataset(interactions, catalogue(interactions, item_table), *sides)


def check_positives(interactions: Interactions, threshold: float) -> None:
    """Refuse data where no rating counts as positive: every ranking model and metric would
    learn and measure nothing (validation NDCG 0), yet the run would look like it worked."""
    if threshold <= 0 or not interactions.has_ratings:
        return
    best = float(interactions.frame["rating"].max())
    if best < threshold:
        raise DataError(
            f"{interactions.source}: no rating reaches data.positive_threshold = {threshold:g} "
            f"(the highest is {best:g}), so there would be no positive interactions; lower it"
        )


def read_users_to_score(spec: str, config: Config) -> pl.DataFrame | None:
    """Users to give a list even without interactions or features (the popularity fallback)."""
    if not spec:
        return None
    frame, source = read_table(spec)
    column = config.columns.user
    if column not in frame.columns:
        raise DataError(
            f"{source.label}: column '{column}' missing (found: {', '.join(frame.columns)}); set columns.user in recsys.toml"
        )
    return pl.DataFrame({"id": parse_ids(frame[column], source.label, column)})


def widen(
    interactions: Interactions, extra_users: list[pl.Series], extra_items: list[pl.Series]
) -> Interactions:
    """The same interactions over vocabularies that also hold `extra_*` IDs."""
    if not extra_users and not extra_items:
        log.info("%s: %d interactions, %d users, %d items", interactions.source, len(interactions),
                 interactions.num_users, interactions.num_items)  # fmt: skip
        return interactions
    users = _union(interactions.users, extra_users, interactions.source, "user")
    items = _union(interactions.items, extra_items, interactions.source, "item")
    frame = interactions.frame.with_columns(
        users.encode(interactions.users.decode(interactions.frame["user_idx"].to_numpy())).alias(
            "user_idx"
        ),
        items.encode(interactions.items.decode(interactions.frame["item_idx"].to_numpy())).alias(
            "item_idx"
        ),
    )
    log.info(
        "%s: %d interactions, %d users (%d without interactions), %d items (%d without interactions)",
        interactions.source, len(interactions), len(users), len(users) - interactions.num_users,
        len(items), len(items) - interactions.num_items,
    )  # fmt: skip
    return Interactions(
        frame, users, items, interactions.has_ratings, interactions.source, interactions.has_time
    )


def _union(ids: IdMap, extra: list[pl.Series], source: str, side: str) -> IdMap:
    series = [ids.ids]
    for more in extra:
        cast = more.cast(ids.dtype, strict=False)
        if cast.null_count() > more.null_count():
            bad = more.filter(cast.is_null() & more.is_not_null())[0]
            raise DataError(
                f"{side} ID {bad!r} is text but {source} has integer {side} IDs; the tables must use the same IDs"
            )
        series.append(cast.drop_nulls())
    return IdMap(pl.concat(series))


def check_overlap(table: pl.DataFrame, ids: IdMap, spec: str, side: str) -> None:
    """A feature table must describe the interactions' entities: refuse one that shares no
    IDs with them (wrong file or wrong ID column)."""
    known = ids.encode(table["id"]).is_not_null()
    if not known.any():
        sample_table, sample_ids = table["id"][0], ids.ids[0]
        raise DataError(
            f"{spec}: none of its {table.height} {side} IDs appear in the interactions "
            f"(e.g. {sample_table!r} there, {sample_ids!r} in the interactions); check the file and columns.{side}"
        )


def catalogue(interactions: Interactions, item_table: pl.DataFrame | None) -> pl.DataFrame:
    """Per item index: item_id, title, genres (when the item table has them), num_interactions."""
    counts = np.bincount(
        interactions.frame["item_idx"].to_numpy(), minlength=interactions.num_items
    )
    frame = pl.DataFrame(
        {"item_id": interactions.items.ids, "num_interactions": counts.astype(np.int64)}
    )
    if item_table is not None:
        meta = item_table.select(
            pl.col("id").cast(frame["item_id"].dtype, strict=False).alias("item_id"),
            *[pl.col(c).cast(pl.String) for c in ("title", "genres") if c in item_table.columns],
        )
        frame = frame.join(meta, on="item_id", how="left", maintain_order="left")
    for column in ("title", "genres"):
        if column not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias(column))
    return frame.select("item_id", "title", "genres", "num_interactions")
