"""How much each (user, item) pair counts: confidence from repeated rows or a weight column,
and recency within the user's history. Shared by the item-item models and iALS.

Confidence schemes (on the summed weight w of a pair; binary data has w = 1 everywhere):
- none:  1 (every pair counts the same)
- log:   1 + log(w), so repeated plays count, but less than linearly
- bm25:  Okapi BM25 over the user x item matrix (Robertson & Zaragoza 2009): popular items
         weigh less (idf), long user histories are normalised; as implicit's bm25_weight
- tfidf: w * idf, idf = log(num_users / users of the item)
Recency: 0.5 ** (x / half_life), x the pair's position from the user's latest interaction
(recency = "position") or its age in days (recency = "days"); half_life 0 = off.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from recsys.errors import ConfigError
from recsys.models.base import Feedback

CONFIDENCE = ("none", "log", "bm25", "tfidf")
RECENCY = ("position", "days")
BM25_K1, BM25_B = 1.2, 0.75
SECONDS_PER_DAY = 86_400.0


def check_settings(model: str, hparams: dict) -> None:
    """Refuse unknown schemes with the setting named (ranges are checked with every model's
    hyper-parameters, models.base.HPARAM_RANGES)."""
    if hparams.get("confidence", "none") not in CONFIDENCE:
        raise ConfigError(
            f"model '{model}': unknown confidence '{hparams['confidence']}' "
            f"(expected one of: {', '.join(CONFIDENCE)})"
        )
    if hparams.get("recency", "position") not in RECENCY:
        raise ConfigError(
            f"model '{model}': unknown recency '{hparams['recency']}' "
            f"(expected one of: {', '.join(RECENCY)})"
        )


def confidence(feedback: Feedback, scheme: str) -> torch.Tensor:
    """(N,) confidence of each pair under `scheme` (see the module docstring)."""
    w = feedback.weight.double().clamp(min=0)
    if scheme == "none":
        return torch.ones_like(w, dtype=torch.float32)
    if scheme == "log":
        return (1.0 + torch.log(w.clamp(min=1.0))).float()
    item_users = torch.bincount(feedback.item_idx, minlength=feedback.num_items).double()
    if scheme == "tfidf":
        idf = torch.log(feedback.num_users / item_users.clamp(min=1.0))
        return (w * idf[feedback.item_idx]).float()
    # bm25
    idf = torch.log(feedback.num_users / (1.0 + item_users)).clamp(min=0.0) + 1e-6
    length = torch.zeros(feedback.num_users, dtype=torch.float64).index_add_(
        0, feedback.user_idx, w
    )
    norm = (1 - BM25_B) + BM25_B * length / length[length > 0].mean().clamp(min=1e-12)
    tf = w * (BM25_K1 + 1) / (BM25_K1 * norm[feedback.user_idx] + w)
    return (tf * idf[feedback.item_idx]).float()


def recency(feedback: Feedback, half_life: float, unit: str) -> torch.Tensor:
    """(N,) recency weight of each pair in its user's history; ones when off or unordered."""
    if half_life <= 0 or not feedback.ordered:
        return torch.ones(feedback.user_idx.shape, dtype=torch.float32)
    x = feedback.position if unit == "position" else feedback.age / SECONDS_PER_DAY
    return torch.pow(0.5, x.double() / half_life).float()


def user_item_matrix(feedback: Feedback, values: torch.Tensor) -> sp.csr_matrix:
    """(num_users, num_items) CSR of `values`, column indices sorted within each row."""
    matrix = sp.csr_matrix(
        (
            values.numpy().astype(np.float32),
            (feedback.user_idx.numpy(), feedback.item_idx.numpy()),
        ),
        shape=(feedback.num_users, feedback.num_items),
    )
    matrix.sum_duplicates()
    return matrix
