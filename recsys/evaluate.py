"""Evaluate a model on held-out interactions: rating error and top-K ranking with seen
(training) items excluded. Metric definitions live in recsys.metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl
import torch

from recsys import metrics
from recsys.data.interactions import Interactions
from recsys.models.base import Recommender
from recsys.models.blend import row_scales
from recsys.score import BlockScorer, SeenMatrix, TopN, chunk_rows, scorer_for, top_n


@dataclass(frozen=True)
class Metric:
    """One row of the `metrics` table (run_id and split are added when stored)."""

    model: str
    metric: str
    k: int | None
    value: float


# Lower bounds of the training-history-length buckets for accuracy by user activity; fixed
# (not quantiles) so that one bucket means the same users' kind from run to run.
ACTIVITY_EDGES = (0, 1, 5, 10, 20, 50, 100, 200, 500)


@dataclass(frozen=True)
class ActivityMetric:
    """One row of `metrics_by_activity`: NDCG@k over the evaluated users whose training history
    holds `min_history`..`max_history` interactions (None: no upper bound)."""

    model: str
    bucket: str  # "5-9", "500+"
    min_history: int
    max_history: int | None
    num_users: int
    k: int
    ndcg: float


@dataclass
class Ranking:
    """Top-K results of the evaluated users (those with relevant held-out items)."""

    metrics: dict[str, float]
    by_activity: list[ActivityMetric]
    users: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # (U,)
    ndcg: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (U,) per user, paired tests


def evaluate_ranking(
    model: Recommender,
    train: Interactions,
    held_out: Interactions,
    k: int,
    device: torch.device,
    positive_threshold: float = 0.0,
    max_users: int = 0,
    seed: int = 0,
) -> dict[str, float]:
    """Top-K metrics for users with relevant held-out items; `max_users` > 0 samples users."""
    return rank_held_out(
        model, train, held_out, k, device, positive_threshold, max_users, seed
    ).metrics


class HeldOut:
    """The users of a holdout with relevant items (sampled down to `max_users` when > 0), and
    which of the keys a top-K list gives them are hits."""

    def __init__(
        self,
        train: Interactions,
        held_out: Interactions,
        positive_threshold: float = 0.0,
        max_users: int = 0,
        seed: int = 0,
    ) -> None:
        relevant = held_out.positives(positive_threshold).frame.select("user_idx", "item_idx")
        users = np.unique(relevant["user_idx"].to_numpy()).astype(np.int64)
        if max_users and users.size > max_users:
            users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
        self.users, self.num_items = users, train.num_items
        self.indptr, indices = train.csr()
        self.seen = SeenMatrix(self.indptr, indices)
        self.keys = np.sort(
            relevant["user_idx"].to_numpy().astype(np.int64) * train.num_items
            + relevant["item_idx"].to_numpy()
        )
        self.counts = np.bincount(relevant["user_idx"].to_numpy(), minlength=train.num_users)

    def hits(self, chunk: TopN) -> np.ndarray:
        """(B, K) bool: which listed keys are relevant held-out items (False past counts)."""
        keys = chunk.query_idx[:, None] * self.num_items + chunk.key_idx.astype(np.int64)
        valid = np.arange(chunk.key_idx.shape[1])[None, :] < chunk.counts[:, None]
        pos = np.searchsorted(self.keys, keys).clip(max=len(self.keys) - 1)
        return (self.keys[pos] == keys) & valid


def rank_held_out(
    model: Recommender,
    train: Interactions,
    held_out: Interactions,
    k: int,
    device: torch.device,
    positive_threshold: float = 0.0,
    max_users: int = 0,
    seed: int = 0,
) -> Ranking:
    """Top-K metrics, overall and by the length of each user's training history."""
    truth = HeldOut(train, held_out, positive_threshold, max_users, seed)
    if truth.users.size == 0:
        return Ranking({name: 0.0 for name in metrics.RANKING_METRICS}, [])
    hits, picked, queried = [], [], []
    scorer = scorer_for(model, device)
    for chunk in top_n(scorer, k, truth.seen, truth.users, device, what="evaluating"):
        hits.append(truth.hits(chunk))
        picked.append(
            chunk.key_idx[np.arange(chunk.key_idx.shape[1])[None, :] < chunk.counts[:, None]]
        )
        queried.append(chunk.query_idx)
    all_hits, all_users = np.concatenate(hits), np.concatenate(queried)
    all_relevant = truth.counts[all_users]
    result = metrics.ranking_metrics(all_hits, all_relevant, k)
    result["coverage"] = metrics.coverage(np.concatenate(picked), train.num_items)
    history = np.diff(truth.indptr)[all_users]  # (U,) training interactions per user
    return Ranking(result, by_activity(model.name, all_hits, all_relevant, history, k),
                   all_users, metrics.ndcg_per_user(all_hits, all_relevant, k))  # fmt: skip


def blend_ndcg(
    members: list[Recommender],
    weights: list[float],
    truth: HeldOut,
    k: int,
    device: torch.device,
) -> list[np.ndarray]:
    """Per-user NDCG@k (truth.users' order) of the blend of two members at each weight of the
    first (the second gets the rest), scoring each member once per chunk of users rather than
    once per weight."""
    scorers = [scorer_for(m, device) for m in members]
    hits: list[list[np.ndarray]] = [[] for _ in weights]
    relevant = []
    step = chunk_rows(truth.num_items, device, 0, max(s.bytes_per_score for s in scorers) * 3)
    for start in range(0, truth.users.size, step):
        rows = truth.users[start : start + step]
        index = torch.from_numpy(rows).to(device)
        with torch.no_grad():
            first, second = (s.score(index) for s in scorers)  # (B, I) each
            (_, scale_first), (_, scale_second) = row_scales(first), row_scales(second)
        blended = torch.empty_like(first)
        relevant.append(truth.counts[rows])
        for i, weight in enumerate(weights):
            # the blend up to a constant per row (the means), which leaves each list as it is
            torch.mul(first, scale_first * weight, out=blended)
            blended.addcmul_(second, scale_second * (1.0 - weight))
            for chunk in top_n(_Fixed(blended, rows), k, truth.seen, rows, device,
                               budget_bytes=2**62):  # fmt: skip
                hits[i].append(truth.hits(chunk))
    num_relevant = np.concatenate(relevant)
    return [metrics.ndcg_per_user(np.concatenate(h), num_relevant, k) for h in hits]


class _Fixed(BlockScorer):
    """Scores already computed for one block of queries, handed to `top_n` as its only chunk
    (an unlimited budget keeps the block whole)."""

    def __init__(self, scores: torch.Tensor, rows: np.ndarray) -> None:
        self.scores, self.num_keys = scores, scores.shape[1]
        self.num_queries = int(rows.max()) + 1 if len(rows) else 0

    def score(self, rows: torch.Tensor) -> torch.Tensor:
        assert len(rows) == self.scores.shape[0], "the block is scored as one chunk"
        return self.scores


def by_activity(
    model: str,
    hits: np.ndarray,
    num_relevant: np.ndarray,
    history: np.ndarray,
    k: int,
    edges: tuple[int, ...] = ACTIVITY_EDGES,
) -> list[ActivityMetric]:
    """NDCG@k per bucket of training-history length (empty buckets left out), by the same
    definition as the overall metric: `ranking_metrics` on that bucket's users."""
    rows = []
    for i, low in enumerate(edges):
        high = edges[i + 1] - 1 if i + 1 < len(edges) else None
        users = (history >= low) & (num_relevant > 0)
        if high is not None:
            users &= history <= high
        if not users.any():
            continue
        label = f"{low}+" if high is None else (str(low) if high == low else f"{low}-{high}")
        ndcg = metrics.ranking_metrics(hits[users], num_relevant[users], k)["ndcg"]
        rows.append(ActivityMetric(model, label, low, high, int(users.sum()), k, ndcg))
    return rows


@torch.no_grad()
def predict_pairs(
    model: Recommender,
    user_idx: np.ndarray,
    item_idx: np.ndarray,
    device: torch.device,
    batch: int = 65536,
) -> np.ndarray:
    """Model outputs (logits or ratings) for (user_idx, item_idx) pairs; -1 marks an unknown
    user or item, which gets the model's fallback."""
    model = model.to(device).eval()
    out = []
    for start in range(0, len(user_idx), batch):
        u = torch.from_numpy(np.asarray(user_idx[start : start + batch], dtype=np.int64)).to(device)
        i = torch.from_numpy(np.asarray(item_idx[start : start + batch], dtype=np.int64)).to(device)
        out.append(model.predict(u, i).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def evaluate_ratings(
    model: Recommender,
    held_out: Interactions,
    device: torch.device,
    min_rating: float,
    max_rating: float,
) -> dict[str, float]:
    """RMSE and MAE of predictions clipped to the rating range."""
    frame = held_out.frame
    predicted = predict_pairs(
        model, frame["user_idx"].to_numpy(), frame["item_idx"].to_numpy(), device
    )
    predicted = np.clip(predicted, min_rating, max_rating)
    actual = frame["rating"].to_numpy()
    return {"rmse": metrics.rmse(predicted, actual), "mae": metrics.mae(predicted, actual)}


def evaluate_auc(
    model: Recommender, held_out: Interactions, device: torch.device, threshold: float
) -> float:
    """AUC of the model's outputs at separating held-out ratings >= threshold from the rest."""
    frame = held_out.frame
    scores = predict_pairs(
        model, frame["user_idx"].to_numpy(), frame["item_idx"].to_numpy(), device
    )
    return metrics.auc(scores, frame["rating"].to_numpy() >= threshold)


def probabilities(logits: np.ndarray) -> np.ndarray:
    """A click-through model's logits as the probabilities `recsys predict` writes."""
    return torch.sigmoid(torch.from_numpy(np.asarray(logits, dtype=np.float32))).numpy()


def evaluate_clicks(
    model: Recommender, held_out: Interactions, device: torch.device, threshold: float
) -> dict[str, float]:
    """AUC and LogLoss of a click-through model (loss logloss) on held-out ratings, the
    label being rating >= threshold."""
    frame = held_out.frame
    logits = predict_pairs(
        model, frame["user_idx"].to_numpy(), frame["item_idx"].to_numpy(), device
    )
    labels = frame["rating"].to_numpy() >= threshold
    return {
        "auc": metrics.auc(logits, labels),
        "logloss": metrics.logloss(probabilities(logits), labels),
    }


@dataclass
class Evaluation:
    """A model's metric rows and its NDCG by user activity."""

    metrics: list[Metric]
    by_activity: list[ActivityMetric]


def evaluate_all(
    model: Recommender,
    train: Interactions,
    held_out: Interactions,
    k: int,
    device: torch.device,
    positive_threshold: float,
    rating_range: tuple[float, float],
    max_users: int = 0,
    seed: int = 0,
) -> Evaluation:
    """Every metric that applies: ranking at K always (also by user activity; on a seeded
    sample of `max_users` users when > 0), RMSE/MAE for rating models, AUC/LogLoss for
    click-through models."""
    ranking = rank_held_out(model, train, held_out, k, device, positive_threshold, max_users, seed)
    rows = [Metric(model.name, name, k, value) for name, value in ranking.metrics.items()]
    if train.has_ratings and model.predicts_ratings:
        for name, value in evaluate_ratings(model, held_out, device, *rating_range).items():
            rows.append(Metric(model.name, name, None, value))
    if train.has_ratings and model.predicts_probabilities:
        for name, value in evaluate_clicks(model, held_out, device, positive_threshold).items():
            rows.append(Metric(model.name, name, None, value))
    return Evaluation(rows, ranking.by_activity)


def metrics_frame(rows: list[Metric], run_id: str, split: str) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "run_id": [run_id] * len(rows),
            "model": [r.model for r in rows],
            "split": [split] * len(rows),
            "metric": [r.metric for r in rows],
            "k": pl.Series([r.k for r in rows], dtype=pl.Int32),
            "value": pl.Series([r.value for r in rows], dtype=pl.Float64),
        }
    )


def activity_frame(rows: list[ActivityMetric], run_id: str, split: str) -> pl.DataFrame:
    """`metrics_by_activity` rows (DDL in sql/ddl/006_metrics_by_activity.sql)."""
    return pl.DataFrame(
        {
            "run_id": [run_id] * len(rows),
            "model": [r.model for r in rows],
            "split": [split] * len(rows),
            "k": pl.Series([r.k for r in rows], dtype=pl.Int32),
            "bucket": [r.bucket for r in rows],
            "min_history": pl.Series([r.min_history for r in rows], dtype=pl.Int64),
            "max_history": pl.Series([r.max_history for r in rows], dtype=pl.Int64),
            "num_users": pl.Series([r.num_users for r in rows], dtype=pl.Int64),
            "ndcg": pl.Series([r.ndcg for r in rows], dtype=pl.Float64),
        },
        schema={
            "run_id": pl.String,
            "model": pl.String,
            "split": pl.String,
            "k": pl.Int32,
            "bucket": pl.String,
            "min_history": pl.Int64,
            "max_history": pl.Int64,
            "num_users": pl.Int64,
            "ndcg": pl.Float64,
        },
    )
