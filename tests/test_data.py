"""Loading and validating interactions from every supported source, and the bad inputs."""

from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

from recsys.config import ColumnsConfig, DataConfig
from recsys.data.idmap import IdMap
from recsys.data.interactions import load_interactions
from recsys.errors import DataError, MissingInputError

COLS, DATA = ColumnsConfig(), DataConfig()


def load(spec: str | Path, columns: ColumnsConfig = COLS, data: DataConfig = DATA):
    return load_interactions(str(spec), columns, data)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_movielens_u_data_layout(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "u.data",
        "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t377\t1\t878887116\n",
    )
    data = load(path)
    assert (data.num_users, data.num_items, len(data)) == (2, 3, 3)
    assert data.users.to_list() == [186, 196]
    assert data.has_ratings


def test_csv_parquet_and_duckdb_agree(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "user_id": [1, 1, 2],
            "item_id": [10, 20, 10],
            "rating": [4.0, 3.0, 5.0],
            "timestamp": [1, 2, 3],
        }
    )
    frame.write_csv(tmp_path / "x.csv")
    frame.write_parquet(tmp_path / "x.parquet")
    with duckdb.connect(str(tmp_path / "x.duckdb")) as con:
        con.register("f", frame.to_arrow())
        con.execute("create table events as select * from f")
    loaded = [
        load(tmp_path / "x.csv"),
        load(tmp_path / "x.parquet"),
        load(f"duckdb:{tmp_path / 'x.duckdb'}::events"),
    ]
    for data in loaded:
        assert data.frame.sort("user_idx", "item_idx").equals(
            loaded[0].frame.sort("user_idx", "item_idx")
        )
        assert data.items.to_list() == [10, 20]


def test_string_ids_come_out_unchanged(tmp_path: Path) -> None:
    path = write(tmp_path, "x.csv", "user_id,item_id\n007,b\nalice,a\n007,a\n")
    data = load(path)
    assert data.users.to_list() == ["007", "alice"]
    assert data.items.to_list() == ["a", "b"]
    assert not data.has_ratings  # implicit feedback: no rating column


def test_idmap_round_trip() -> None:
    ids = pl.Series(["z", "a", "m", "a"])
    idmap = IdMap(ids)
    idx = idmap.encode(ids).to_numpy()
    assert idmap.decode(idx).to_list() == ids.to_list()
    assert idmap.encode(pl.Series(["nope"])).to_list() == [None]


def test_repeated_pairs_keep_latest(tmp_path: Path) -> None:
    path = write(
        tmp_path, "x.csv", "user_id,item_id,rating,timestamp\n1,1,2,100\n1,1,5,200\n1,2,3,50\n"
    )
    data = load(path)
    assert len(data) == 2
    assert data.frame.filter(pl.col("item_idx") == 0)["rating"].to_list() == [5.0]


def test_custom_column_names(tmp_path: Path) -> None:
    path = write(tmp_path, "x.csv", "u,i,stars\n1,1,4\n")
    data = load(path, ColumnsConfig(user="u", item="i", rating="stars"))
    assert data.has_ratings


def test_iso_timestamps(tmp_path: Path) -> None:
    path = write(
        tmp_path, "x.csv", "user_id,item_id,timestamp\n1,1,2020-01-02T03:04:05\n1,2,2020-01-01\n"
    )
    data = load(path)
    assert sorted(data.frame["timestamp"].to_list()) == [1577836800, 1577934245]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "x.csv",
            "user,item_id\n1,2\n",
            r"x.csv: column 'user_id' missing \(found: user, item_id\); set columns.user in recsys.toml",
        ),
        (
            "x.csv",
            "user_id,item_id,rating\n1,2,4\n1,3,abc\n",
            r"x.csv: column 'rating' row 2: expected a number, found 'abc'",
        ),
        (
            "x.csv",
            "user_id,item_id\n1,2\n,3\n",
            r"x.csv: column 'user_id' has 1 empty or NULL values \(first at row 2\)",
        ),
        ("x.csv", "", r"x.csv: file is empty"),
        ("x.csv", "user_id,item_id\n", r"x.csv: no rows"),
        (
            "x.csv",
            "user_id,item_id,rating\n1,2,9\n",
            r"x.csv: column 'rating' row 1: rating 9 outside \[1, 5\]",
        ),
        (
            "x.csv",
            "user_id,item_id,timestamp\n1,2,yesterday\n",
            r"column 'timestamp' row 1: expected Unix seconds or an ISO date/time, found 'yesterday'",
        ),
        (
            "x.csv",
            "user_id,item_id,timestamp\n1,2,4102444800\n",
            r"column 'timestamp' row 1: timestamp '4102444800' is in the future",
        ),
        (
            "x.csv",
            "user_id,item_id,user_id\n1,2,3\n",
            r"column 'user_id' appears twice in the header",
        ),
        ("x.csv", "user_id,item_id,rating\n1,2,\n1,3,\n", r"column 'rating' is entirely NULL"),
        ("x.json", "{}", r"unknown file type '.json'"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(DataError, match=message) as info:
        load(path)
    assert "\n" not in str(info.value)


def test_missing_file_and_table(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError, match="nope.csv: file not found"):
        load(tmp_path / "nope.csv")
    with duckdb.connect(str(tmp_path / "x.duckdb")) as con:
        con.execute("create table t (user_id int, item_id int)")
    with pytest.raises(DataError, match=r"::events: table or view does not exist"):
        load(f"duckdb:{tmp_path / 'x.duckdb'}::events")


def test_corrupt_parquet(tmp_path: Path) -> None:
    (tmp_path / "x.parquet").write_bytes(b"PAR1 not really parquet")
    with pytest.raises(DataError, match="x.parquet: not a readable Parquet file"):
        load(tmp_path / "x.parquet")


def test_csr_lists_each_users_items(tmp_path: Path) -> None:
    path = write(tmp_path, "x.csv", "user_id,item_id\n2,b\n1,a\n1,c\n")
    indptr, indices = load(path).csr()
    assert indptr.tolist() == [0, 2, 3]
    assert indices.tolist() == [0, 2, 1]
    assert indices.dtype == np.int32


# --------------------------------------- issue 13: IDs, encodings and timestamps as given


def test_text_ids_minus_zero_and_zero_stay_two_users(tmp_path: Path) -> None:
    data = load(write(tmp_path, "x.csv", "user_id,item_id\n-0,1\n0,2\n-1,3\n"))
    assert data.users.to_list() == ["-0", "-1", "0"]  # text, as given: not merged into 0
    assert load(write(tmp_path, "y.csv", "user_id,item_id\n0,1\n-1,2\n")).users.to_list() == [-1, 0]


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (pl.Series([1.0, float("nan")]), "row 2: ID nan is not a whole number within ±2^53"),
        (pl.Series([float("inf"), 1.0]), "row 1: ID inf is not a whole number"),
        (pl.Series([1.0, 1e20]), "row 2: ID 1e+20 is not a whole number"),
        (pl.Series([1.5, 2.0]), "row 1: ID 1.5 is not a whole number"),
        (
            pl.Series([True, False]),
            "column 'user_id' has type Boolean; expected integer or text IDs",
        ),
        (pl.Series([[1], [2]]), "column 'user_id' has type List(Int64); expected integer or text"),
        (pl.Series([b"a", b"caf\xe9"]), "column 'user_id' row 2: ID b'caf\\xe9' is not UTF-8 text"),
    ],
)
def test_parquet_ids_that_cannot_be_ids_are_refused_with_the_row(
    tmp_path: Path, ids: pl.Series, message: str
) -> None:
    path = tmp_path / "x.parquet"
    pl.DataFrame({"user_id": ids, "item_id": [1, 2]}).write_parquet(path)
    with pytest.raises(DataError) as caught:
        load(path)
    assert str(caught.value).startswith(f"{path}: column 'user_id' ")
    assert message in str(caught.value)


def test_parquet_ids_that_are_ids_in_another_type(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    pl.DataFrame({
        "user_id": pl.Series([b"caf\xc3\xa9", b"tea"]),  # UTF-8 bytes: text
        "item_id": pl.Series([2**64 - 1, 3], dtype=pl.UInt64),  # beyond Int64: text, as given
    }).write_parquet(path)  # fmt: skip
    data = load(path)
    assert data.users.to_list() == ["café", "tea"]
    assert data.items.to_list() == ["18446744073709551615", "3"]


def test_a_file_that_is_not_utf8_is_refused_with_its_line(tmp_path: Path) -> None:
    """Read lossily, caf\\xe9 and caf\\xe8 would both become caf\\ufffd: one merged user."""
    path = tmp_path / "x.csv"
    path.write_bytes(b"user_id,item_id\ntea,1\ncaf\xe9,1\ncaf\xe8,2\n")
    with pytest.raises(DataError) as caught:
        load(path)
    assert str(caught.value) == (
        f"{path}: line 3 is not UTF-8 text (byte 0xe9); save the file as UTF-8, e.g. with "
        "iconv -f latin1 -t utf-8"
    )


def test_utf8_check_finds_the_line_across_read_chunks(tmp_path: Path) -> None:
    from recsys.data.tables import check_utf8

    path = tmp_path / "big.csv"
    good = "user_id,item_id\n" + "é,1\n" * 400_000  # > 1 MiB: the check reads in chunks
    path.write_bytes(good.encode() + b"\xff,2\n")
    with pytest.raises(DataError, match=r"line 400002 is not UTF-8 text \(byte 0xff\)"):
        check_utf8(path)
    path.write_bytes(good.encode() + "ü".encode()[:1])  # cut inside the last character
    with pytest.raises(DataError, match="line 400002 is not UTF-8"):
        check_utf8(path)


def test_movielens_files_are_read_as_latin1(tmp_path: Path) -> None:
    from recsys.data.tables import read_table

    path = tmp_path / "u.item"
    flags = "|".join(["0"] * 18 + ["1"])
    path.write_bytes(f"1|Mis\xe9rables (1995)|01-Jan-1995||http://x|{flags}\n".encode("latin-1"))
    frame, _ = read_table(str(path))
    assert frame["title"].to_list() == ["Misérables"]


def test_iso_timestamps_with_z_or_an_offset(tmp_path: Path) -> None:
    path = write(tmp_path, "x.csv", "user_id,item_id,timestamp\n"
                 "1,1,2024-01-02T03:04:05Z\n1,2,2024-01-02T05:04:05+02:00\n"
                 "1,3,2024-01-02T03:04:05.250Z\n2,1,2024-01-01 22:04:05-05:00\n"
                 "2,2,2024-01-02T03:04:05\n")  # fmt: skip
    data = load(path).frame.sort("user_idx", "item_idx")
    assert data["timestamp"].to_list() == [1704164645] * 5  # all the same instant, in UTC


def test_millisecond_epochs_get_a_hint_about_units(tmp_path: Path) -> None:
    path = write(tmp_path, "x.csv", "user_id,item_id,timestamp\n1,1,1700000000000\n")
    with pytest.raises(DataError) as caught:
        load(path)
    assert str(caught.value) == (
        f"{path}: column 'timestamp' row 1: timestamp '1700000000000' is in the future (it looks "
        "like Unix milliseconds: timestamps must be Unix seconds; divide by 1,000)"
    )
