"""Similar items and cold-start routing: every user and item gets a useful list."""

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import torch

from recsys.config import Config
from recsys.dataset import load_dataset
from recsys.recommend import recommendation_batches, similar_item_batches
from recsys.select import train_and_choose
from recsys.synthetic import planted

CPU = torch.device("cpu")


def _write_planted(tmp_path: Path, cold_users: int = 0, new_items: int = 0):
    """Planted data on disk; the last `cold_users` users lose their interactions (they keep
    their features) and the last `new_items` items lose theirs."""
    data = planted(num_users=240, num_items=120, per_user=20, num_clusters=6, seed=3)
    events = data.interactions.filter(
        (pl.col("user_id") <= 240 - cold_users) & (pl.col("item_id") <= 120 - new_items)
    )
    events.write_csv(tmp_path / "events.csv")
    data.user_features.write_csv(tmp_path / "users.csv")
    data.item_features.drop("title").write_csv(tmp_path / "items.csv")
    config = Config()
    config.source.interactions = str(tmp_path / "events.csv")
    config.source.user_features = str(tmp_path / "users.csv")
    config.source.item_features = str(tmp_path / "items.csv")
    config.model.params = {"fm": {"dim": 16, "epochs": 15}, "ials": {"dim": 16, "iterations": 5}}
    return data, config


def _train(config: Config, model: str):
    config.model.name = model
    return train_and_choose(load_dataset(config), config, CPU)


def _table(batches) -> pl.DataFrame:
    return pl.from_arrow(pa.concat_tables(list(batches)))


@pytest.fixture(scope="module")
def fm_cold(tmp_path_factory: pytest.TempPathFactory):
    data, config = _write_planted(tmp_path_factory.mktemp("fm"), cold_users=24, new_items=12)
    return data, _train(config, "fm")


def test_cold_users_get_feature_lists_from_feature_models(fm_cold) -> None:
    data, trained = fm_cold
    recs = _table(recommendation_batches(trained, 10, CPU, torch.float32, 0))
    cold = recs.filter(pl.col("user_id") > 216)
    assert cold["user_id"].n_unique() == 24
    assert set(cold["source"].cast(pl.String)) == {"features"}
    assert set(recs.filter(pl.col("user_id") <= 216)["source"].cast(pl.String)) == {"model"}
    # from features: cold users' lists lean to their planted cluster (chance is 1/6)
    clusters_u, clusters_i = data.user_cluster, data.item_cluster
    same = clusters_u[cold["user_id"].to_numpy() - 1] == clusters_i[cold["item_id"].to_numpy() - 1]
    assert same.mean() > 0.3


def test_new_items_reach_lists_through_features(fm_cold) -> None:
    _, trained = fm_cold
    recs = _table(recommendation_batches(trained, 30, CPU, torch.float32, 0))
    assert (recs["item_id"] > 108).any()  # items with no interactions, scored by their features


def test_without_features_cold_users_get_popularity_and_new_items_are_left_out(
    tmp_path: Path,
) -> None:
    _, config = _write_planted(tmp_path, cold_users=24, new_items=12)
    trained = _train(config, "ials")
    recs = _table(recommendation_batches(trained, 10, CPU, torch.float32, 0))
    cold = recs.filter(pl.col("user_id") > 216)
    assert set(cold["source"].cast(pl.String)) == {"popularity"}
    counts = trained.catalogue["num_interactions"].to_numpy()
    top10 = trained.items.decode(np.argsort(-counts, kind="stable")[:10]).to_list()
    for _, group in cold.group_by("user_id"):
        assert sorted(group["item_id"].to_list()) == sorted(top10)
    assert not (recs["item_id"] > 108).any()
    similar = _table(similar_item_batches(trained, 5, CPU, 0))
    assert not (similar["item_id"] > 108).any() and not (similar["similar_item_id"] > 108).any()


def test_listed_user_unknown_to_everything_gets_the_fallback(tmp_path: Path) -> None:
    _, config = _write_planted(tmp_path)
    (tmp_path / "score.csv").write_text("user_id\n1\n999999\n")
    config.source.users_to_score = str(tmp_path / "score.csv")
    trained = _train(config, "fm")
    recs = _table(recommendation_batches(trained, 10, CPU, torch.float32, 0))
    stranger = recs.filter(pl.col("user_id") == 999999)
    assert stranger.height == 10
    assert set(stranger["source"].cast(pl.String)) == {"features"}  # all-unknown features


def test_similar_items_come_from_the_planted_cluster_and_never_the_item(tmp_path: Path) -> None:
    data, config = _write_planted(tmp_path)
    trained = _train(config, "ials")
    similar = _table(similar_item_batches(trained, 5, CPU, 0))
    assert similar.filter(pl.col("item_id") == pl.col("similar_item_id")).height == 0
    assert similar["item_id"].n_unique() == 120
    same = (
        data.item_cluster[similar["item_id"].to_numpy() - 1]
        == data.item_cluster[similar["similar_item_id"].to_numpy() - 1]
    )
    assert same.mean() > 0.7  # chance is 1/6


def test_similar_items_equal_dense_cosine(tmp_path: Path) -> None:
    _, config = _write_planted(tmp_path)
    trained = _train(config, "ials")
    similar = _table(similar_item_batches(trained, 5, CPU, budget_bytes=4000))
    vectors = torch.nn.functional.normalize(trained.model.item_representations().detach(), dim=1)
    dense = vectors @ vectors.T
    dense.fill_diagonal_(float("-inf"))
    values, idx = torch.topk(dense, 5, dim=1)
    expected_items = trained.items.decode(idx.flatten().numpy()).to_list()
    got = similar.sort("item_id", "rank")
    assert got["similar_item_id"].to_list() == expected_items
    np.testing.assert_allclose(
        got["score"].to_numpy(), values.flatten().numpy(), rtol=1e-5, atol=1e-5
    )


def test_routed_lists_are_the_same_in_bfloat16(tmp_path: Path) -> None:
    """Cold users force the routed scorer; its bf16 factors must give the fp32 lists."""
    _, config = _write_planted(tmp_path, cold_users=24, new_items=12)
    trained = _train(config, "ials")
    lists = [
        _table(recommendation_batches(trained, 10, CPU, dtype, 0)).select(
            "user_id", "rank", "item_id"
        )
        for dtype in (torch.float32, torch.bfloat16)
    ]
    assert lists[0].equals(lists[1])
