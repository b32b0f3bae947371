"""DeepFM: FM plus an MLP over the concatenated field embeddings (Guo et al., IJCAI 2017).

score(u, i) = FM(u, i) + MLP([e_U; e_I]). The MLP's first layer splits,
W1 [e_U; e_I] + b1 = A_U + B_I with A_U = W1_U e_U and B_I = W1_I e_I + b1, so scoring a
block of users computes A and B once and only relu(A_u + B_i) and the later layers per pair.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from recsys.models.fm import FM


class DeepFM(FM):
    name: ClassVar[str] = "deepfm"
    # The MLP has no linear form, so DeepFM learns from sampled negatives (BCE) instead of ials.
    DEFAULTS: ClassVar[dict[str, Any]] = {
        **FM.DEFAULTS,
        "dim": 32,
        "loss": "bce",
        "reg": 0.0005,
        "epochs": 40,
        "hidden": [64, 32],
        "dropout": 0.1,
        "weight_decay": 0.0,  # L2 on the MLP's weight matrices (see train.make_optimizer)
    }
    # Click-through use: FM's settings, and an MLP held small by L2. On MovieLens-100K any
    # less-regularised MLP overfits within a few epochs and lowers AUC.
    LOSS_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        "logloss": {**FM.LOSS_DEFAULTS["logloss"], "dim": 128, "weight_decay": 0.01}
    }
    SEARCH_SPACE: ClassVar[dict[str, tuple]] = {
        "dim": ("choice", [16, 32, 64]),
        "lr": ("log", 1e-3, 2e-2),
        "reg": ("log", 1e-5, 1e-1),
        "dropout": ("float", 0.0, 0.5),
    }

    def __init__(self, num_users: int, num_items: int, **kwargs: Any) -> None:
        super().__init__(num_users, num_items, **kwargs)
        dim = int(self.hparams["dim"])
        hidden = [int(h) for h in self.hparams["hidden"]]
        width_u, width_i = (fields * dim for fields in self.num_fields)
        self.first_user = nn.Linear(width_u, hidden[0], bias=False)  # W1_U
        self.first_item = nn.Linear(width_i, hidden[0])  # W1_I, b1
        layers: list[nn.Module] = []
        for a, b in zip(hidden, hidden[1:], strict=False):
            layers += [nn.ReLU(), nn.Dropout(float(self.hparams["dropout"])), nn.Linear(a, b)]
        layers += [nn.ReLU(), nn.Dropout(float(self.hparams["dropout"])), nn.Linear(hidden[-1], 1)]
        self.rest = nn.Sequential(*layers)  # applied to (..., H1) -> (..., 1)

    def deep(self, e_u: torch.Tensor, e_i: torch.Tensor) -> torch.Tensor:
        h1 = self.first_user(e_u.flatten(1)) + self.first_item(e_i.flatten(1))  # (B, H1)
        return self.rest(h1).squeeze(-1)  # (B,)

    def factors(self) -> None:
        return None  # not linear: scoring goes through score_block

    def score_block(self, user_idx: torch.Tensor) -> torch.Tensor:
        f = self.fm_factors()
        fm = f.user[user_idx] @ f.item.T  # (B, I)
        rows_i = torch.arange(self.num_items, device=user_idx.device)
        a = self.first_user(self.encode("user", user_idx)[0].flatten(1))  # (B, H1)
        b = self.first_item(self.encode("item", rows_i)[0].flatten(1))  # (I, H1)
        deep = self.rest(a[:, None, :] + b[None, :, :]).squeeze(-1)  # (B, I)
        return fm + deep

    @property
    def bytes_per_score(self) -> int:
        """Scratch per (user, item) pair when scoring: the hidden activations dominate."""
        return 4 * 2 * sum(int(h) for h in self.hparams["hidden"]) + 12
