"""Each metric against a hand-computed case."""

import math

import numpy as np
import pytest

from recsys.metrics import auc, coverage, logloss, mae, ranking_metrics, rmse

# user 0: relevant {a, b, c}; list [a, x, b, y] -> hits at ranks 1 and 3
# user 1: relevant {z};       list [x, y, w, z] -> hit at rank 4
# user 2: no relevant items  -> ignored
HITS = np.array([[1, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]], dtype=bool)
RELEVANT = np.array([3, 1, 0])


def test_precision_recall_hitrate() -> None:
    m = ranking_metrics(HITS, RELEVANT, k=4)
    assert m["precision"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert m["recall"] == pytest.approx((2 / 3 + 1 / 1) / 2)
    assert m["hitrate"] == pytest.approx(1.0)


def test_ndcg() -> None:
    user0 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3) + 1 / math.log2(4))
    user1 = (1 / math.log2(5)) / 1
    assert ranking_metrics(HITS, RELEVANT, k=4)["ndcg"] == pytest.approx((user0 + user1) / 2)


def test_map() -> None:
    user0 = (1 / 1 + 2 / 3) / 3  # precision at each hit, over min(relevant, K) = 3
    user1 = (1 / 4) / 1
    assert ranking_metrics(HITS, RELEVANT, k=4)["map"] == pytest.approx((user0 + user1) / 2)


def test_cutoff_and_short_lists() -> None:
    m = ranking_metrics(HITS, RELEVANT, k=2)  # only ranks 1-2 count
    assert m["precision"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["hitrate"] == pytest.approx(0.5)
    short = ranking_metrics(np.array([[True]]), np.array([1]), k=10)  # list shorter than K
    assert short["precision"] == pytest.approx(0.1)
    assert short["ndcg"] == pytest.approx(1.0)


def test_coverage_rmse_mae() -> None:
    assert coverage(np.array([1, 2, 2, 5]), num_items=10) == pytest.approx(0.3)
    assert rmse(np.array([1.0, 3.0]), np.array([2.0, 5.0])) == pytest.approx(math.sqrt((1 + 4) / 2))
    assert mae(np.array([1.0, 3.0]), np.array([2.0, 5.0])) == pytest.approx(1.5)


def test_auc_counts_ordered_pairs_and_half_ties() -> None:
    scores = np.array([0.9, 0.5, 0.5, 0.1])
    labels = np.array([True, True, False, False])
    # positive-negative pairs: (0.9>0.5), (0.9>0.1), (0.5=0.5: half), (0.5>0.1) -> 3.5 / 4
    assert auc(scores, labels) == pytest.approx(3.5 / 4)
    assert math.isnan(auc(scores, np.ones(4, dtype=bool)))


def test_logloss_by_hand_and_clipped() -> None:
    p, y = np.array([0.9, 0.2, 0.5]), np.array([True, False, False])
    assert logloss(p, y) == pytest.approx(-(math.log(0.9) + math.log(0.8) + math.log(0.5)) / 3)
    # the constant predictor at the positive rate costs the labels' entropy
    assert logloss(np.full(4, 0.25), np.array([1, 0, 0, 0])) == pytest.approx(
        -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    )
    assert math.isfinite(logloss(np.array([0.0, 1.0]), np.array([True, False])))
