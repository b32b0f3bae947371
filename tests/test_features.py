"""Side features: detection, encoding, unknown values, and the errors for bad tables."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.config import FeaturesConfig
from recsys.data.features import configured_kinds, detect_kinds, encode_side, read_feature_table
from recsys.data.idmap import IdMap
from recsys.errors import DataError

CONFIG = FeaturesConfig(numeric_buckets=2)


def _table() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": [1, 2, 3, 4],
            "genres": ["x|y", "y", "", None],
            "kind": ["a", "b", "a", "a"],
            "age": [10.0, 20.0, 30.0, None],
        }
    )


def test_detects_kinds_and_leaves_unique_text_out() -> None:
    assert detect_kinds(_table(), "|") == {
        "genres": "multi",
        "kind": "categorical",
        "age": "numeric",
    }


def test_encoding_bags_unknowns_and_buckets() -> None:
    table = _table()
    side = encode_side(
        IdMap.from_list([1, 2, 3, 4, 5]), table, detect_kinds(table, "|"), CONFIG, "item"
    )
    names = side.field_names
    assert names == ["item_id", "genres", "kind", "age"]
    genres, kind, age = (names.index(n) for n in ("genres", "kind", "age"))
    offsets = side.offsets
    # item 1: genres x and y, each weight 1/2
    assert sorted(side.index[0, genres][side.weight[0, genres] > 0] - offsets[genres]) == [1, 2]
    np.testing.assert_allclose(side.weight[0, genres][:2], [0.5, 0.5])
    # empty bag, NULL bag and an entity missing from the table: the unknown slot, weight 1
    for row in (2, 3, 4):
        assert side.index[row, genres, 0] == offsets[genres] and side.weight[row, genres, 0] == 1
    # numeric: buckets by quantile, NULL -> unknown (0)
    assert side.index[3, age, 0] == offsets[age]
    assert side.index[0, age, 0] < side.index[2, age, 0]
    # unknown entity (no table row): categorical unknown too
    assert side.index[4, kind, 0] == offsets[kind]


def test_vocab_from_training_maps_new_values_to_unknown() -> None:
    table = _table()
    kinds = detect_kinds(table, "|")
    trained = encode_side(IdMap.from_list([1, 2, 3, 4]), table, kinds, CONFIG, "item")
    new = table.with_columns(pl.Series("kind", ["zzz", "b", "a", "a"]))
    side = encode_side(
        IdMap.from_list([1, 2, 3, 4]), new, kinds, CONFIG, "item", vocab=trained.fields
    )
    kind = side.field_names.index("kind")
    assert side.index[0, kind, 0] == side.offsets[kind]  # "zzz" was never seen: unknown slot


def test_duplicate_ids_and_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text("item_id,genres\n1,a\n2,b\n1,c\n")
    with pytest.raises(DataError, match=r"items.csv: item 1 appears more than once \(row 3\)"):
        read_feature_table(str(path), "item_id", "item")
    path.write_text("id,genres\n1,a\n")
    with pytest.raises(
        DataError,
        match=r"items.csv: column 'item_id' missing \(found: id, genres\); set columns.item",
    ):
        read_feature_table(str(path), "item_id", "item")
    path.write_text("item_id,genres\n1,a\n")
    table = read_feature_table(str(path), "item_id", "item")
    with pytest.raises(
        DataError, match=r"feature column 'genre' missing .* fix features.item_multi"
    ):
        configured_kinds(table, FeaturesConfig(item_multi=["genre"]), "item", str(path))


def test_movielens_u_user_layout(tmp_path: Path) -> None:
    path = tmp_path / "u.user"
    path.write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    table = read_feature_table(str(path), "ignored", "user")
    assert table.columns == ["id", "age", "gender", "occupation", "zip_code"]
    assert table["id"].to_list() == [1, 2]


def test_a_column_null_for_every_entity_encoded_is_all_unknown() -> None:
    """Found by fuzzing (issue 13): a column with values only for entities not encoded here
    learned an empty vocabulary, whose untyped lookup table failed the join."""
    table = pl.DataFrame({"id": [1, 2], "job": [None, "eng"], "tags": [None, "a|b"]})
    side = encode_side(IdMap.from_list([1]), table, {"job": "categorical", "tags": "multi"},
                       FeaturesConfig(), "user")  # fmt: skip
    assert [f.values for f in side.fields[1:]] == [[], []]
    assert (side.index[0, 1:, 0] == np.array(side.offsets[1:])).all()  # the unknown slots
