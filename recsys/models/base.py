"""The model contract: logits from `forward` for training pairs, and a full-scoring form.

Training knows a model only through `forward(user_idx, item_idx)` and its loss; scoring
knows it only through `factors()` (one GEMM) or `score_block()` (anything denser).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from recsys.errors import ConfigError


@dataclass
class Factors:
    """Linear full-scoring form: scores(users) = user[users] @ item.T."""

    user: torch.Tensor  # (num_users, D)
    item: torch.Tensor  # (num_items, D)


class Recommender(nn.Module):
    """Base class. Subclasses set `name`, `DEFAULTS` (hyper-parameters with their defaults,
    training ones such as lr and loss included) and implement `forward` plus `factors` or
    `score_block`."""

    name: ClassVar[str] = ""
    DEFAULTS: ClassVar[dict[str, Any]] = {}
    # Defaults that replace DEFAULTS' when the model is trained with another loss than its
    # default one, e.g. {"logloss": {"dim": 32, ...}} for click-through use: the settings
    # tuned for ranking rarely suit it. Parameters the user sets still win.
    LOSS_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {}
    # False for models fitted in closed form (popularity): the trainer calls `fit_direct`.
    trainable: ClassVar[bool] = True
    # True when the model reads side features (FM, DeepFM): see set_features.
    uses_features: ClassVar[bool] = False
    # Scratch bytes per (query, item) score in score_block, for chunk sizing.
    bytes_per_score: int = 12

    def __init__(self, num_users: int, num_items: int, **hparams: Any) -> None:
        super().__init__()
        unknown = set(hparams) - set(self.DEFAULTS)
        if unknown:
            raise ConfigError(
                f"model '{self.name}': unknown parameter(s) {', '.join(sorted(unknown))} "
                f"(expected: {', '.join(sorted(self.DEFAULTS))})"
            )
        self.num_users = num_users
        self.num_items = num_items
        loss = hparams.get("loss", self.DEFAULTS.get("loss"))
        self.hparams: dict[str, Any] = {
            **self.DEFAULTS,
            **self.LOSS_DEFAULTS.get(loss, {}),
            **hparams,
        }
        # Constructor arguments beyond hyper-parameters (feature shapes), kept in checkpoints.
        self.model_args: dict[str, Any] = {}

    @property
    def predicts_ratings(self) -> bool:
        """Outputs are on the rating scale (trained with MSE): predictions are clipped to it."""
        return self.hparams.get("loss") == "mse"

    @property
    def predicts_probabilities(self) -> bool:
        """Outputs are logits of P(rating >= positive_threshold) (trained with logloss):
        predictions are their sigmoid."""
        return self.hparams.get("loss") == "logloss"

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """Logits for pairs: (B,), (B,) -> (B,)."""
        raise NotImplementedError

    def predict(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """Outputs for pairs where index -1 marks a user or item the model does not know:
        known pairs go through `forward`, the rest through `fallback`."""
        known = (user_idx >= 0) & (item_idx >= 0)
        if bool(known.all()):
            return self(user_idx, item_idx)
        out = torch.empty(user_idx.shape, device=user_idx.device)
        out[known] = self(user_idx[known], item_idx[known])
        out[~known] = self.fallback(user_idx[~known], item_idx[~known])
        return out

    def fallback(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """Outputs for pairs with an unknown side (-1); see each model."""
        raise NotImplementedError

    def regularization(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """L2 penalty on the parameters this batch touches (scaled by the caller)."""
        return torch.zeros((), device=user_idx.device)

    def forward_with_penalty(
        self, user_idx: torch.Tensor, item_idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and regularization for one batch; models that can share the lookups
        between the two override this."""
        return self(user_idx, item_idx), self.regularization(user_idx, item_idx)

    def factors(self) -> Factors | None:
        """The linear full-scoring form, or None when the model needs `score_block`."""
        return None

    def score_block(self, user_idx: torch.Tensor) -> torch.Tensor:
        """Scores of users against every item: (B,) -> (B, num_items)."""
        f = self.factors()
        if f is None:
            raise NotImplementedError(f"{self.name} defines neither factors() nor score_block()")
        return f.user[user_idx] @ f.item.T

    def item_representations(self) -> torch.Tensor:
        """(num_items, D) vectors whose cosine similarity defines similar items."""
        f = self.factors()
        if f is None:
            raise NotImplementedError
        return f.item

    def fit_direct(
        self, user_idx: torch.Tensor, item_idx: torch.Tensor, rating: torch.Tensor
    ) -> None:
        """Closed-form fit for models with trainable = False."""
        raise NotImplementedError

    def prepare(self, user_idx: torch.Tensor, item_idx: torch.Tensor, rating: torch.Tensor) -> None:
        """Data statistics set before training (e.g. the global mean rating)."""
