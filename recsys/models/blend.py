"""A weighted blend of trained models: score(u, .) = sum_k w_k z_k(u, .), where z_k is member
k's scores for user u standardised over the catalogue (zero mean, unit variance per user), so
members on different scales (an item-item model's sums, a factor model's dot products) mix
by rank-relevant shape, not by magnitude. `auto` builds one from its two best candidates when
the blend beats each of them on validation, with the weight tuned there too.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from recsys.errors import ConfigError
from recsys.models.base import Recommender


class Blend(Recommender):
    name: ClassVar[str] = "blend"
    trainable: ClassVar[bool] = False
    selectable: ClassVar[bool] = False
    DEFAULTS: ClassVar[dict[str, Any]] = {"weights": [0.5, 0.5]}

    def __init__(
        self,
        num_users: int,
        num_items: int,
        members: list[dict[str, Any]] | None = None,
        **hparams: Any,
    ) -> None:
        """`members`: [{"name", "hparams", "model_args"}, ...] as `describe` gives them."""
        super().__init__(num_users, num_items, **hparams)
        from recsys.models import build_model  # the registry imports this module

        self._set_members(
            [
                build_model(
                    s["name"], num_users, num_items, model_args=s.get("model_args"), **s["hparams"]
                )  # fmt: skip
                for s in members or []
            ]
        )

    @classmethod
    def of(cls, members: list[Recommender], weights: list[float]) -> Blend:
        """A blend of already trained models (used as they are, not rebuilt)."""
        blend = cls.__new__(cls)
        Recommender.__init__(blend, members[0].num_users, members[0].num_items,
                             weights=[float(w) for w in weights])  # fmt: skip
        blend._set_members(members)
        return blend

    def _set_members(self, members: list[Recommender]) -> None:
        if len(members) < 2:
            raise ConfigError(
                "a blend needs at least two trained members; `auto` builds blends from its "
                "best two candidates (model.tuning.blend), it is not a model to ask for"
            )
        if len(self.hparams["weights"]) != len(members):
            raise ConfigError(
                f"blend: {len(self.hparams['weights'])} weights for {len(members)} members"
            )
        self.members = nn.ModuleList(members)
        self.model_args = {"members": [describe(m) for m in members]}

    @property
    def uses_features(self) -> bool:  # type: ignore[override]
        return all(m.uses_features for m in self.members)

    @property
    def has_item_matrix(self) -> bool:
        return self.members[0].has_item_matrix

    @property
    def bytes_per_score(self) -> int:  # type: ignore[override]
        return max(m.bytes_per_score for m in self.members) + 8

    def params(self) -> dict[str, Any]:
        return {
            "weights": self.hparams["weights"],
            "members": {m.name: m.params() for m in self.members},
        }

    def score_block(self, user_idx: torch.Tensor) -> torch.Tensor:
        out = None
        for weight, member in zip(self.hparams["weights"], self.members, strict=True):
            z = standardise(member.score_block(user_idx).float()) * float(weight)  # (B, I)
            out = z if out is None else out.add_(z)
        return out

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        distinct, inverse = torch.unique(user_idx, return_inverse=True)
        return self.score_block(distinct)[inverse, item_idx]  # (B,)

    def fallback(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """An unknown user or item is average: 0 on the standardised scale."""
        known = (user_idx >= 0) & (item_idx >= 0)
        out = torch.zeros(user_idx.shape, device=user_idx.device)
        if bool(known.any()):
            out[known] = self(user_idx[known], item_idx[known])
        return out

    def item_representations(self) -> torch.Tensor:
        return self.members[0].item_representations()

    def similar_items_block(self, item_idx: torch.Tensor) -> torch.Tensor:
        return self.members[0].similar_items_block(item_idx)


def row_scales(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's mean and inverse standard deviation, (B, 1) each (0 for a constant row: it
    carries no ranking). From plain sums: torch's two-pass variance is several times slower."""
    n = scores.shape[1]
    mean = scores.sum(dim=1, keepdim=True) / n
    var = ((scores * scores).sum(dim=1, keepdim=True) / n - mean * mean).clamp_(min=0.0)
    std = var.sqrt_()
    return mean, torch.where(std > 1e-12 * (mean.abs() + 1), 1.0 / std, torch.zeros_like(std))


def standardise(scores: torch.Tensor) -> torch.Tensor:
    """Each row to zero mean and unit variance (rows of equal scores to zeros), in place."""
    mean, inverse = row_scales(scores)
    return scores.sub_(mean).mul_(inverse)


def describe(model: Recommender) -> dict[str, Any]:
    """What rebuilds `model` (before its state dict): name, hyper-parameters, model_args."""
    return {"name": model.name, "hparams": dict(model.hparams), "model_args": model.model_args}
