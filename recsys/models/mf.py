"""Matrix Factorization: score(u, i) = <p_u, q_i>; MSE on ratings or BPR on implicit data.

Koren, Bell & Volinsky, "Matrix Factorization Techniques for Recommender Systems" (2009);
Rendle et al., "BPR: Bayesian Personalized Ranking from Implicit Feedback" (UAI 2009).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from recsys.models.base import Factors, Recommender


class MF(Recommender):
    """Plain MF trained on ratings with MSE. Full scoring: P[U] @ Q.T, one GEMM."""

    name: ClassVar[str] = "mf"
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "dim": 64,
        "loss": "mse",
        "lr": 0.01,
        "reg": 0.05,
        "epochs": 40,
        "init_std": 0.1,
        "negatives": 1,
        "optimizer": "adam",
        "lr_decay": 1.0,
        # loss ials: extra weight of observed pairs, weight of every unobserved one
        "alpha": 1.0,
        "unobserved_weight": 1.0,
    }
    SEARCH_SPACE: ClassVar[dict[str, tuple]] = {
        "dim": ("choice", [32, 64, 128]),
        "lr": ("log", 1e-3, 5e-2),
        "reg": ("log", 1e-4, 1.0),
    }

    def __init__(self, num_users: int, num_items: int, **hparams: Any) -> None:
        super().__init__(num_users, num_items, **hparams)
        dim, std = int(self.hparams["dim"]), float(self.hparams["init_std"])
        self.user_emb = nn.Embedding(num_users, dim)  # P: (num_users, d)
        self.item_emb = nn.Embedding(num_items, dim)  # Q: (num_items, d)
        nn.init.normal_(self.user_emb.weight, std=std)
        nn.init.normal_(self.item_emb.weight, std=std)

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return (self.user_emb(user_idx) * self.item_emb(item_idx)).sum(-1)  # (B,)

    def fallback(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """An unknown user or item is the average one (its mean embedding)."""
        return (
            _or_mean(self.user_emb.weight, user_idx) * _or_mean(self.item_emb.weight, item_idx)
        ).sum(-1)

    def regularization(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return self.user_emb(user_idx).pow(2).sum() + self.item_emb(item_idx).pow(2).sum()

    def factors(self) -> Factors:
        return Factors(self.user_emb.weight, self.item_emb.weight)


class BPRMF(MF):
    """MF trained for ranking with the BPR loss on sampled negatives (implicit feedback)."""

    name: ClassVar[str] = "bpr"
    DEFAULTS: ClassVar[dict[str, Any]] = {
        **MF.DEFAULTS,
        "loss": "bpr",
        "lr": 0.005,
        "reg": 0.001,
        "epochs": 60,
        "negatives": 4,
    }


def _or_mean(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows of `table` at `idx`, the mean row where idx is -1. (B,) -> (B, d)."""
    rows = table[idx.clamp(min=0)]
    return torch.where((idx >= 0)[:, None], rows, table.mean(0, keepdim=True))
