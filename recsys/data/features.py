"""Side features (user age, occupation, item genres, ...) encoded as field-aware index bags.

Each side (users or items) becomes an (N, F, S) array of feature ids plus weights: N entities,
F fields (the entity's own ID first), S slots per field (1 for single-valued fields, up to
the longest bag for multi-valued ones such as genres, weights 1/len). Slot id 0 of every field
is the shared "unknown" value: NULLs, empty bags and values unseen at training time map there.
Numeric fields are bucketed at training-data quantiles.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from recsys.config import FeaturesConfig
from recsys.data.idmap import IdMap
from recsys.data.interactions import parse_ids
from recsys.data.tables import read_table
from recsys.errors import ConfigError, DataError

log = logging.getLogger(__name__)

KINDS = ("categorical", "multi", "numeric")
# Auto-detection: text columns with at most this share of distinct values are categorical.
MAX_CATEGORICAL_SHARE = 0.5
MAX_CATEGORICAL_VALUES = 1000
MIN_CATEGORICAL_VALUES = 20  # small tables: up to this many values is categorical anyway


@dataclass
class FieldVocab:
    """One field: its kind and known values (index 0 = unknown)."""

    name: str
    kind: str  # id, categorical, multi, numeric
    values: list[str] = field(default_factory=list)  # categorical / multi
    edges: list[float] = field(default_factory=list)  # numeric bucket edges
    count: int = 0  # id: number of entities

    @property
    def size(self) -> int:
        if self.kind == "id":
            return self.count + 1
        if self.kind == "numeric":
            return len(self.edges) + 2  # unknown + len(edges)+1 buckets
        return len(self.values) + 1


@dataclass
class SideFeatures:
    """Encoded features of one side, rows aligned with that side's IdMap."""

    fields: list[FieldVocab]
    index: np.ndarray  # (N, F, S) int64 ids into one embedding table of num_features rows
    weight: np.ndarray  # (N, F, S) float32, 0 on padding

    @property
    def num_features(self) -> int:
        return sum(f.size for f in self.fields)

    @property
    def offsets(self) -> list[int]:
        return list(np.cumsum([0] + [f.size for f in self.fields])[:-1])

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]


def read_feature_table(spec: str, id_column: str, side: str, delimiter: str = "") -> pl.DataFrame:
    """Read a user or item feature table; its ID column is renamed to `id`, parsed like
    interaction IDs, and must be unique."""
    frame, source = read_table(spec, delimiter)
    if source.kind in ("u.user", "users.dat"):
        id_column = "user_id"
    elif source.kind in ("u.item", "movies.dat"):
        id_column = "item_id"
    if id_column not in frame.columns:
        raise DataError(
            f"{source.label}: column '{id_column}' missing (found: {', '.join(frame.columns)}); "
            f"set columns.{side} in recsys.toml"
        )
    ids = parse_ids(frame[id_column], source.label, id_column)
    duplicated = ~ids.is_first_distinct()
    if duplicated.any():
        row = int(duplicated.arg_true()[0]) + 1
        raise DataError(
            f"{source.label}: {side} {ids[row - 1]!r} appears more than once (row {row}); each {side} needs one row"
        )
    return frame.with_columns(ids.alias(id_column)).rename({id_column: "id"})


def detect_kinds(frame: pl.DataFrame, separator: str) -> dict[str, str]:
    """Guess each non-ID column's kind; ID-like text (titles, zip codes) is left out."""
    kinds = {}
    for name in frame.columns:
        if name == "id":
            continue
        column = frame[name]
        if column.dtype.is_numeric():
            kinds[name] = "numeric"
            continue
        text = column.cast(pl.String).drop_nulls()
        if text.len() == 0:
            continue
        if text.str.contains(separator, literal=True).mean() > 0.05:
            kinds[name] = "multi"
        elif text.cast(pl.Float64, strict=False).null_count() == 0:
            kinds[name] = "numeric"
        elif text.n_unique() <= min(
            MAX_CATEGORICAL_VALUES, max(MIN_CATEGORICAL_VALUES, MAX_CATEGORICAL_SHARE * text.len())
        ):
            kinds[name] = "categorical"
    return kinds


def configured_kinds(
    frame: pl.DataFrame, config: FeaturesConfig, side: str, label: str
) -> dict[str, str]:
    lists = {kind: getattr(config, f"{side}_{kind}") for kind in KINDS}
    if not any(lists.values()):
        kinds = detect_kinds(frame, config.separator)
        log.info(
            "%s features detected: %s",
            side,
            ", ".join(f"{c} ({k})" for c, k in kinds.items()) or "none",
        )
        return kinds
    kinds = {}
    for kind, columns in lists.items():
        for column in columns:
            if column not in frame.columns:
                raise DataError(
                    f"{label}: feature column '{column}' missing (found: {', '.join(frame.columns)}); "
                    f"fix features.{side}_{kind} in recsys.toml"
                )
            kinds[column] = kind
    return kinds


def encode_side(
    ids: IdMap,
    table: pl.DataFrame | None,
    kinds: dict[str, str],
    config: FeaturesConfig,
    side: str,
    vocab: list[FieldVocab] | None = None,
    active: np.ndarray | None = None,
) -> SideFeatures:
    """Encode `table` for the entities of `ids` (one row per entity, in index order).

    Without `vocab` the value vocabularies are learned from `table` (training); with it,
    values not in it map to the unknown slot (scoring new data with an old model).
    Entities missing from the table get unknown values; table rows for other IDs are ignored.
    `active` marks entities with interactions; the others (cold users, new items) get no ID
    field (weight 0), since their ID vector was never trained: they are their features.
    """
    n = len(ids)
    fields = [FieldVocab(f"{side}_id", "id", count=n)]
    columns: list[np.ndarray | list[list[int]]] = [np.arange(1, n + 1)]  # index+1 (0 = unknown)
    aligned = None
    if table is not None and kinds:
        idx = ids.encode(table["id"])
        unknown = int(idx.null_count())
        if unknown:
            log.info(
                "%s features: %d rows for %ss without interactions ignored", side, unknown, side
            )
        aligned = (
            pl.DataFrame({"idx": np.arange(n, dtype=np.int32)})
            .join(table.with_columns(idx.alias("idx")).drop_nulls("idx"), on="idx", how="left")
            .sort("idx")
        )
    known = {f.name: f for f in vocab} if vocab else {}
    for name, kind in kinds.items():
        values = aligned[name] if aligned is not None else pl.Series([None] * n)
        field_vocab = known.get(name) or _learn_vocab(name, kind, values, config)
        fields.append(field_vocab)
        columns.append(_encode_values(field_vocab, values, config.separator))
    packed = _pack(fields, columns)
    if active is not None:
        packed.weight[~active, 0, :] = 0.0
    return packed


def _learn_vocab(name: str, kind: str, values: pl.Series, config: FeaturesConfig) -> FieldVocab:
    if kind == "numeric":
        numbers = values.cast(pl.Float64, strict=False).drop_nulls().drop_nans().to_numpy()
        if numbers.size == 0:
            return FieldVocab(name, kind, edges=[])
        qs = np.quantile(numbers, np.linspace(0, 1, config.numeric_buckets + 1)[1:-1])
        return FieldVocab(name, kind, edges=sorted(set(float(q) for q in qs)))
    if kind == "multi":
        tokens = values.cast(pl.String).str.split(config.separator).explode().str.strip_chars()
        return FieldVocab(name, kind, values=sorted(set(tokens.drop_nulls().to_list()) - {""}))
    if kind == "categorical":
        return FieldVocab(
            name, kind, values=sorted(set(values.cast(pl.String).drop_nulls().to_list()))
        )
    raise ConfigError(
        f"feature '{name}': unknown kind '{kind}' (expected one of: {', '.join(KINDS)})"
    )


def _encode_values(
    vocab: FieldVocab, values: pl.Series, separator: str
) -> np.ndarray | list[list[int]]:
    """Field-local slot ids (0 = unknown): an (N,) array for single-valued fields, a bag
    per entity for multi-valued ones."""
    if vocab.kind == "numeric":
        numbers = values.cast(pl.Float64, strict=False).fill_nan(None).to_numpy().astype(np.float64)
        buckets = np.searchsorted(np.asarray(vocab.edges), numbers, side="right") + 1
        buckets[~np.isfinite(numbers)] = 0
        return buckets
    # Typed, so that an empty vocabulary (every value NULL among these entities) still joins.
    lookup = pl.DataFrame(
        {"value": vocab.values, "slot": np.arange(1, len(vocab.values) + 1)},
        schema={"value": pl.String, "slot": pl.Int64},
    )
    if vocab.kind == "categorical":
        probe = pl.DataFrame({"value": values.cast(pl.String)})
        return (
            probe.join(lookup, on="value", how="left", maintain_order="left")["slot"]
            .fill_null(0)
            .to_numpy()
        )
    bags = (
        pl.DataFrame(
            {"row": np.arange(len(values)), "value": values.cast(pl.String).str.split(separator)}
        )
        .explode("value")
        .with_columns(pl.col("value").str.strip_chars())
        .filter(pl.col("value").is_not_null() & (pl.col("value") != ""))
        .join(lookup, on="value", how="left")
        .group_by("row")
        .agg(pl.col("slot").fill_null(0))
    )
    out: list[list[int]] = [[0] for _ in range(len(values))]  # an empty bag is one unknown value
    for row, slots in zip(bags["row"].to_list(), bags["slot"].to_list(), strict=True):
        out[row] = slots
    return out


def _pack(fields: list[FieldVocab], columns: list[np.ndarray | list[list[int]]]) -> SideFeatures:
    n = fields[0].count
    slots = max([1] + [len(b) for c in columns if isinstance(c, list) for b in c])
    index = np.zeros((n, len(fields), slots), dtype=np.int64)
    weight = np.zeros((n, len(fields), slots), dtype=np.float32)
    offset = 0
    for f, (vocab, column) in enumerate(zip(fields, columns, strict=True)):
        index[:, f, :] = offset  # padding points at the field's unknown slot, weight 0
        if isinstance(column, np.ndarray):
            index[:, f, 0] = column + offset
            weight[:, f, 0] = 1.0
        else:
            for row, bag in enumerate(column):
                index[row, f, : len(bag)] = np.asarray(bag) + offset
                weight[row, f, : len(bag)] = 1.0 / len(bag)
        offset += vocab.size
    return SideFeatures(fields, index, weight)
