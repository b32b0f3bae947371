"""The shared form of item-item models: score(U) = X_w[U] @ B.

X_w is each user's profile (the items they interacted with, weighted by confidence and
recency; recsys.models.weighting) and B an item x item matrix learned from the interactions:
dense for EASE, the top-k neighbours of each item for item-kNN. A block of users' sparse
profiles times B gives their dense (B, I) scores, so scoring, seen-item exclusion and top-N
run through the same chunked engine as every other model.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import scipy.sparse as sp
import torch

from recsys.models import weighting
from recsys.models.base import Feedback, Recommender

# Recency and confidence settings every item-item model has (tuned with the rest).
PROFILE_DEFAULTS: dict[str, Any] = {
    # How a pair's summed weight becomes confidence: none, log, bm25 or tfidf.
    "confidence": "none",
    # Profile weights halve every `half_life` positions (or days) back in a user's history;
    # 0 = off. Used only when the data has time order; tuning also tries it off.
    "half_life": 20.0,
    "recency": "position",
}
PROFILE_SEARCH: dict[str, tuple] = {"half_life": ("half_life", 1.0, 200.0)}


class ItemItemModel(Recommender):
    """Base class: fits B from the confidence-weighted user x item matrix (`fit_items`), keeps
    the users' profiles (confidence x recency) as CSR buffers, and scores through `propagate`.
    """

    trainable: ClassVar[bool] = False

    def __init__(self, num_users: int, num_items: int, **hparams: Any) -> None:
        super().__init__(num_users, num_items, **hparams)
        weighting.check_settings(self.name, self.hparams)
        # Profiles as CSR: sizes are the data's, so loading a checkpoint resizes them.
        self.register_buffer("profile_indptr", torch.zeros(num_users + 1, dtype=torch.long))
        self.register_buffer("profile_items", torch.zeros(0, dtype=torch.long))
        self.register_buffer("profile_weights", torch.zeros(0))

    def fit_direct(self, feedback: Feedback) -> None:
        hp = self.hparams
        base = weighting.confidence(feedback, hp["confidence"])
        self.fit_items(weighting.user_item_matrix(feedback, base))
        weights = base * weighting.recency(feedback, float(hp["half_life"]), hp["recency"])
        profile = weighting.user_item_matrix(feedback, weights)
        self.profile_indptr = torch.from_numpy(profile.indptr.astype("int64"))
        self.profile_items = torch.from_numpy(profile.indices.astype("int64"))
        self.profile_weights = torch.from_numpy(profile.data)

    def fit_items(self, matrix: sp.csr_matrix) -> None:
        """Learn the item x item matrix from the (num_users, num_items) weighted data."""
        raise NotImplementedError

    def propagate(self, rows: torch.Tensor, items: torch.Tensor, weights: torch.Tensor,
                  num_rows: int) -> torch.Tensor:  # fmt: skip
        """Scores (num_rows, num_items) of profiles given as entries (row, item, weight)."""
        raise NotImplementedError

    def profile_entries(self, user_idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The profiles of `user_idx` (B,) as entries (row in the block, item, weight)."""
        starts = self.profile_indptr[user_idx]
        lengths = self.profile_indptr[user_idx + 1] - starts
        rows = torch.repeat_interleave(torch.arange(len(user_idx), device=starts.device), lengths)
        offsets = torch.arange(int(lengths.sum()), device=starts.device)
        positions = starts[rows] + offsets - (torch.cumsum(lengths, 0) - lengths)[rows]
        return rows, self.profile_items[positions], self.profile_weights[positions]

    def score_block(self, user_idx: torch.Tensor) -> torch.Tensor:
        rows, items, weights = self.profile_entries(user_idx)
        return self.propagate(rows, items, weights, len(user_idx))  # (B, I)

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        distinct, inverse = torch.unique(user_idx, return_inverse=True)
        return self.score_block(distinct)[inverse, item_idx]  # (B,)

    def fallback(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """An unknown user has an empty profile; an unknown item is in no one's: score 0."""
        known = (user_idx >= 0) & (item_idx >= 0)
        out = torch.zeros(user_idx.shape, device=user_idx.device)
        if bool(known.any()):
            out[known] = self(user_idx[known], item_idx[known])
        return out

    @property
    def has_item_matrix(self) -> bool:
        return True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        # Buffers sized by the data (profiles, neighbour lists) take the checkpoint's shape.
        for name, buffer in list(self._buffers.items()):
            saved = state_dict.get(prefix + name)
            if buffer is not None and saved is not None and saved.shape != buffer.shape:
                self._buffers[name] = torch.empty_like(saved, device=buffer.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def sparse_rows(
    rows: torch.Tensor, items: torch.Tensor, weights: torch.Tensor, shape: tuple[int, int]
) -> torch.Tensor:
    """Profile entries (sorted by row) as a sparse CSR tensor of `shape`."""
    counts = torch.bincount(rows, minlength=shape[0])
    crow = torch.zeros(shape[0] + 1, dtype=torch.long, device=rows.device)
    torch.cumsum(counts, 0, out=crow[1:])
    with warnings.catch_warnings():  # torch marks sparse CSR as beta, once per process
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, items, weights, shape, check_invariants=False)
