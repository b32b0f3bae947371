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
from recsys.models import REGISTRY, SELECTABLE, Feedback, build_model
from recsys.models.deepfm import DeepFM
from recsys.models.fm import feature_args
from recsys.models.layers import History, fm_pairwise
from recsys.score import SeenMatrix, scorer_for, top_n
from recsys.synthetic import planted, planted_clicks
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


def _featured_model(name: str, seed: int = 0, history: bool = False):
    """An FM-family model over planted user/item feature tables (multi-valued genres too),
    with the interactions as its history field when `history`."""
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
    model = build_model(name, inter.num_users, inter.num_items,
                        model_args=feature_args(*sides), dim=8, history=history)  # fmt: skip
    model.set_features(*sides)
    model.prepare(*(torch.tensor(inter.frame[c]) for c in ("user_idx", "item_idx", "rating")))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval(), inter, sides


@pytest.mark.parametrize("history", [False, True])
@pytest.mark.parametrize("name", ["fm", "deepfm"])
def test_featured_full_scoring_matches_forward(name: str, history: bool) -> None:
    model, inter, sides = _featured_model(name, history=history)
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


def _click_data(signal: float, seed: int = 0):
    """Planted click-through data as Interactions plus encoded side features."""
    data = planted_clicks(num_users=300, num_items=120, per_user=20, signal=signal, seed=seed)
    inter = interactions_from_frame(data.interactions, "clicks", ColumnsConfig(), DataConfig())
    config = FeaturesConfig()
    sides = [
        encode_side(ids, table.rename({f"{side}_id": "id"}), {name: "categorical"}, config, side)
        for side, ids, table, name in (
            ("user", inter.users, data.user_features, "segment"),
            ("item", inter.items, data.item_features, "category"),
        )
    ]
    return inter, sides


@pytest.mark.parametrize("name", ["fm", "deepfm"])
def test_ctr_model_learns_a_planted_feature_rule_and_not_noise(name: str) -> None:
    """logloss on labels set by a feature rule (segment == category): held-out AUC near 1;
    on coin-flip labels, near 0.5. Early stopping on an inner split, as in production; small
    batches give this small dataset enough steps per epoch for the logloss defaults' step size."""
    settings = TrainSettings(seed=0, batch_size=256, positive_threshold=4.0)
    results = {}
    for signal in (1.0, 0.0):
        inter, sides = _click_data(signal)
        train, test = random_split(inter, 0.2, seed=0)
        inner_train, inner_valid = random_split(train, 0.2, seed=1)
        model = build_model(name, inter.num_users, inter.num_items,
                            model_args=feature_args(*sides), loss="logloss")  # fmt: skip
        model.set_features(*sides)
        fit(model, inner_train, inner_valid, settings)
        u, i = test.frame["user_idx"].to_numpy(), test.frame["item_idx"].to_numpy()
        labels = test.frame["rating"].to_numpy() >= 4.0
        results[signal] = auc(predict_pairs(model, u, i, torch.device("cpu")), labels)
    assert results[1.0] > 0.95, results
    assert abs(results[0.0] - 0.5) < 0.06, results


def test_history_pools_partners_and_leaves_the_pair_out() -> None:
    """The pool equals sum_j y_j / sqrt(n) by brute force; a pair in the history leaves
    itself out (n - 1 partners), a pair outside it and an unknown row (-1) change nothing."""
    history = History(num_owners=4, num_partners=6, dim=3, init_std=1.0, max_len=10)
    pairs = {0: [1, 2, 5], 1: [0], 3: [2, 4]}
    owners = torch.tensor([o for o, ps in pairs.items() for _ in ps] + [0])  # (0, 1) twice
    history.set_pairs(owners, torch.tensor([p for ps in pairs.values() for p in ps] + [1]))
    y = history.emb.weight.detach()

    def brute(owner: int, leave_out: int | None = None) -> torch.Tensor:
        kept = [p for p in pairs.get(owner, []) if p != leave_out]
        return y[kept].sum(0) / max(len(kept), 1) ** 0.5 if kept else torch.zeros(3)

    rows = torch.tensor([0, 1, 2, 3, -1, 0])
    with torch.no_grad():
        pooled = history.pool(rows)
        left_out = history.pool(rows, torch.tensor([2, 0, 1, 3, 0, 4]))
    expected = [brute(0), brute(1), brute(2), brute(3), torch.zeros(3), brute(0)]
    torch.testing.assert_close(pooled, torch.stack(expected))
    expected = [brute(0, 2), brute(1, 0), brute(2), brute(3), torch.zeros(3), brute(0)]
    torch.testing.assert_close(left_out, torch.stack(expected))


def test_history_keeps_at_most_max_len_partners_and_reloads_at_any_size() -> None:
    torch.manual_seed(0)
    history = History(num_owners=3, num_partners=50, dim=2, init_std=0.1, max_len=7)
    owners = torch.tensor([0] * 40 + [1] * 3)
    history.set_pairs(owners, torch.cat([torch.arange(40), torch.arange(3)]))
    per_owner = torch.bincount(history.keys // 50, minlength=3)
    assert per_owner.tolist() == [7, 3, 0]
    fresh = History(num_owners=3, num_partners=50, dim=2, init_std=0.1, max_len=7)
    fresh.load_state_dict(history.state_dict())  # an untrained model has no history yet
    torch.testing.assert_close(fresh.pool(torch.arange(3)), history.pool(torch.arange(3)))


def test_loss_defaults_apply_to_their_loss_and_user_settings_win() -> None:
    ranking = build_model("deepfm", 3, 3)
    assert ranking.hparams["loss"] == "bce" and not ranking.hparams["history"]
    ctr = build_model("deepfm", 3, 3, loss="logloss")
    assert ctr.hparams == {**DeepFM.DEFAULTS, **DeepFM.LOSS_DEFAULTS["logloss"], "loss": "logloss"}
    assert ctr.predicts_probabilities and not ctr.predicts_ratings
    assert build_model("fm", 3, 3, loss="logloss", lr=0.01).hparams["lr"] == 0.01
    assert build_model("fm", 3, 3, loss="mse").predicts_ratings
    for cls in REGISTRY.values():  # loss defaults only set parameters the model has
        for loss, overrides in cls.LOSS_DEFAULTS.items():
            assert set(overrides) <= set(cls.DEFAULTS), (cls.name, loss)
