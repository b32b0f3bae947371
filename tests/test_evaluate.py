"""Accuracy by user activity: buckets of training-history length, NDCG by the same definition."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.evaluate import ActivityMetric, activity_frame, by_activity
from recsys.metrics import ranking_metrics


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
