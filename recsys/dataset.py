"""Everything a run learns from: interactions, side features and the item catalogue, from the
configured sources or the seeded demo data."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import polars as pl

from recsys import synthetic
from recsys.config import ColumnsConfig, Config
from recsys.data.features import SideFeatures, configured_kinds, encode_side, read_feature_table
from recsys.data.idmap import IdMap
from recsys.data.interactions import Interactions, interactions_from_frame, load_interactions
from recsys.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class Dataset:
    interactions: Interactions
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
            demo.interactions, "demo data", ColumnsConfig(), config.data
        )
        user_table = demo.user_features.rename({"user_id": "id"})
        item_table = demo.item_features.rename({"item_id": "id"})
    log.info("%s: %d interactions, %d users, %d items", interactions.source, len(interactions),
             interactions.num_users, interactions.num_items)  # fmt: skip
    sides = []
    for side, ids, table, spec in (
        ("user", interactions.users, user_table, src.user_features or "demo user features"),
        ("item", interactions.items, item_table, src.item_features or "demo item features"),
    ):
        kinds = {}
        if table is not None:
            check_overlap(table, ids, spec, side)
            kinds = configured_kinds(table, config.features, side, spec)
        sides.append(encode_side(ids, table, kinds, config.features, side))
    return Dataset(interactions, catalogue(interactions, item_table), *sides)


def check_overlap(table: pl.DataFrame, ids: IdMap, spec: str, side: str) -> None:
    """A feature table must describe the interactions' entities: refuse one that shares no
    IDs with them (wrong file or wrong ID column); count partial coverage in the log."""
    known = ids.encode(table["id"]).is_not_null()
    if not known.any():
        sample_table, sample_ids = table["id"][0], ids.ids[0]
        raise DataError(
            f"{spec}: none of its {table.height} {side} IDs appear in the interactions "
            f"(e.g. {sample_table!r} there, {sample_ids!r} in the interactions); check the file and columns.{side}"
        )
    missing = len(ids) - int(known.sum())
    if missing:
        log.info(
            "%s: %d of %d %ss with interactions have no feature row (unknown values used)",
            spec,
            missing,
            len(ids),
            side,
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
