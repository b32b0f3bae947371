"""The chunked scorer equals a dense brute-force top-N for every chunk size."""

import numpy as np
import pytest
import torch

from recsys.score import BYTES_PER_SCORE, FactorScorer, SeenMatrix, chunk_rows, top_n


def _case(seed: int = 0, num_users: int = 57, num_items: int = 40):
    rng = np.random.default_rng(seed)
    user, item = (
        torch.randn(num_users, 8, generator=torch.Generator().manual_seed(seed)),
        torch.randn(num_items, 8),
    )
    seen_sets = [
        sorted(set(rng.choice(num_items, rng.integers(0, 12), replace=True).tolist()))
        for _ in range(num_users)
    ]
    seen_sets[3] = list(range(num_items))  # has seen everything
    seen_sets[4] = list(range(num_items - 4))  # fewer unseen items than N
    indptr = np.zeros(num_users + 1, np.int64)
    indptr[1:] = np.cumsum([len(s) for s in seen_sets])
    seen = SeenMatrix(indptr, np.concatenate([np.asarray(s, np.int32) for s in seen_sets]))
    return user, item, seen, seen_sets


def _dense_reference(user, item, seen_sets, n):
    dense = user @ item.T
    for q, s in enumerate(seen_sets):
        dense[q, s] = -np.inf
    values, idx = torch.topk(dense, n, dim=1)
    return values, idx


@pytest.mark.parametrize("budget", [1, 40 * BYTES_PER_SCORE * 5, 40 * BYTES_PER_SCORE * 16, 2**30])
@pytest.mark.parametrize("subset", [False, True])
def test_chunked_equals_dense(budget: int, subset: bool) -> None:
    user, item, seen, seen_sets = _case()
    queries = np.array([0, 3, 4, 9, 10, 11, 40, 56]) if subset else None
    values, idx = _dense_reference(user, item, seen_sets, 10)
    chunks = list(top_n(FactorScorer(user, item), 10, seen, queries=queries, budget_bytes=budget))
    got = np.concatenate([c.query_idx for c in chunks])
    assert got.tolist() == (queries.tolist() if subset else list(range(57)))
    for chunk in chunks:
        for row, q in enumerate(chunk.query_idx):
            finite = torch.isfinite(values[q])
            count = chunk.counts[row]
            assert count == int(finite.sum())
            assert chunk.key_idx[row, :count].tolist() == idx[q][finite].tolist()
            np.testing.assert_allclose(
                chunk.score[row, :count], values[q][finite].numpy(), rtol=1e-5, atol=1e-5
            )
            assert not set(chunk.key_idx[row, :count].tolist()) & set(seen_sets[q])


def test_user_with_everything_seen_gets_no_rows_and_short_lists_stay_short() -> None:
    user, item, seen, _ = _case()
    (chunk,) = list(top_n(FactorScorer(user, item), 10, seen))
    assert chunk.counts[3] == 0
    assert chunk.counts[4] == 4


def test_n_larger_than_catalogue() -> None:
    user, item, _, _ = _case(num_items=5)
    (chunk,) = list(top_n(FactorScorer(user, item), 10, SeenMatrix.empty(57)))
    assert chunk.key_idx.shape == (57, 5)
    assert (chunk.counts == 5).all()


def test_chunk_rows_follows_budget() -> None:
    assert chunk_rows(1000, torch.device("cpu"), 1000 * BYTES_PER_SCORE * 7) == 7
    assert chunk_rows(1000, torch.device("cpu"), 1) == 1
