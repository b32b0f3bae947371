"""Models: the full-scoring form equals forward on tiled pairs; planted structure is learned,
pure noise is not."""

import numpy as np
import pytest
import torch

from recsys.config import ColumnsConfig, DataConfig, FeaturesConfig
from recsys.data.features import detect_kinds, encode_side
from recsys.data.interactions import interactions_from_frame
from recsys.data.split import random_split, temporal_split
from recsys.errors import ConfigError
from recsys.evaluate import evaluate_ranking, predict_pairs
from recsys.metrics import auc
from recsys.models import SELECTABLE, Feedback, build_model
from recsys.models.fm import feature_args
from recsys.models.layers import fm_pairwise
from recsys.score import SeenMatrix, scorer_for, top_n
from recsys.synthetic import planted
from recsys.train import TrainSettings, fit

# float32 sums of 16-64 products: agreement to 1e-5 relative.
TOLERANCE = dict(rtol=1e-5, atol=1e-5)


def random_feedback(num_users: int, num_items: int, n: int = 200) -> Feedback:
    """Distinct random (user, item) pairs with counts and positions (for closed-form fits)."""
    keys = torch.unique(torch.randint(0, num_users * num_items, (n,)))
    u, i = keys // num_items, keys % num_items
    ones = torch.ones(len(keys))
    return Feedback(u, i, ones * 4, torch.randint(1, 4, (len(keys),)).float(),
                    torch.rand(len(keys)) * 10, torch.rand(len(keys)) * 1e6, num_users, num_items)  # fmt: skip


@pytest.mark.parametrize("name", SELECTABLE)
def test_full_scoring_matches_forward_on_tiled_pairs(name: str) -> None:
    torch.manual_seed(0)
    num_users, num_items = 13, 11
    model = build_model(name, num_users, num_items)
    feedback = random_feedback(num_users, num_items)
    model.prepare(feedback.user_idx, feedback.item_idx, torch.rand(len(feedback.user_idx)) * 4 + 1)
    if not model.trainable:
        model.fit_direct(feedback)
    model.eval()
    with torch.no_grad():
        for p in model.parameters():  # non-trivial biases too
            p.add_(torch.randn_like(p) * 0.1)
        users = torch.arange(num_users)
        full = model.score_block(users)  # (U, I)
        tiled = model(users.repeat_interleave(num_items), torch.arange(num_items).repeat(num_users))
    torch.testing.assert_close(full, tiled.view(num_users, num_items), **TOLERANCE)


def test_unknown_model_and_parameter() -> None:
    with pytest.raises(ConfigError, match="unknown model 'svdpp'"):
        build_model("svdpp", 2, 2)
    with pytest.raises(ConfigError, match=r"model 'mf_bias': unknown parameter\(s\) dims"):
        build_model("mf_bias", 2, 2, dims=3)


def _cluster_precision(model, data, clusters_u, clusters_i, k=10) -> float:
    """Share of each user's top-k unseen items that come from the user's planted cluster."""
    indptr, indices = data.csr()
    users, items = data.users.ids.to_numpy() - 1, data.items.ids.to_numpy() - 1
    hits = []
    for chunk in top_n(scorer_for(model, torch.device("cpu")), k, SeenMatrix(indptr, indices)):
        rec_clusters = clusters_i[items[chunk.key_idx]]
        hits.append(rec_clusters == clusters_u[users[chunk.query_idx]][:, None])
    return float(np.concatenate(hits).mean())


def _planted_interactions(affinity: float, seed: int = 1):
    data = planted(
        num_users=400, num_items=200, per_user=25, num_clusters=8, affinity=affinity, seed=seed
    )
    return data, interactions_from_frame(
        data.interactions, "planted", ColumnsConfig(), DataConfig()
    )


RANKING_SETTINGS = {
    "bpr": {"dim": 16, "epochs": 25},
    "ials": {"dim": 16, "reg": 1.0},
    "ease": {"reg": 50.0},
    "itemknn": {"neighbours": 30},
}


@pytest.mark.parametrize("name", sorted(RANKING_SETTINGS))
def test_ranking_models_recover_planted_clusters_and_not_noise(name: str) -> None:
    settings = TrainSettings(seed=0, batch_size=1024)
    results = {}
    for affinity in (4.0, 0.0):
        data, inter = _planted_interactions(affinity)
        model = build_model(name, inter.num_users, inter.num_items, **RANKING_SETTINGS[name])
        fit(model, inter, None, settings)
        results[affinity] = _cluster_precision(model, inter, data.user_cluster, data.item_cluster)
    assert results[4.0] > 0.6, results  # planted: most recommendations come from the user's cluster
    assert abs(results[0.0] - 1 / 8) < 0.08, results  # noise: chance level


@pytest.mark.parametrize("name", ["mf", "mf_bias"])
def test_rating_models_recover_planted_preferences_and_not_noise(name: str) -> None:
    """Held-out predicted ratings separate in-cluster from out-of-cluster pairs (AUC near 1)
    when ratings carry the clusters, and do not (AUC near 0.5) when they are noise."""
    settings = TrainSettings(seed=0, batch_size=1024)
    results = {}
    for signal in (2.0, 0.0):
        data = planted(num_users=400, num_items=200, per_user=40, num_clusters=4, affinity=0.5,
                       rating_signal=signal, seed=4)  # fmt: skip
        inter = interactions_from_frame(data.interactions, "planted", ColumnsConfig(), DataConfig())
        train, test = random_split(inter, 0.2, seed=0)
        model = build_model(name, inter.num_users, inter.num_items, dim=16)  # default epochs
        fit(model, train, None, settings)
        u, i = test.frame["user_idx"].to_numpy(), test.frame["item_idx"].to_numpy()
        in_cluster = (
            data.user_cluster[inter.users.ids.to_numpy()[u] - 1]
            == data.item_cluster[inter.items.ids.to_numpy()[i] - 1]
        )
        results[signal] = auc(predict_pairs(model, u, i, torch.device("cpu")), in_cluster)
    assert results[2.0] > 0.85, results
    assert abs(results[0.0] - 0.5) < 0.07, results


def test_bpr_beats_popularity_on_held_out_planted_items() -> None:
    _, inter = _planted_interactions(4.0, seed=2)
    train, valid = temporal_split(inter, 0.2, seed=0)
    settings = TrainSettings(seed=0, batch_size=1024)
    scores = {}
    for name in ("popularity", "bpr"):
        model = build_model(
            name, inter.num_users, inter.num_items, **({"dim": 16} if name == "bpr" else {})
        )
        fit(model, train, valid, settings)
        scores[name] = evaluate_ranking(model, train, valid, 10, torch.device("cpu"))["recall"]
    assert scores["bpr"] > 2 * scores["popularity"], scores


def _featured_model(name: str, seed: int = 0):
    """An FM-family model over planted user/item feature tables (multi-valued genres too)."""
    data = planted(num_users=30, num_items=25, per_user=5, seed=seed)
    inter = interactions_from_frame(data.interactions, "planted", ColumnsConfig(), DataConfig())
    config = FeaturesConfig()
    sides = []
    for side, ids, table in (
        ("user", inter.users, data.user_features),
        ("item", inter.items, data.item_features),
    ):
        table = table.rename({f"{side}_id": "id"}).drop("title", strict=False)
        sides.append(encode_side(ids, table, detect_kinds(table, config.separator), config, side))
    model = build_model(
        name, inter.num_users, inter.num_items, model_args=feature_args(*sides), dim=8
    )
    model.set_features(*sides)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval(), inter, sides


@pytest.mark.parametrize("name", ["fm", "deepfm"])
def test_featured_full_scoring_matches_forward(name: str) -> None:
    model, inter, sides = _featured_model(name)
    assert (
        sides[1].index.shape[1] == 3 and sides[1].index.shape[2] >= 2
    )  # id, year, multi-valued genres
    users = torch.arange(inter.num_users)
    with torch.no_grad():
        full = model.score_block(users)
        tiled = model(
            users.repeat_interleave(inter.num_items),
            torch.arange(inter.num_items).repeat(inter.num_users),
        )
    torch.testing.assert_close(full, tiled.view(inter.num_users, inter.num_items), **TOLERANCE)


def test_fm_interaction_equals_brute_force_pairwise_sum() -> None:
    fields = torch.randn(7, 6, 5, dtype=torch.float64)  # (B, F, k)
    brute = torch.zeros(7, dtype=torch.float64)
    for f in range(6):
        for g in range(f + 1, 6):
            brute += (fields[:, f] * fields[:, g]).sum(-1)
    torch.testing.assert_close(fm_pairwise(fields), brute)


def test_fm_forward_equals_brute_force_over_raw_features() -> None:
    """The whole FM score from first principles: w0 + linear terms + every cross-field pair."""
    model, inter, _ = _featured_model("fm", seed=1)
    u, i = torch.tensor([0, 3, 7]), torch.tensor([1, 2, 9])
    with torch.no_grad():
        got = model(u, i)
        for row in range(3):
            vectors, linear = [], model.w0.clone()
            for side, idx in ((model.user, u[row]), (model.item, i[row])):
                for f in range(side.index.shape[1]):
                    ids, w = side.index[idx, f], side.weight[idx, f]
                    vectors.append((side.emb.weight[ids] * w[:, None]).sum(0))
                    linear += (side.bias.weight[ids, 0] * w).sum()
            pairs = sum(
                (vectors[a] * vectors[b]).sum()
                for a in range(len(vectors))
                for b in range(a + 1, len(vectors))
            )
            torch.testing.assert_close(got[row], linear + pairs, rtol=1e-5, atol=1e-5)
