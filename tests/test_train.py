import numpy as np
import pytest
import torch

from recsys.config import ColumnsConfig, DataConfig
from recsys.data.interactions import interactions_from_frame
from recsys.errors import TrainingError
from recsys.models import build_model
from recsys.synthetic import planted
from recsys.train import NegativeSampler, TrainSettings, fit, make_optimizer


def _data():
    frame = planted(num_users=100, num_items=60, per_user=10, seed=5).interactions
    return interactions_from_frame(frame, "planted", ColumnsConfig(), DataConfig())


def test_nan_loss_raises_a_clear_error() -> None:
    data = _data()
    model = build_model("mf_bias", data.num_users, data.num_items, lr=1e30, epochs=3)
    with pytest.raises(
        TrainingError, match=r"model 'mf_bias': loss became (nan|inf).* lower its learning rate"
    ):
        fit(model, data, None, TrainSettings())


def test_training_is_seeded() -> None:
    data = _data()
    weights = []
    for _ in range(2):
        model = build_model("bpr", data.num_users, data.num_items, dim=8, epochs=2)
        fit(model, data, None, TrainSettings(seed=11))
        weights.append(model.item_emb.weight.detach().clone())
    torch.testing.assert_close(weights[0], weights[1])


def test_early_stopping_restores_best_epoch() -> None:
    data = _data()
    from recsys.data.split import random_split

    train, valid = random_split(data, 0.2, seed=0)
    model = build_model(
        "mf_bias", data.num_users, data.num_items, dim=8, epochs=30, lr=0.05, reg=0.0
    )
    result = fit(model, train, valid, TrainSettings(patience=2))
    best = min(h["valid"] for h in result.history)
    assert result.history[result.best_epoch - 1]["valid"] == best
    assert len(result.history) <= result.best_epoch + 2


def test_negative_sampler_avoids_known_positives() -> None:
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(50), 10)
    items = np.concatenate(
        [rng.choice(20, 10, replace=False) for _ in range(50)]
    )  # half the catalogue
    sampler = NegativeSampler(users, items, num_items=20)
    query = torch.from_numpy(np.repeat(np.arange(50), 200))
    negatives = sampler.sample(query, torch.Generator().manual_seed(0))
    positive = set(zip(users.tolist(), items.tolist(), strict=True))
    collisions = sum(
        (u, j) in positive for u, j in zip(query.tolist(), negatives.tolist(), strict=True)
    )
    # uniform draws would hit a positive half the time; five redraws leave about 0.5^6
    assert collisions / len(query) < 0.05


def test_weight_decay_reaches_dense_weights_only() -> None:
    """DeepFM's weight_decay is L2 on its MLP's weight matrices; embedding tables (regularised
    by reg on the rows a batch uses) and biases are left alone."""
    model = build_model("deepfm", 5, 4, weight_decay=0.01)
    groups = make_optimizer(model, 4096).param_groups
    decayed = {id(p) for g in groups if g["weight_decay"] for p in g["params"]}
    names = {name for name, p in model.named_parameters() if id(p) in decayed}
    assert names == {"first_user.weight", "first_item.weight", "rest.2.weight", "rest.5.weight"}
    assert all(
        g["weight_decay"] == 0 for g in make_optimizer(build_model("deepfm", 5, 4), 64).param_groups
    )
