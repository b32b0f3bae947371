"""Model registry: names used in config and checkpoints -> classes."""

from __future__ import annotations

from typing import Any

import torch

from recsys.errors import ConfigError
from recsys.models.base import Factors, Recommender
from recsys.models.deepfm import DeepFM
from recsys.models.fm import FM
from recsys.models.mf import BPRMF, IALSMF, MF
from recsys.models.mf_bias import BiasedMF
from recsys.models.popularity import Popularity

REGISTRY: dict[str, type[Recommender]] = {
    cls.name: cls for cls in (MF, BiasedMF, BPRMF, IALSMF, Popularity, FM, DeepFM)
}


def model_class(name: str) -> type[Recommender]:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown model '{name}' (expected one of: {', '.join(sorted(REGISTRY))}, or auto)"
        ) from None


def build_model(
    name: str,
    num_users: int,
    num_items: int,
    seed: int = 0,
    model_args: dict | None = None,
    **hparams: Any,
) -> Recommender:
    """A freshly initialised model; the same seed gives the same initial weights.
    `model_args` (feature shapes) only reach models that use features."""
    cls = model_class(name)
    args = (model_args or {}) if cls.uses_features else {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(num_users, num_items, **args, **hparams)


__all__ = ["REGISTRY", "Factors", "Recommender", "build_model", "model_class"]
