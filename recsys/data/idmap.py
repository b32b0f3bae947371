"""ID vocabularies: raw IDs as the source has them <-> contiguous model indices.

The vocabulary is sorted, so index order is raw-ID order and output written in index order
is already sorted by ID.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa


class IdMap:
    """Sorted unique raw IDs (Int64 or String); `idx` of an ID is its position."""

    def __init__(self, ids: pl.Series) -> None:
        self.ids = ids.unique().sort().rename("id")
        self._lookup = pl.DataFrame(
            {"id": self.ids, "idx": np.arange(len(self.ids), dtype=np.int32)}
        )

    @classmethod
    def from_list(cls, ids: list) -> IdMap:
        return cls(pl.Series("id", ids))

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dtype(self) -> pl.DataType:
        return self.ids.dtype

    def encode(self, ids: pl.Series) -> pl.Series:
        """Indices of `ids` (Int32), null where the ID is unknown."""
        probe = pl.DataFrame({"id": ids.cast(self.ids.dtype, strict=False)})
        return probe.join(self._lookup, on="id", how="left", maintain_order="left")["idx"]

    def decode(self, idx: np.ndarray) -> pl.Series:
        return self.ids.gather(idx)

    def decode_arrow(self, idx: np.ndarray) -> pa.Array:
        return self.ids.to_arrow().take(pa.array(idx))

    def to_list(self) -> list:
        return self.ids.to_list()
