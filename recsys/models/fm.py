"""Factorization Machine over user-side and item-side fields (Rendle, ICDM 2010).

score(u, i) = w0 + sum_f lin_f + sum_{f<g} <e_f, e_g> over the fields of u and i together
(IDs, age, occupation, genres, ...; with `history`, also the user's items and the item's
users, pooled as in SVD++). The pairwise term splits exactly into
<v_U, v_I> + c_U + c_I with v_U = sum of the user's field vectors and c_U the user's own
first-order and within-user pairwise terms, so full scoring is one GEMM over
[v_U, w0 + c_U, 1] . [v_I, 1, c_I].
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from recsys.data.features import SideFeatures
from recsys.models.base import Factors, Recommender
from recsys.models.layers import FieldBags, History, fm_pairwise


def feature_args(user: SideFeatures, item: SideFeatures) -> dict[str, list[int]]:
    """Constructor arguments describing two SideFeatures' shapes (stored in checkpoints)."""
    return {
        "user_features": [*user.index.shape, user.num_features],
        "item_features": [*item.index.shape, item.num_features],
    }


class FM(Recommender):
    """FM with side features; ranking loss by default (BCE with sampled negatives)."""

    name: ClassVar[str] = "fm"
    uses_features: ClassVar[bool] = True
    # Trained with the implicit-ALS objective over all (user, item) pairs (see train.py):
    # NDCG@10 0.212 on MovieLens-100K's temporal split, against 0.187 with sampled BCE.
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "dim": 128,
        "loss": "ials",
        "lr": 0.005,
        "reg": 0.1,
        "epochs": 60,
        "init_std": 0.05,
        "negatives": 4,
        # loss ials: extra weight of observed pairs, weight of every unobserved one
        "alpha": 1.0,
        "unobserved_weight": 1.0,
        "lr_decay": 1.0,
        # One more field per side from the training interactions: the user's items, the
        # item's users (at most history_max each), see layers.History.
        "history": False,
        "history_max": 256,
    }
    # Click-through use (loss logloss, label rating >= data.positive_threshold): tuned on
    # MovieLens-100K random splits other than the benchmark's (benchmarks/quality_ctr.py).
    # The history field is what lifts AUC; a small step size with early stopping beats
    # stronger L2 on the embeddings.
    LOSS_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        "logloss": {
            "lr": 0.001,
            "reg": 0.002,
            "init_std": 0.01,
            "epochs": 100,
            "history": True,
        }
    }
    SEARCH_SPACE: ClassVar[dict[str, tuple]] = {
        "dim": ("choice", [32, 64, 128]),
        "lr": ("log", 1e-3, 2e-2),
        "reg": ("log", 1e-3, 1.0),
    }

    def __init__(
        self,
        num_users: int,
        num_items: int,
        user_features: list[int] | None = None,
        item_features: list[int] | None = None,
        **hparams: Any,
    ) -> None:
        super().__init__(num_users, num_items, **hparams)
        user_features = user_features or [num_users, 1, 1, num_users + 1]
        item_features = item_features or [num_items, 1, 1, num_items + 1]
        self.model_args = {
            "user_features": list(user_features),
            "item_features": list(item_features),
        }
        dim, std = int(self.hparams["dim"]), float(self.hparams["init_std"])
        self.user = FieldBags(*user_features, dim, std)
        self.item = FieldBags(*item_features, dim, std)
        self.w0 = nn.Parameter(torch.zeros(()))
        self.user_history: History | None = None
        self.item_history: History | None = None
        if self.hparams["history"]:
            longest = int(self.hparams["history_max"])
            self.user_history = History(num_users, num_items, dim, std, longest)
            self.item_history = History(num_items, num_users, dim, std, longest)

    def set_features(self, user: SideFeatures, item: SideFeatures) -> None:
        """Load the encoded side features (shapes must match the constructor's)."""
        self.user.set_features(user.index, user.weight, user.offsets)
        self.item.set_features(item.index, item.weight, item.offsets)

    def fallback(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return self(user_idx, item_idx)  # unknown entities use the shared unknown slots

    def prepare(self, user_idx: torch.Tensor, item_idx: torch.Tensor, rating: torch.Tensor) -> None:
        if self.hparams["loss"] == "mse":  # start at the mean rating
            self.w0.data.fill_(float(rating.float().mean()))
        if self.user_history is not None and self.item_history is not None:
            self.user_history.set_pairs(user_idx, item_idx)
            self.item_history.set_pairs(item_idx, user_idx)

    @property
    def num_fields(self) -> tuple[int, int]:
        """Fields per user and per item, history included."""
        extra = int(self.user_history is not None)
        return self.user.num_fields + extra, self.item.num_fields + extra

    def encode(
        self, side: str, rows: torch.Tensor, partners: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Field vectors (B, F, k) and first-order term (B,) of `rows` of one side; the
        history field comes last. While training, `partners` (the other side of each pair)
        are left out of the history."""
        bags, history = (
            (self.user, self.user_history) if side == "user" else (self.item, self.item_history)
        )
        fields, linear = bags.encode(rows)
        if history is not None:
            pooled = history.pool(rows, partners if self.training else None)  # (B, k)
            fields = torch.cat([fields, pooled[:, None]], 1)
        return fields, linear

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return self.forward_with_penalty(user_idx, item_idx)[0]

    def forward_with_penalty(
        self, user_idx: torch.Tensor, item_idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B,) and the L2 of the pooled field vectors they used, in one lookup."""
        e_u, lin_u = self.encode("user", user_idx, item_idx)  # (B, Fu, k), (B,)
        e_i, lin_i = self.encode("item", item_idx, user_idx)  # (B, Fi, k), (B,)
        logits = (
            self.w0 + lin_u + lin_i + fm_pairwise(torch.cat([e_u, e_i], 1)) + self.deep(e_u, e_i)
        )
        return logits, e_u.pow(2).sum() + e_i.pow(2).sum()

    def deep(self, e_u: torch.Tensor, e_i: torch.Tensor) -> torch.Tensor | float:
        """Extra term on the field embeddings (DeepFM's MLP); none for FM."""
        return 0.0

    def side_vectors(self, side: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Every entity's summed field vector v (N, k) and own constant c (N,)."""
        num = self.num_users if side == "user" else self.num_items
        fields, linear = self.encode(side, torch.arange(num, device=self.w0.device))
        return fields.sum(1), linear + fm_pairwise(fields)  # (N, F, k) -> (N, k), (N,)

    def factors(self) -> Factors | None:
        return self.fm_factors()

    def fm_factors(self) -> Factors:
        """The FM part as a linear form (DeepFM adds its MLP on top)."""
        v_u, c_u = self.side_vectors("user")
        v_i, c_i = self.side_vectors("item")
        ones_u, ones_i = torch.ones_like(c_u), torch.ones_like(c_i)
        user = torch.cat([v_u, (self.w0 + c_u)[:, None], ones_u[:, None]], 1)  # (U, k + 2)
        item = torch.cat([v_i, ones_i[:, None], c_i[:, None]], 1)  # (I, k + 2)
        return Factors(user, item)

    def item_representations(self) -> torch.Tensor:
        return self.side_vectors("item")[0]
