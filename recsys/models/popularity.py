"""Popularity baseline: every user gets the same item vector (interaction counts).

Also the cold-start fallback. Full scoring: ones(U, 1) @ counts(I, 1).T.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from recsys.models.base import Factors, Feedback, Recommender


class Popularity(Recommender):
    name: ClassVar[str] = "popularity"
    trainable: ClassVar[bool] = False
    DEFAULTS: ClassVar[dict[str, Any]] = {}

    def __init__(self, num_users: int, num_items: int, **hparams: Any) -> None:
        super().__init__(num_users, num_items, **hparams)
        self.register_buffer("counts", torch.zeros(num_items))  # (I,)

    def fit_direct(self, feedback: Feedback) -> None:
        counts = torch.bincount(feedback.item_idx.long(), minlength=self.num_items).float()
        # log1p keeps scores comparable in scale to other models; ranking is unchanged.
        self.counts.copy_(torch.log1p(counts))

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return self.counts[item_idx]

    def fallback(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """Users do not matter; an unknown item has no interactions (score 0)."""
        return torch.where(item_idx >= 0, self.counts[item_idx.clamp(min=0)], 0.0)

    def factors(self) -> Factors:
        return Factors(
            torch.ones(self.num_users, 1, device=self.counts.device), self.counts[:, None]
        )

    def item_representations(self) -> torch.Tensor:
        return self.counts[:, None]
