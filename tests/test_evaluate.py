"""Accuracy by user activity: buckets of training-history length, NDCG by the same definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.config import ColumnsConfig, DataConfig
from recsys.data.interactions import interactions_from_frame
from recsys.data.split import random_split
from recsys.evaluate import ActivityMetric, activity_frame, by_activity, evaluate_all, predict_pairs
from recsys.metrics import auc, logloss, ranking_metrics
from recsys.models import build_model
from recsys.synthetic import planted_clicks


def test_buckets_by_history_length_with_the_overall_definition() -> None:
    rng = np.random.default_rng(0)
    history = np.array([0, 1, 3, 4, 5, 9, 12, 700, 700, 2])
    hits = rng.random((len(history), 5)) < 0.3
    num_relevant = np.array([1, 2, 3, 1, 0, 2, 4, 1, 3, 2])  # one user with nothing to find
    rows = by_activity("bpr", hits, num_relevant, history, k=5, edges=(0, 1, 5, 10, 500))
    assert [(r.bucket, r.min_history, r.max_history, r.num_users) for r in rows] == [
        ("0", 0, 0, 1), ("1-4", 1, 4, 4), ("5-9", 5, 9, 1), ("10-499", 10, 499, 1),
        ("500+", 500, None, 2)]  # fmt: skip
    for row in rows:
        users = (history >= row.min_history) & (num_relevant > 0)
        if row.max_history is not None:
            users &= history <= row.max_history
        assert row.ndcg == ranking_metrics(hits[users], num_relevant[users], 5)["ndcg"]
    overall = ranking_metrics(hits, num_relevant, 5)["ndcg"]
    weighted = sum(r.ndcg * r.num_users for r in rows) / sum(r.num_users for r in rows)
    assert weighted == pytest.approx(overall)


def test_empty_buckets_are_left_out_and_rows_frame() -> None:
    hits = np.array([[True, False, False], [True, False, False]])  # each user's one item first
    rows = by_activity("mf", hits, np.array([1, 1]), np.array([7, 8]), 3)
    assert rows == [ActivityMetric("mf", "5-9", 5, 9, 2, 3, 1.0)]
    frame = activity_frame(rows, "r1", "validation")
    assert frame.row(0) == ("r1", "mf", "validation", 3, "5-9", 5, 9, 2, 1.0)
    assert activity_frame([], "r1", "validation").height == 0


def test_click_through_models_report_auc_and_logloss_rating_models_rmse() -> None:
    data = planted_clicks(num_users=40, num_items=30, per_user=8, seed=2)
    inter = interactions_from_frame(data.interactions, "clicks", ColumnsConfig(), DataConfig())
    train, held_out = random_split(inter, 0.3, seed=0)
    cpu = torch.device("cpu")
    rows = {}
    for loss in ("logloss", "mse"):
        model = build_model("fm", inter.num_users, inter.num_items, loss=loss).eval()
        metrics = evaluate_all(model, train, held_out, 5, cpu, 4.0, (1.0, 5.0)).metrics
        rows[loss] = {m.metric: m.value for m in metrics if m.k is None}
    assert set(rows["logloss"]) == {"auc", "logloss"} and set(rows["mse"]) == {"rmse", "mae"}
    model = build_model("fm", inter.num_users, inter.num_items, loss="logloss").eval()
    u, i = held_out.frame["user_idx"].to_numpy(), held_out.frame["item_idx"].to_numpy()
    logits = predict_pairs(model, u, i, cpu)
    labels = held_out.frame["rating"].to_numpy() >= 4.0
    assert rows["logloss"]["auc"] == pytest.approx(auc(logits, labels))
    assert rows["logloss"]["logloss"] == pytest.approx(logloss(1 / (1 + np.exp(-logits)), labels))
