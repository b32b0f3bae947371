"""Accuracy metrics. Ranking metrics take a hit matrix: hits[u, r] is True when the item a
user got at rank r+1 is one of that user's held-out relevant items.

All ranking metrics are averaged over users with at least one relevant held-out item:
- Precision@K = hits in the top K / K
- Recall@K    = hits in the top K / number of relevant items
- HitRate@K   = 1 if any hit in the top K, else 0
- NDCG@K      = DCG / IDCG with DCG = sum over ranks r of hit_r / log2(r + 1) and IDCG the DCG of
                min(relevant, K) hits at the top
- MAP@K       = sum over ranks r of Precision@r * hit_r, divided by min(relevant, K)
- Coverage@K  = distinct items recommended in anyone's top K / number of items
"""

from __future__ import annotations

import numpy as np

RANKING_METRICS = ("precision", "recall", "ndcg", "map", "hitrate", "coverage")
RATING_METRICS = ("rmse", "mae", "auc", "logloss")
# Metrics where lower is better (for model choice and the quality gate).
LOWER_IS_BETTER = frozenset({"rmse", "mae", "logloss"})


def metric_label(metric: str, k: int | None) -> str:
    """How a metric is named to people: `ndcg@10` for a ranking metric, `rmse` for one with
    no cut-off."""
    return f"{metric}@{k}" if k is not None else metric


def ranking_metrics(hits: np.ndarray, num_relevant: np.ndarray, k: int) -> dict[str, float]:
    """hits: (U, <=K) bool, num_relevant: (U,) int. Rows with num_relevant == 0 are skipped."""
    hits = np.asarray(hits, dtype=bool)[:, :k]
    num_relevant = np.asarray(num_relevant)
    keep = num_relevant > 0
    hits, num_relevant = hits[keep], num_relevant[keep]
    if hits.shape[0] == 0:
        return {name: 0.0 for name in RANKING_METRICS if name != "coverage"}
    if hits.shape[1] < k:  # users with fewer than K candidates: pad with misses
        hits = np.pad(hits, ((0, 0), (0, k - hits.shape[1])))
    ranks = np.arange(1, k + 1)
    num_hits = hits.sum(axis=1)
    ideal = np.minimum(num_relevant, k)
    precision_at_r = np.cumsum(hits, axis=1) / ranks
    return {
        "precision": float(np.mean(num_hits / k)),
        "recall": float(np.mean(num_hits / num_relevant)),
        "ndcg": float(np.mean(ndcg_per_user(hits, num_relevant, k))),
        "map": float(np.mean((precision_at_r * hits).sum(axis=1) / ideal)),
        "hitrate": float(np.mean(num_hits > 0)),
    }


def ndcg_per_user(hits: np.ndarray, num_relevant: np.ndarray, k: int) -> np.ndarray:
    """NDCG@K of each user with relevant items (rows with num_relevant == 0 dropped), for
    paired comparisons over users; `ranking_metrics`' ndcg is its mean."""
    hits = np.asarray(hits, dtype=bool)[:, :k]
    num_relevant = np.asarray(num_relevant)
    keep = num_relevant > 0
    hits, num_relevant = hits[keep], num_relevant[keep]
    if hits.shape[1] < k:
        hits = np.pad(hits, ((0, 0), (0, k - hits.shape[1])))
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    idcg = np.cumsum(discounts)[np.minimum(num_relevant, k) - 1]
    return (hits * discounts).sum(axis=1) / idcg


def coverage(recommended_items: np.ndarray, num_items: int) -> float:
    """Share of the catalogue appearing in at least one list."""
    if num_items == 0:
        return 0.0
    return float(np.unique(np.asarray(recommended_items)).size / num_items)


def rmse(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted) - np.asarray(actual)) ** 2)))


def mae(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(predicted) - np.asarray(actual))))


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: the chance a random positive outscores a random negative
    (ties count half), by the rank-sum (Mann-Whitney) formula."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    num_pos, num_neg = int(labels.sum()), int((~labels).sum())
    if num_pos == 0 or num_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores))
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - num_pos * (num_pos + 1) / 2) / (num_pos * num_neg))


def logloss(probabilities: np.ndarray, labels: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy -[y log p + (1 - y) log(1 - p)], p clipped to [eps, 1 - eps]
    so that one confident miss costs a finite amount."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(labels, dtype=bool)
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))
