"""Item-item models (EASE, item-kNN), iALS by alternating least squares, confidence and
recency weights, and blends: each against a brute-force reference or a planted effect."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
import torch

from recsys.checkpoint import TrainedModel, load_checkpoint, save_checkpoint
from recsys.config import ColumnsConfig, DataConfig
from recsys.data.interactions import interactions_from_frame
from recsys.data.split import temporal_split
from recsys.errors import ConfigError
from recsys.evaluate import evaluate_ranking
from recsys.models import build_model
from recsys.models.base import Feedback
from recsys.models.blend import Blend, standardise
from recsys.models.ials import _Entries, _solve
from recsys.models.itemknn import nearest_neighbours
from recsys.models.weighting import confidence, recency
from recsys.score import SeenMatrix
from recsys.synthetic import planted
from recsys.train import TrainSettings, feedback, fit

CPU = torch.device("cpu")


def _matrix(num_users: int = 40, num_items: int = 30, density: float = 0.2, seed: int = 0):
    rng = np.random.default_rng(seed)
    dense = (rng.random((num_users, num_items)) < density).astype(np.float32)
    dense *= rng.integers(1, 4, dense.shape)  # repeated plays
    return dense


def _feedback(dense: np.ndarray, position: np.ndarray | None = None) -> Feedback:
    u, i = np.nonzero(dense)
    n = len(u)
    pos = np.zeros(n, np.float32) if position is None else position[u, i].astype(np.float32)
    return Feedback(torch.from_numpy(u.astype(np.int64)), torch.from_numpy(i.astype(np.int64)),
                    torch.ones(n), torch.from_numpy(dense[u, i]), torch.from_numpy(pos),
                    torch.zeros(n), dense.shape[0], dense.shape[1],
                    ordered=position is not None)  # fmt: skip


def test_ease_solves_its_constrained_least_squares() -> None:
    """B has a zero diagonal and satisfies the stationarity condition of
    min ||X - XB||^2 + reg ||B||^2 s.t. diag B = 0: off the diagonal, (X'X + reg I) B = X'X."""
    dense = _matrix()
    model = build_model("ease", *dense.shape, reg=7.0, confidence="none", half_life=0.0)
    model.fit_direct(_feedback(dense))
    b = model.item_matrix.double().numpy()
    binary = (dense > 0).astype(np.float64)
    gram = binary.T @ binary
    lhs = (gram + 7.0 * np.eye(len(gram))) @ b
    off = ~np.eye(len(gram), dtype=bool)
    np.testing.assert_allclose(np.diag(b), 0.0)
    np.testing.assert_allclose(lhs[off], gram[off], atol=1e-4)
    # scores are the profiles times B
    scores = model.score_block(torch.arange(dense.shape[0])).double().numpy()
    np.testing.assert_allclose(scores, binary @ b, atol=1e-4)


@pytest.mark.parametrize("chunk_entries", [10**9, 50])
def test_item_knn_neighbours_equal_brute_force_shrunk_cosine(chunk_entries: int) -> None:
    dense = _matrix(seed=1)
    items, weights = nearest_neighbours(sp.csr_matrix(dense), 5, 3.0, chunk_entries)
    norms = np.sqrt((dense**2).sum(0))
    sims = (dense.T @ dense) / (norms[:, None] * norms[None, :] + 3.0 + 1e-12)
    np.fill_diagonal(sims, -np.inf)
    for i in range(dense.shape[1]):
        expected = np.sort(sims[i][sims[i] > 0])[::-1][:5]
        np.testing.assert_allclose(weights[i, : len(expected)], expected, rtol=1e-5)
        np.testing.assert_allclose(sims[i, items[i, : len(expected)]], expected, rtol=1e-5)
        assert (weights[i, len(expected) :] == 0).all() and (items[i, len(expected) :] == i).all()


def test_item_knn_scores_are_profiles_times_the_neighbour_matrix() -> None:
    dense = _matrix(seed=2)
    model = build_model("itemknn", *dense.shape, neighbours=4, shrink=1.0, confidence="none",
                        half_life=0.0)  # fmt: skip
    model.fit_direct(_feedback(dense))
    neighbours = np.zeros((dense.shape[1],) * 2)
    for i in range(dense.shape[1]):
        np.add.at(
            neighbours[i], model.neighbour_items[i].numpy(), model.neighbour_weights[i].numpy()
        )
    scores = model.score_block(torch.arange(dense.shape[0])).double().numpy()
    np.testing.assert_allclose(scores, (dense > 0) @ neighbours, atol=1e-5)


def test_ials_conjugate_gradient_reaches_the_exact_least_squares_solution() -> None:
    """With as many CG steps as dimensions, one half-step equals the direct solve of
    (Y'Y + Y'(C_u - I)Y + reg I) x_u = Y' C_u p_u for every user."""
    torch.manual_seed(0)
    dense = _matrix(num_users=12, num_items=9, density=0.4)
    u, i = np.nonzero(dense)
    extra = torch.from_numpy(2.0 * dense[u, i]).double() - 1.0  # c = 2 x plays
    y = torch.randn(9, 4, dtype=torch.float64)
    x = torch.zeros(12, 4, dtype=torch.float64)
    entries = _Entries(torch.from_numpy(u), torch.from_numpy(i), extra, 12)
    _solve(x, y, entries, reg=0.5, steps=4)
    for user in range(12):
        c = np.ones(9)
        c[dense[user] > 0] = 2.0 * dense[user][dense[user] > 0]
        p = (dense[user] > 0).astype(np.float64)
        yn = y.numpy()
        exact = np.linalg.solve(yn.T @ (c[:, None] * yn) + 0.5 * np.eye(4), yn.T @ (c * p))
        np.testing.assert_allclose(x[user].numpy(), exact, rtol=1e-6, atol=1e-8)


def test_confidence_schemes() -> None:
    dense = np.array([[1, 4, 0], [0, 1, 1], [0, 1, 0]], dtype=np.float32)
    fb = _feedback(dense)
    np.testing.assert_allclose(confidence(fb, "none").numpy(), 1.0)
    np.testing.assert_allclose(confidence(fb, "log").numpy(), 1 + np.log(dense[np.nonzero(dense)]))
    idf = np.log(3 / np.array([1, 3, 1]))  # users per item: 1, 3, 1
    np.testing.assert_allclose(
        confidence(fb, "tfidf").numpy(), dense[np.nonzero(dense)] * idf[np.nonzero(dense)[1]],
        rtol=1e-6,
    )  # fmt: skip
    # Okapi BM25 with K1 = 1.2, B = 0.75: idf log(N / (1 + df)) (floored at 0), tf saturating
    # in the play count, user rows normalised by their total against the average
    u, i = np.nonzero(dense)
    idf = np.maximum(np.log(3 / (1 + np.array([1, 3, 1]))), 0) + 1e-6
    length = dense.sum(1)
    norm = 0.25 + 0.75 * length / length.mean()
    tf = dense[u, i] * 2.2 / (1.2 * norm[u] + dense[u, i])
    np.testing.assert_allclose(confidence(fb, "bm25").numpy(), tf * idf[i], rtol=1e-5)
    with pytest.raises(ConfigError, match="unknown confidence 'loud'"):
        build_model("ease", 3, 3, confidence="loud")


def test_recency_halves_per_half_life_and_is_off_without_time_order() -> None:
    dense = np.ones((1, 4), dtype=np.float32)
    position = np.array([[0, 1, 2, 4]], dtype=np.float32)
    np.testing.assert_allclose(
        recency(_feedback(dense, position), 2.0, "position").numpy(), [1, 0.5**0.5, 0.5, 0.25]
    )
    np.testing.assert_allclose(recency(_feedback(dense), 2.0, "position").numpy(), 1.0)
    np.testing.assert_allclose(recency(_feedback(dense, position), 0.0, "position").numpy(), 1.0)
    with pytest.raises(ConfigError, match=r"half_life = -1 must be at least 0"):
        build_model("itemknn", 1, 4, half_life=-1)


def _taste_switch(num_users: int = 300, num_items: int = 60, seed: int = 0) -> pl.DataFrame:
    """Every user first picks items of taste A, then (later) of taste B; the held-out latest
    interactions are B's. Item tastes: A = items 1..30, B = 31..60, in pairs of users."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(1, num_users + 1):
        first = rng.choice(np.arange(1, 31), 12, replace=False)
        then = rng.choice(np.arange(31, 61), 8, replace=False)
        if user % 2:  # half the users go the other way round
            first, then = first + 30, then - 30
        for t, item in enumerate([*first, *then]):
            rows.append((user, int(item), 1_600_000_000 + 1000 * t))
    return pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp"], orient="row")


@pytest.mark.parametrize("name", ["ease", "itemknn"])
def test_recency_weighting_follows_a_change_of_taste(name: str) -> None:
    data = interactions_from_frame(_taste_switch(), "switch", ColumnsConfig(), DataConfig())
    train, test = temporal_split(data, 0.2, seed=0)
    recall = {}
    for half_life in (0.0, 2.0):
        model = build_model(name, data.num_users, data.num_items, half_life=half_life)
        fit(model, train, None, TrainSettings())
        recall[half_life] = evaluate_ranking(model, train, test, 5, CPU)["recall"]
    assert recall[2.0] > recall[0.0] + 0.1, recall


def test_repeated_rows_become_confidence() -> None:
    """A user's heavily repeated item dominates their profile with log confidence: its
    neighbour comes first; counted once it ties with the single-play item's neighbour."""
    frame = pl.DataFrame(
        {
            "user_id": [1] * 6 + [2, 2, 3, 3],
            "item_id": [10, 10, 10, 10, 10, 20, 10, 11, 20, 21],
        }
    )
    data = interactions_from_frame(frame, "plays", ColumnsConfig(), DataConfig())
    assert data.frame.filter(pl.col("item_idx") == 0)["weight"].to_list()[0] == 5.0
    first = {}
    for scheme in ("none", "log"):
        model = build_model("itemknn", data.num_users, data.num_items, confidence=scheme,
                            neighbours=5, shrink=0.0)  # fmt: skip
        fit(model, data, None, TrainSettings())
        scores = model.score_block(torch.tensor([0]))[0]
        items = data.items.ids.to_list()
        first[scheme] = (float(scores[items.index(11)]), float(scores[items.index(21)]))
    assert first["none"][0] == pytest.approx(first["none"][1])
    assert first["log"][0] > 1.2 * first["log"][1]


def test_weight_column_is_summed_and_validated() -> None:
    frame = pl.DataFrame({"user_id": [1, 1, 2], "item_id": [5, 5, 5], "weight": ["2", "3.5", "1"]})
    data = interactions_from_frame(frame, "w.csv", ColumnsConfig(), DataConfig())
    assert sorted(data.frame["weight"].to_list()) == [1.0, 5.5]
    bad = frame.with_columns(pl.Series("weight", ["2", "-1", "1"]))
    with pytest.raises(
        Exception, match=r"w.csv: column 'weight' row 2: expected a non-negative number"
    ):
        interactions_from_frame(bad, "w.csv", ColumnsConfig(), DataConfig())


class _Fixed(torch.nn.Module):
    """Scores given as a matrix (blend members in tests)."""

    def __init__(self, scores: torch.Tensor) -> None:
        super().__init__()
        self.scores = scores
        self.num_users, self.num_items = scores.shape
        self.name, self.hparams, self.model_args = "fixed", {}, {}
        self.uses_features = self.has_item_matrix = False
        self.bytes_per_score = 12

    def score_block(self, user_idx: torch.Tensor) -> torch.Tensor:
        return self.scores[user_idx]


def test_blend_is_the_weighted_sum_of_standardised_member_scores() -> None:
    torch.manual_seed(0)
    a, b = torch.randn(5, 8) * 10 + 3, torch.randn(5, 8) * 0.01
    blend = Blend.of([_Fixed(a), _Fixed(b)], [0.7, 0.3])
    rows = torch.tensor([0, 3])
    expected = 0.7 * (a - a.mean(1, keepdim=True)) / a.std(1, keepdim=True, correction=0)
    expected += 0.3 * (b - b.mean(1, keepdim=True)) / b.std(1, keepdim=True, correction=0)
    torch.testing.assert_close(blend.score_block(rows), expected[rows])
    torch.testing.assert_close(standardise(torch.ones(2, 3)), torch.zeros(2, 3))
    with pytest.raises(ConfigError, match="a blend needs at least two trained members"):
        build_model("blend", 2, 2)


@pytest.mark.parametrize("name", ["ease", "itemknn", "ials"])
def test_checkpoints_of_closed_form_models_and_blends_score_the_same(tmp_path, name) -> None:
    data = planted(num_users=60, num_items=40, per_user=8, seed=5)
    inter = interactions_from_frame(data.interactions, "planted", ColumnsConfig(), DataConfig())
    models = []
    for member in (name, "popularity"):
        model = build_model(member, inter.num_users, inter.num_items)
        fit(model, inter, None, TrainSettings())
        models.append(model)
    indptr, indices = inter.csr()
    for model in (models[0], Blend.of(models, [0.6, 0.4])):
        trained = TrainedModel(model, inter.users, inter.items, SeenMatrix(indptr, indices),
                               pl.DataFrame({"item_id": inter.items.ids}))  # fmt: skip
        save_checkpoint(trained, tmp_path / "m.pt")
        loaded = load_checkpoint(tmp_path / "m.pt").model
        users = torch.arange(inter.num_users)
        with torch.no_grad():
            torch.testing.assert_close(loaded.score_block(users), model.score_block(users))


def test_feedback_positions_count_back_from_each_users_latest() -> None:
    frame = pl.DataFrame(
        {"user_id": [1, 1, 1, 2], "item_id": [1, 2, 3, 1], "timestamp": [30, 10, 20, 5]}
    )
    fb = feedback(interactions_from_frame(frame, "t", ColumnsConfig(), DataConfig()))
    by_item = dict(
        zip((fb.item_idx + 10 * fb.user_idx).tolist(), fb.position.tolist(), strict=True)
    )
    assert by_item == {0: 0.0, 1: 2.0, 2: 1.0, 10: 0.0}
    assert fb.ordered
