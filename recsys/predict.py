"""Predictions for given (user, item) pairs from a checkpoint: every input row gets one
output row, unknown users or items the model's fallback."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl
import torch

from recsys.checkpoint import TrainedModel
from recsys.config import ColumnsConfig, DataConfig
from recsys.data.interactions import parse_ids
from recsys.data.tables import read_table
from recsys.errors import DataError
from recsys.evaluate import predict_pairs, probabilities

log = logging.getLogger(__name__)


def predict_file(
    trained: TrainedModel,
    pairs: str,
    out: str | Path,
    columns: ColumnsConfig,
    data: DataConfig,
    device: torch.device,
) -> pl.DataFrame:
    """Read pairs (CSV/Parquet/DuckDB, columns.user and columns.item), write Parquet with
    user_id, item_id, prediction: ratings clipped to the configured range for rating models
    (loss mse), probabilities of rating >= data.positive_threshold for click-through models
    (loss logloss: the sigmoid of their logits), scores otherwise."""
    frame, source = read_table(pairs)
    for role in ("user", "item"):
        name = getattr(columns, role)
        if name not in frame.columns:
            raise DataError(
                f"{source.label}: column '{name}' missing (found: {', '.join(frame.columns)}); set columns.{role} in recsys.toml"
            )
    if frame.height == 0:
        raise DataError(f"{source.label}: no rows (expected user, item pairs)")
    users = parse_ids(frame[columns.user], source.label, columns.user)
    items = parse_ids(frame[columns.item], source.label, columns.item)
    user_idx = trained.users.encode(users).fill_null(-1).to_numpy().astype(np.int64)
    item_idx = trained.items.encode(items).fill_null(-1).to_numpy().astype(np.int64)
    unknown = int(((user_idx < 0) | (item_idx < 0)).sum())
    if unknown:
        log.info(
            "%s: %d of %d pairs have an unknown user or item (model fallback used)",
            source.label,
            unknown,
            len(user_idx),
        )
    predictions = predict_pairs(trained.model, user_idx, item_idx, device)
    if trained.model.predicts_ratings:
        predictions = np.clip(predictions, data.min_rating, data.max_rating)
    elif trained.model.predicts_probabilities:
        predictions = probabilities(predictions)
    result = pl.DataFrame(
        {"user_id": users, "item_id": items, "prediction": predictions.astype(np.float32)}
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    result.write_parquet(tmp)
    tmp.replace(out)
    return result
