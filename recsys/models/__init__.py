"""Model registry: names used in config and checkpoints -> classes."""

from __future__ import annotations

from typing import Any

import torch

from recsys.errors import ConfigError
from recsys.models.base import Factors, Feedback, Recommender
from recsys.models.blend import Blend
from recsys.models.deepfm import DeepFM
from recsys.models.ease import EASE
from recsys.models.fm import FM
from recsys.models.ials import IALS
from recsys.models.itemknn import ItemKNN
from recsys.models.mf import BPRMF, MF
from recsys.models.mf_bias import BiasedMF
from recsys.models.popularity import Popularity

REGISTRY: dict[str, type[Recommender]] = {
    cls.name: cls
    for cls in (MF, BiasedMF, BPRMF, IALS, Popularity, FM, DeepFM, EASE, ItemKNN, Blend)
}
# The names a configuration or --model may ask for (a blend is built by `auto` itself).
SELECTABLE = sorted(name for name, cls in REGISTRY.items() if cls.selectable)


def model_class(name: str) -> type[Recommender]:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown model '{name}' (expected one of: {', '.join(SELECTABLE)}, or auto)"
        ) from None


def selectable_class(name: str) -> type[Recommender]:
    """The class of a model a configuration may ask for by name."""
    cls = model_class(name)
    if not cls.selectable:
        raise ConfigError(
            f"model '{name}' is built by auto, not asked for (expected one of: "
            f"{', '.join(SELECTABLE)}, or auto)"
        )
    return cls


def build_model(
    name: str,
    num_users: int,
    num_items: int,
    seed: int = 0,
    model_args: dict | None = None,
    **hparams: Any,
) -> Recommender:
    """A freshly initialised model; the same seed gives the same initial weights.
    `model_args`: constructor arguments beyond hyper-parameters (feature shapes, a blend's
    members), as the model's `model_args` keeps them."""
    cls = model_class(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(num_users, num_items, **(model_args or {}), **hparams)


__all__ = [
    "REGISTRY", "SELECTABLE", "Factors", "Feedback", "Recommender", "build_model", "model_class",
    "selectable_class",
]  # fmt: skip
