"""EASE: an item-item model in closed form (Steck, "Embarrassingly Shallow Autoencoders for
Sparse Data", WWW 2019).

B = argmin ||X - X B||^2 + reg ||B||^2 subject to diag(B) = 0 has the closed form
B = I - P diag(1 / diag P) with P = (X'X + reg I)^-1, X the confidence-weighted user x item
matrix. Scores: X_w[U] @ B with X_w the recency-weighted profiles. B is a dense I x I float32
matrix (4 I^2 bytes), hence `max_items`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from recsys.models.itemitem import PROFILE_DEFAULTS, PROFILE_SEARCH, ItemItemModel, sparse_rows


class EASE(ItemItemModel):
    name: ClassVar[str] = "ease"
    DEFAULTS: ClassVar[dict[str, Any]] = {
        **PROFILE_DEFAULTS,
        # L2 weight; scale-dependent (it competes with item counts on X'X's diagonal).
        "reg": 500.0,
        # Largest catalogue trained (B takes 4 * max_items^2 bytes: 3.6 GB at 30,000).
        "max_items": 30_000,
    }
    SEARCH_SPACE: ClassVar[dict[str, tuple]] = {
        "reg": ("log", 10.0, 10_000.0),
        **PROFILE_SEARCH,
    }

    def __init__(self, num_users: int, num_items: int, **hparams: Any) -> None:
        super().__init__(num_users, num_items, **hparams)
        # B: (I, I) once fitted (or loaded); empty until then, so building costs nothing.
        self.register_buffer("item_matrix", torch.zeros(0, 0))

    @classmethod
    def unsuitable(cls, num_users: int, num_items: int, hparams: dict[str, Any]) -> str:
        limit = int(hparams.get("max_items", cls.DEFAULTS["max_items"]))
        if num_items <= limit:
            return ""
        return (
            f"ease needs a dense {num_items:,} x {num_items:,} matrix "
            f"({4 * num_items**2 / 2**30:.1f} GiB) and the catalogue is above its max_items = "
            f"{limit:,} (raise [model.params.ease] max_items, or use itemknn)"
        )

    def fit_items(self, matrix: sp.csr_matrix) -> None:
        # float64 where it is cheap; float32 beyond (twice as fast, half the memory; reg keeps
        # X'X + reg I well conditioned).
        dtype = np.float64 if self.num_items <= 4_000 else np.float32
        gram = torch.from_numpy((matrix.T @ matrix).toarray().astype(dtype))  # (I, I)
        gram.diagonal().add_(float(self.hparams["reg"]))
        inverse = torch.cholesky_inverse(torch.linalg.cholesky(gram))  # P
        b = inverse / (-inverse.diagonal()).unsqueeze(0)  # -P_ij / P_jj
        b.fill_diagonal_(0.0)
        self.item_matrix = b.float().to(self.profile_weights.device)

    def propagate(self, rows: torch.Tensor, items: torch.Tensor, weights: torch.Tensor,
                  num_rows: int) -> torch.Tensor:  # fmt: skip
        profiles = sparse_rows(rows, items, weights, (num_rows, self.num_items))  # (B, I)
        return profiles @ self.item_matrix  # (B, I)

    def similar_items_block(self, item_idx: torch.Tensor) -> torch.Tensor:
        """Row i of B: how much having item i adds to each other item's score."""
        return self.item_matrix[item_idx]  # (B, I)
