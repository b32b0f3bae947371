"""Interactions: load and validate (user, item, rating, timestamp) rows, encode IDs, CSR views."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

import numpy as np
import polars as pl

from recsys.config import ColumnsConfig, DataConfig
from recsys.data.idmap import IdMap
from recsys.data.tables import read_table
from recsys.errors import DataError

log = logging.getLogger(__name__)

# Text IDs read as integers: no sign but '-', no leading zeros, no "-0" (it would merge with
# "0"), at most 18 digits (always within Int64).
CANONICAL_INT = re.compile(r"^(0|-?[1-9][0-9]{0,17})$")
# MovieLens "latest" ratings.csv header, mapped without configuration.
MOVIELENS_LATEST = {
    "userId": "user",
    "movieId": "item",
    "rating": "rating",
    "timestamp": "timestamp",
}
FUTURE_TOLERANCE_S = 86_400
ISO_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S",
               "%Y-%m-%dT%H:%M", "%Y-%m-%d")  # fmt: skip
# With a UTC offset (a trailing Z is read as +00:00), as the job's own logs write them.
ISO_ZONED_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z", "%Y-%m-%dT%H:%M%z")


@dataclass
class Interactions:
    """Encoded interactions. `frame` has user_idx, item_idx (Int32), rating (Float32),
    timestamp (Int64 seconds), weight (Float32); one row per (user, item): the latest rating
    and timestamp, and the weights of repeated rows summed (each row weighs 1 without a
    weight column). `has_time`: timestamps are real time (a timestamp column, or file order
    declared chronological); else they are only the file order."""

    frame: pl.DataFrame
    users: IdMap
    items: IdMap
    has_ratings: bool
    source: str
    has_time: bool = True

    @property
    def num_users(self) -> int:
        return len(self.users)

    @property
    def num_items(self) -> int:
        return len(self.items)

    def __len__(self) -> int:
        return self.frame.height

    def with_frame(self, frame: pl.DataFrame) -> Interactions:
        """Same vocabularies, other rows (for splits): indices stay comparable."""
        return Interactions(
            frame, self.users, self.items, self.has_ratings, self.source, self.has_time
        )

    def recency(self) -> tuple[np.ndarray, np.ndarray]:
        """Per row of `frame`: (position, age) within its user's history, by timestamp; the
        latest interaction has position 0 and age 0, the one before position 1 and age in
        seconds since it. Equal timestamps share the smaller position. Zeros when
        `has_time` is false: file order then says nothing about time."""
        if not self.has_time:
            zeros = np.zeros(self.frame.height, dtype=np.float32)
            return zeros, zeros
        ranked = self.frame.select(
            (pl.col("timestamp").rank("min", descending=True).over("user_idx") - 1).alias("pos"),
            (pl.col("timestamp").max().over("user_idx") - pl.col("timestamp")).alias("age"),
        )
        return (
            ranked["pos"].to_numpy().astype(np.float32),
            ranked["age"].to_numpy().astype(np.float32),
        )

    def csr(self) -> tuple[np.ndarray, np.ndarray]:
        """(indptr (num_users+1,) int64, indices (nnz,) int32): items each user has, sorted."""
        ordered = self.frame.select("user_idx", "item_idx").sort("user_idx", "item_idx")
        counts = np.bincount(ordered["user_idx"].to_numpy(), minlength=self.num_users)
        indptr = np.zeros(self.num_users + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return indptr, ordered["item_idx"].to_numpy().astype(np.int32, copy=False)

    def positives(self, threshold: float) -> Interactions:
        """Rows counted as positive feedback (rating >= threshold; all rows when 0)."""
        if threshold <= 0 or not self.has_ratings:
            return self
        return self.with_frame(self.frame.filter(pl.col("rating") >= threshold))


def load_interactions(
    spec: str, columns: ColumnsConfig, data: DataConfig, delimiter: str = ""
) -> Interactions:
    """Read `spec` (see tables.parse_source), validate it, and encode the IDs."""
    raw, source = read_table(spec, delimiter)
    return interactions_from_frame(
        raw, source.label, columns, data, layout_fixed=source.kind in ("u.data", "ratings.dat")
    )


def interactions_from_frame(
    raw: pl.DataFrame,
    label: str,
    columns: ColumnsConfig,
    data: DataConfig,
    layout_fixed: bool = False,
) -> Interactions:
    """Validate a raw frame into Interactions; every error names `label` and the column."""
    names = _resolve_columns(raw, label, columns, layout_fixed)
    if raw.height == 0:
        raise DataError(f"{label}: no rows (expected at least one interaction)")
    user = parse_ids(raw[names["user"]], label, names["user"])
    item = parse_ids(raw[names["item"]], label, names["item"])
    has_ratings = "rating" in names
    rating = (
        _parse_ratings(raw[names["rating"]], label, names["rating"], data)
        if has_ratings
        else pl.Series("rating", np.ones(raw.height, dtype=np.float32))
    )
    timestamp = (
        parse_timestamps(raw[names["timestamp"]], label, names["timestamp"])
        if "timestamp" in names
        else pl.Series("timestamp", np.arange(raw.height, dtype=np.int64))  # file order
    )
    weight = (
        _parse_weights(raw[names["weight"]], label, names["weight"])
        if "weight" in names
        else pl.Series("weight", np.ones(raw.height, dtype=np.float32))
    )
    users, items = IdMap(user), IdMap(item)
    pair = ["user_idx", "item_idx"]
    frame = (
        pl.DataFrame(
            {
                "user_idx": users.encode(user),
                "item_idx": items.encode(item),
                "rating": rating.cast(pl.Float32),
                "timestamp": timestamp.cast(pl.Int64),
                "weight": weight.cast(pl.Float32),
                "row": np.arange(raw.height, dtype=np.int64),
            }
        )
        .sort("timestamp", "row")
        .with_columns(pl.col("weight").sum().over(pair))
        .unique(pair, keep="last", maintain_order=True)
        .drop("row")
    )
    if frame.height < raw.height:
        log.info(
            "%s: %d repeated (user, item) rows merged: latest rating and time kept, weights added",
            label,
            raw.height - frame.height,
        )
    has_time = "timestamp" in names or data.order_is_time
    if not has_time:
        log.info(
            "%s: no '%s' column and data.order_is_time is off: validation holds out a random "
            "sample of each user's interactions, and recency weighting is off",
            label,
            columns.timestamp,
        )
    return Interactions(frame, users, items, has_ratings, label, has_time)


def _resolve_columns(
    raw: pl.DataFrame, label: str, columns: ColumnsConfig, layout_fixed: bool
) -> dict[str, str]:
    """Map roles (user, item, rating, timestamp) to the frame's column names."""
    if layout_fixed:
        return {"user": "user_id", "item": "item_id", "rating": "rating", "timestamp": "timestamp"}
    if set(MOVIELENS_LATEST) <= set(raw.columns) and columns.user not in raw.columns:
        return {role: name for name, role in MOVIELENS_LATEST.items()}
    found = ", ".join(raw.columns)
    names: dict[str, str] = {}
    for role in ("user", "item", "rating", "timestamp", "weight"):
        wanted = getattr(columns, role)
        if wanted in raw.columns:
            if raw[wanted].null_count() == raw.height and raw.height > 0:
                raise DataError(
                    f"{label}: column '{wanted}' is entirely NULL (expected {role} values)"
                )
            names[role] = wanted
        elif role in ("user", "item"):
            raise DataError(
                f"{label}: column '{wanted}' missing (found: {found}); set columns.{role} in recsys.toml"
            )
        elif role == "rating" and wanted != ColumnsConfig.rating:
            raise DataError(
                f"{label}: rating column '{wanted}' missing (found: {found}); fix columns.rating in recsys.toml"
            )
    if "rating" not in names:
        log.info("%s: no '%s' column; every row is an implicit positive", label, columns.rating)
    return names


def parse_ids(values: pl.Series, label: str, column: str) -> pl.Series:
    """Raw IDs as given: integers stay integers (Int64), anything else stays text.

    Text that is all canonical integers (no leading zeros, no '+', no '-0') becomes Int64;
    "007" or "-0" keeps the column as text so every ID comes out unchanged. Whole-number
    floats are integers; NaN, infinities, fractions, booleans, lists and bytes that are not
    UTF-8 are refused with the row.
    """
    values = _as_id_type(values, label, column)
    nulls = values.null_count()
    if values.dtype == pl.String:
        nulls = (values.is_null() | (values.str.strip_chars() == "")).sum()
    if nulls:
        first = _first_row(values.is_null() | (values.cast(pl.String).str.strip_chars() == ""))
        raise DataError(
            f"{label}: column '{column}' has {nulls} empty or NULL values (first at row {first}); every row needs an ID"
        )
    if values.dtype.is_integer():
        if values.dtype == pl.UInt64 and values.max() > MAX_INT_ID:
            return values.cast(pl.String).rename("id")  # beyond Int64: kept, as text
        return values.cast(pl.Int64).rename("id")
    if values.dtype.is_float():
        bad = ~values.is_finite() | (values != values.floor()) | (values.abs() > MAX_FLOAT_ID)
        if bad.any():
            row = _first_row(bad)
            raise DataError(
                f"{label}: column '{column}' row {row}: ID {values[row - 1]} is not a whole "
                "number within ±2^53 (store IDs as integers or text)"
            )
        return values.cast(pl.Int64).rename("id")
    text = values.str.strip_chars()
    if text.str.contains(CANONICAL_INT.pattern).all():
        return text.cast(pl.Int64).rename("id")
    return text.rename("id")


# Float IDs must convert to Int64 exactly: up to 2^53 every whole float is one integer.
MAX_FLOAT_ID = 2.0**53
MAX_INT_ID = 2**63 - 1


def _as_id_type(values: pl.Series, label: str, column: str) -> pl.Series:
    """Integers, floats or text; bytes decoded as UTF-8 (refused, with the row, when they are
    not); categories and decimals as text. Anything else cannot be an ID."""
    dtype = values.dtype
    if dtype.is_integer() or dtype.is_float() or dtype in (pl.String, pl.Null):
        return values
    if dtype == pl.Binary:
        try:
            return values.cast(pl.String)
        except pl.exceptions.ComputeError:
            row = next(
                i for i, v in enumerate(values.to_list(), 1) if v is not None and not _utf8(v)
            )
            raise DataError(
                f"{label}: column '{column}' row {row}: ID {values[row - 1]!r} is not UTF-8 text"
            ) from None
    if dtype in (pl.Categorical, pl.Enum) or (dtype.is_decimal() and dtype.scale == 0):
        return values.cast(pl.String)
    raise DataError(f"{label}: column '{column}' has type {dtype}; expected integer or text IDs")


def _utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _parse_ratings(values: pl.Series, label: str, column: str, data: DataConfig) -> pl.Series:
    numbers = values.cast(pl.Float64, strict=False) if values.dtype != pl.Float64 else values
    if values.dtype == pl.String:
        numbers = values.str.strip_chars().cast(pl.Float64, strict=False)
    bad = numbers.is_null() | numbers.is_nan()
    if bad.any():
        row = _first_row(bad)
        raise DataError(
            f"{label}: column '{column}' row {row}: expected a number, found {_show(values[row - 1])}"
        )
    outside = (numbers < data.min_rating) | (numbers > data.max_rating)
    if outside.any():
        row = _first_row(outside)
        raise DataError(
            f"{label}: column '{column}' row {row}: rating {numbers[row - 1]:g} outside "
            f"[{data.min_rating:g}, {data.max_rating:g}]; set data.min_rating/max_rating in recsys.toml"
        )
    return numbers


def _parse_weights(values: pl.Series, label: str, column: str) -> pl.Series:
    """Non-negative finite numbers (counts, durations); refused otherwise, naming the row."""
    numbers = values.str.strip_chars() if values.dtype == pl.String else values
    numbers = numbers.cast(pl.Float64, strict=False)
    bad = numbers.is_null() | ~numbers.is_finite() | (numbers < 0)
    if bad.any():
        row = _first_row(bad)
        raise DataError(
            f"{label}: column '{column}' row {row}: expected a non-negative number (a count or "
            f"weight), found {_show(values[row - 1])}"
        )
    return numbers.rename("weight")


def parse_timestamps(values: pl.Series, label: str, column: str) -> pl.Series:
    """Unix seconds (integers) or ISO-8601 date/times, with `Z` or a UTC offset or none (then
    UTC); refused when NULL, unparsable or in the future."""
    if values.dtype == pl.String:
        text = values.str.strip_chars()
        seconds = text.cast(pl.Int64, strict=False)
        zoned = text.str.replace(r"[Zz]$", "+00:00")
        for fmt, column_text in [*((f, text) for f in ISO_FORMATS),
                                 *((f, zoned) for f in ISO_ZONED_FORMATS)]:  # fmt: skip
            if seconds.null_count() == 0:
                break
            parsed = column_text.str.to_datetime(fmt, strict=False, time_unit="us")
            seconds = seconds.fill_null(parsed.dt.epoch("s"))
    elif values.dtype.is_temporal():
        seconds = values.cast(pl.Datetime("us")).dt.epoch("s")
    elif values.dtype.is_numeric():
        seconds = values.cast(pl.Int64, strict=False)
    else:
        raise DataError(
            f"{label}: column '{column}' has type {values.dtype}; expected Unix seconds or ISO date/times"
        )
    bad = seconds.is_null()
    if bad.any():
        row = _first_row(bad)
        raise DataError(
            f"{label}: column '{column}' row {row}: expected Unix seconds or an ISO date/time, found {_show(values[row - 1])}"
        )
    now = int(time.time())
    future = seconds > now + FUTURE_TOLERANCE_S
    if future.any():
        row = _first_row(future)
        raise DataError(
            f"{label}: column '{column}' row {row}: timestamp {_show(values[row - 1])} is in the "
            f"future{_unit_hint(int(seconds[row - 1]), now)}"
        )
    return seconds.rename("timestamp")


def _unit_hint(value: int, now: int) -> str:
    """Why a timestamp may look like the future: epochs in ms, us or ns are 10^3.. larger."""
    for unit, scale in (("milliseconds", 10**3), ("microseconds", 10**6), ("nanoseconds", 10**9)):
        if value // scale <= now + FUTURE_TOLERANCE_S and value // scale >= 10**8:
            return f" (it looks like Unix {unit}: timestamps must be Unix seconds; divide by {scale:,})"
    return ""


def _first_row(mask: pl.Series) -> int:
    """1-based row number (after any header) of the first True."""
    return int(mask.arg_true()[0]) + 1


def _show(value: object) -> str:
    return "NULL" if value is None else repr(value)
