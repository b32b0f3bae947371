"""Item-kNN: each item keeps its `neighbours` most similar items (Sarwar et al., WWW 2001;
Deshpande & Karypis, TOIS 2004), cosine similarity with shrinkage:

    s_ij = <x_i, x_j> / (|x_i| |x_j| + shrink)

over the columns x of the confidence-weighted user x item matrix (confidence = bm25 or
tfidf gives the weighted variants). Scores: X_w[U] @ S with S sparse (k per row).

Neighbours are found a chunk of items at a time, so it scales to millions of items: each
chunk's sparse products hold at most CHUNK_ENTRIES co-occurrences. Memory: the neighbour
lists, 8 bytes x neighbours x items (800 MB for 1M items and k = 100), three copies of the
interactions (about 12 bytes per interaction each: the matrix, its transpose, the profiles)
and one chunk (CHUNK_ENTRIES x BYTES_PER_ENTRY, 256 MB); benchmarks/bench_itemknn.py checks it.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from recsys.models.itemitem import PROFILE_DEFAULTS, PROFILE_SEARCH, ItemItemModel

log = logging.getLogger(__name__)

# Co-occurrence entries per chunk of items: bounds the neighbour search's scratch memory at
# about BYTES_PER_ENTRY each (the sparse product, its similarities and the per-row sort).
CHUNK_ENTRIES = 4_000_000
BYTES_PER_ENTRY = 64


class ItemKNN(ItemItemModel):
    name: ClassVar[str] = "itemknn"
    DEFAULTS: ClassVar[dict[str, Any]] = {
        **PROFILE_DEFAULTS,
        "neighbours": 100,
        "shrink": 10.0,
    }
    SEARCH_SPACE: ClassVar[dict[str, tuple]] = {
        "neighbours": ("int_log", 10, 500),
        "shrink": ("float", 0.0, 200.0),
        "confidence": ("choice", ["none", "bm25", "tfidf"]),
        **PROFILE_SEARCH,
    }

    def __init__(self, num_users: int, num_items: int, **hparams: Any) -> None:
        super().__init__(num_users, num_items, **hparams)
        # (I, k) neighbour items and similarities once fitted; padding points at the item
        # itself with similarity 0 (adds nothing, and an item is never its own neighbour).
        self.register_buffer("neighbour_items", torch.zeros(0, 0, dtype=torch.int32))
        self.register_buffer("neighbour_weights", torch.zeros(0, 0))

    def fit_items(self, matrix: sp.csr_matrix) -> None:
        items, weights = nearest_neighbours(
            matrix, int(self.hparams["neighbours"]), float(self.hparams["shrink"])
        )
        device = self.profile_weights.device
        self.neighbour_items = torch.from_numpy(items).to(device)
        self.neighbour_weights = torch.from_numpy(weights).to(device)

    def propagate(self, rows: torch.Tensor, items: torch.Tensor, weights: torch.Tensor,
                  num_rows: int) -> torch.Tensor:  # fmt: skip
        num_items = self.num_items
        out = torch.zeros(num_rows * num_items, device=weights.device)
        if self.neighbour_items.shape[1] == 0:
            return out.view(num_rows, num_items)
        targets = self.neighbour_items[items].long() + (rows * num_items).unsqueeze(1)  # (E, k)
        values = self.neighbour_weights[items] * weights.unsqueeze(1)  # (E, k)
        out.index_add_(0, targets.flatten(), values.flatten())
        return out.view(num_rows, num_items)  # (B, I)

    def similar_items_block(self, item_idx: torch.Tensor) -> torch.Tensor:
        """Each item's neighbours with their similarity; every other item -inf (not listed)."""
        out = torch.full((len(item_idx), self.num_items), float("-inf"), device=item_idx.device)
        neighbours = self.neighbour_items[item_idx].long()  # (B, k)
        out.scatter_(1, neighbours, self.neighbour_weights[item_idx])
        out[torch.arange(len(item_idx), device=item_idx.device), item_idx] = float("-inf")
        return out


def nearest_neighbours(
    matrix: sp.csr_matrix, k: int, shrink: float, chunk_entries: int = CHUNK_ENTRIES
) -> tuple[np.ndarray, np.ndarray]:
    """Top-`k` shrunk-cosine neighbours of every item of a (users, items) matrix:
    (items (I, k) int32, similarities (I, k) float32), best first."""
    num_items = matrix.shape[1]
    k = max(0, min(k, num_items - 1))
    by_item = matrix.T.tocsr()  # (I, U)
    norms = np.sqrt(np.asarray(by_item.multiply(by_item).sum(axis=1)).ravel()).astype(np.float32)
    # Entries of item i's product row: at most the summed history lengths of its users.
    history = np.diff(matrix.indptr).astype(np.float64)
    cost = (by_item != 0).astype(np.float64) @ history  # (I,)
    out_items = np.repeat(np.arange(num_items, dtype=np.int32)[:, None], k, axis=1)
    out_weights = np.zeros((num_items, k), dtype=np.float32)
    if k == 0:
        return out_items, out_weights
    bounds = _chunk_bounds(cost, chunk_entries)
    log.debug("itemknn: %d items, %d chunk(s) of neighbours", num_items, len(bounds) - 1)
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        product = (by_item[start:stop] @ matrix).tocsr()  # (C, I) dot products
        rows = np.repeat(np.arange(stop - start, dtype=np.int32), np.diff(product.indptr))
        cols = product.indices
        sims = product.data / (norms[start + rows] * norms[cols] + np.float32(shrink + 1e-12))
        sims[cols == start + rows] = -np.inf  # not its own neighbour
        order = np.lexsort((-sims, rows))  # by row, best first
        rank = np.arange(order.size) - product.indptr[rows[order]]
        wanted = (rank < k) & (sims[order] > 0)
        keep, rank = order[wanted], rank[wanted]
        out_items[start + rows[keep], rank] = cols[keep]
        out_weights[start + rows[keep], rank] = sims[keep]
    return out_items, out_weights


def _chunk_bounds(cost: np.ndarray, budget: int) -> list[int]:
    """Item boundaries so that each chunk's summed cost stays within `budget` (an item over it
    forms a chunk of its own)."""
    bounds, total = [0], 0.0
    for i, c in enumerate(cost):
        if total + c > budget and i > bounds[-1]:
            bounds.append(i)
            total = 0.0
        total += c
    bounds.append(len(cost))
    return bounds
