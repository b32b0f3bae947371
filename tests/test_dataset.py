"""Loading a run's dataset: interactions with feature tables, and how mismatches are handled."""

from pathlib import Path

import pytest

from recsys.config import Config
from recsys.dataset import load_dataset
from recsys.errors import ConfigError, DataError
from recsys.select import candidate_names


def _config(tmp_path: Path, users: str | None = None, items: str | None = None) -> Config:
    (tmp_path / "events.csv").write_text("user_id,item_id,rating\n1,10,4\n1,11,3\n2,10,5\n3,12,2\n")
    config = Config()
    config.source.interactions = str(tmp_path / "events.csv")
    if users is not None:
        (tmp_path / "users.csv").write_text(users)
        config.source.user_features = str(tmp_path / "users.csv")
    if items is not None:
        (tmp_path / "items.csv").write_text(items)
        config.source.item_features = str(tmp_path / "items.csv")
    return config


def test_users_with_features_only_join_as_cold_users(tmp_path: Path) -> None:
    config = _config(tmp_path, users="user_id,group\n1,a\n2,b\n3,a\n99,c\n")
    dataset = load_dataset(config)
    assert dataset.interactions.users.to_list() == [1, 2, 3, 99]  # 99: features, no interactions
    assert len(dataset.interactions) == 4
    features = dataset.user_features
    assert features.index.shape[:2] == (4, 2)  # id + group
    assert features.weight[3, 0].sum() == 0  # no trained ID vector for the cold user
    assert features.weight[3, 1, 0] == 1  # but its group


def test_users_to_score_and_type_mismatch(tmp_path: Path) -> None:
    config = _config(tmp_path)
    (tmp_path / "score.csv").write_text("user_id\n1\n500\n")
    config.source.users_to_score = str(tmp_path / "score.csv")
    assert load_dataset(config).interactions.users.to_list() == [1, 2, 3, 500]
    (tmp_path / "score.csv").write_text("user_id\nbob\n")
    with pytest.raises(DataError, match="user ID 'bob' is text but .* has integer user IDs"):
        load_dataset(config)


def test_feature_table_sharing_no_ids_is_refused(tmp_path: Path) -> None:
    config = _config(tmp_path, items="item_id,genres\nA,x\nB,y\n")
    with pytest.raises(
        DataError,
        match=r"items.csv: none of its 2 item IDs appear in the interactions \(e.g. 'A' there, 10 in the interactions\)",
    ):
        load_dataset(config)


def test_catalogue_takes_titles_and_genres(tmp_path: Path) -> None:
    config = _config(tmp_path, items="item_id,title,genres\n10,Ten,x|y\n11,Eleven,\n")
    catalogue = load_dataset(config).catalogue
    assert catalogue["title"].to_list() == ["Ten", "Eleven", None]
    assert catalogue["num_interactions"].to_list() == [2, 1, 1]


def test_unknown_selection_metric_and_model() -> None:
    config = Config()
    config.model.selection_metric = "ndgc"
    with pytest.raises(
        ConfigError,
        match=r"unknown selection metric 'ndgc' \(expected one of: precision, recall, ndcg",
    ):
        candidate_names(config)
    config.model.selection_metric = "ndcg"
    config.model.candidates = ["popularity", "svd"]
    with pytest.raises(ConfigError, match="unknown model 'svd'"):
        candidate_names(config)
