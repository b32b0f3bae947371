"""The model contract: logits from `forward` for training pairs, and a full-scoring form.

Training knows a model only through `forward(user_idx, item_idx)` and its loss; scoring
knows it only through `factors()` (one GEMM) or `score_block()` (anything denser).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from recsys.config import Range
from recsys.errors import ConfigError

# Bounds of hyper-parameters many models share; every model's values are also checked
# against the type of its own default, so a model added later gets both for free.
HPARAM_RANGES: dict[str, Range] = {
    "dim": Range(1),
    "lr": Range(0, low_open=True),
    "bias_lr": Range(0, low_open=True),
    "lr_decay": Range(0, 1, low_open=True),
    "epochs": Range(1),
    "reg": Range(0),
    "bias_reg": Range(0),
    "init_std": Range(0, low_open=True),  # 0 gives every user and item the same vector
    "negatives": Range(1),
    "alpha": Range(0),
    "unobserved_weight": Range(0),
    "dropout": Range(0, 1, high_open=True),
    "hidden": Range(1),  # each layer's width
    "half_life": Range(0),  # 0 = recency off
    "neighbours": Range(1),
    "shrink": Range(0),
    "max_items": Range(1),
    "iterations": Range(1),
    "cg_steps": Range(1),
    "weights": Range(0),
}


@dataclass
class Feedback:
    """What a closed-form fit (`fit_direct`) learns from: one row per (user, item) pair.

    `weight` is the summed count or strength of the pair's rows (1 each without a weight
    column); `position` / `age` its recency within the user's history (0 = latest; see
    Interactions.recency), all zeros when the data has no time order (`ordered` False).
    """

    user_idx: torch.Tensor  # (N,) int64
    item_idx: torch.Tensor  # (N,) int64
    rating: torch.Tensor  # (N,) float32
    weight: torch.Tensor  # (N,) float32
    position: torch.Tensor  # (N,) float32
    age: torch.Tensor  # (N,) float32 seconds
    num_users: int
    num_items: int
    ordered: bool = True


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
    # False for models built by the job itself (a blend), not asked for by name.
    selectable: ClassVar[bool] = True
    # Scratch bytes per (query, item) score in score_block, for chunk sizing.
    bytes_per_score: int = 12
    # Hyper-parameters tuned on validation (recsys.tune): name -> ("log", low, high) |
    # ("int_log", low, high) | ("float", low, high) | ("choice", [values]) | ("half_life",
    # low, high): a recency half-life, searched only when the data has time order, 0 = off.
    SEARCH_SPACE: ClassVar[dict[str, tuple]] = {}

    @classmethod
    def unsuitable(cls, num_users: int, num_items: int, hparams: dict[str, Any]) -> str:
        """Why this model cannot be trained at this size with these settings ("" if it can)."""
        return ""

    def __init__(self, num_users: int, num_items: int, **hparams: Any) -> None:
        super().__init__()
        self.num_users = num_users
        self.num_items = num_items
        given = self.checked_hparams(hparams)
        loss = given.get("loss", self.DEFAULTS.get("loss"))
        self.hparams: dict[str, Any] = {
            **self.DEFAULTS,
            **self.LOSS_DEFAULTS.get(loss, {}),
            **given,
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

    def params(self) -> dict[str, Any]:
        """The settings that describe this model in runs.params and reports."""
        return dict(self.hparams)

    @classmethod
    def checked_hparams(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        """`hparams` typed like DEFAULTS; unknown names, other types and values outside
        HPARAM_RANGES are refused with a one-line error (before any data is read)."""
        unknown = set(hparams) - set(cls.DEFAULTS)
        if unknown:
            raise ConfigError(
                f"model '{cls.name}': unknown parameter(s) {', '.join(sorted(unknown))} "
                f"(expected: {', '.join(sorted(cls.DEFAULTS)) or 'none'})"
            )
        return {k: checked_hparam(cls.name, k, v, cls.DEFAULTS[k]) for k, v in hparams.items()}

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

    def fit_direct(self, feedback: Feedback) -> None:
        """Closed-form (or self-driven) fit for models with trainable = False."""
        raise NotImplementedError

    @property
    def has_item_matrix(self) -> bool:
        """True when similar items come from `similar_items_block` (item-item models), not
        from the cosine of `item_representations`."""
        return False

    def similar_items_block(self, item_idx: torch.Tensor) -> torch.Tensor:
        """(B,) -> (B, num_items) item-to-item scores (models with an item matrix)."""
        raise NotImplementedError

    def prepare(self, user_idx: torch.Tensor, item_idx: torch.Tensor, rating: torch.Tensor) -> None:
        """Data statistics set before training (e.g. the global mean rating)."""


def checked_hparam(model: str, key: str, value: Any, default: Any) -> Any:
    """`value` as the type of `default` (an integral float is taken as an int), refused with
    a one-line error when it is another type or outside HPARAM_RANGES."""
    where = f"model '{model}': [model.params.{model}] {key} = {value!r}"
    if isinstance(default, list):
        if not isinstance(value, list) or (default and not value):
            raise ConfigError(f"{where}: expected a non-empty list like {default!r}")
        return [checked_hparam(model, key, v, default[0]) for v in value] if default else value
    kind = type(default)
    if kind is bool or isinstance(value, bool):
        if kind is not bool or not isinstance(value, bool):
            raise ConfigError(
                f"{where}: expected {'true or false' if kind is bool else _KIND[kind]}"
            )
        return value
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string")
        return value
    if kind in (int, float):
        if not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected {_KIND[kind]}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number")
        if kind is int:
            if not float(value).is_integer():
                raise ConfigError(f"{where}: expected {_KIND[kind]}")
            value = int(value)
        else:
            value = float(value)
        allowed = HPARAM_RANGES.get(key)
        if allowed is not None and value not in allowed:
            raise ConfigError(f"{where} must be {allowed}")
    return value


_KIND = {int: "a whole number", float: "a number", str: "a string"}
