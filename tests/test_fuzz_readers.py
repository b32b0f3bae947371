"""Property-based fuzzing of the interaction and feature readers (issue 13): random valid
tables come back exactly as a plain-Python oracle reads them (IDs as given, the latest of
repeated pairs, timestamps in UTC), and random invalid ones are refused with one line that
names the file and, where there is one, the right row or line. Never anything else.

The budget is bounded: RECSYS_FUZZ_EXAMPLES examples per property (default 60, the same
examples every run so a failure reproduces); set it higher to explore new cases, e.g.
`RECSYS_FUZZ_EXAMPLES=2000 .venv/bin/python -m pytest tests/test_fuzz_readers.py`."""

from __future__ import annotations

import os
import re
import tempfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys import duck
from recsys.config import ColumnsConfig, DataConfig, FeaturesConfig
from recsys.data.features import detect_kinds, encode_side, read_feature_table
from recsys.data.idmap import IdMap
from recsys.data.interactions import load_interactions
from recsys.errors import DataError, MissingInputError

EXPLORE = "RECSYS_FUZZ_EXAMPLES" in os.environ
FUZZ = settings(
    max_examples=int(os.environ.get("RECSYS_FUZZ_EXAMPLES", "60")),
    derandomize=not EXPLORE,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CANONICAL = re.compile(r"0|-?[1-9][0-9]{0,17}")
NOW = datetime.now(UTC).replace(microsecond=0)
DATA = DataConfig()  # ratings in [1, 5]

# Text that a CSV cell can hold on one line: letters, digits, marks, signs, quotes and
# delimiters (the writer quotes them), a few non-ASCII letters; no line breaks.
TEXT = st.text(
    st.sampled_from("abcxyzAZ0123456789 -_.,;|\"'é中ßø+#"), min_size=1, max_size=8
).filter(lambda s: s.strip() != "")
INT_IDS = st.integers(min_value=-(10**12), max_value=10**12)


def id_columns(kind: str, n: int) -> st.SearchStrategy[list]:
    if kind == "int":
        return st.lists(INT_IDS, min_size=n, max_size=n)
    if kind == "numeric_text":  # text that is all canonical integers: read as Int64
        return st.lists(INT_IDS.map(str), min_size=n, max_size=n)
    return st.lists(
        st.one_of(TEXT, st.sampled_from(["007", "-0", "0", "12", " 12 ", "+5", "1e3"])),
        min_size=n,
        max_size=n,
    )


def expected_ids(values: list, kind: str) -> list:
    """The oracle of parse_ids: integers stay integers; text is stripped, and read as
    integers only when every value of the column is a canonical integer."""
    if kind == "int":
        return values
    text = [v.strip() for v in values]
    return [int(t) for t in text] if all(CANONICAL.fullmatch(t) for t in text) else text


ISO_STYLES = ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%SZ", "offset"]


@st.composite
def timestamps(draw, n: int) -> tuple[list, list[int]]:
    """(cells as written, Unix seconds the reader must find): integers or ISO date/times,
    naive (UTC), with Z, or with an offset."""
    seconds = draw(st.lists(st.integers(0, int(NOW.timestamp()) - 1), min_size=n, max_size=n))
    style = draw(st.sampled_from(["int", *ISO_STYLES]))
    if style == "int":
        return seconds, seconds
    cells = []
    for s in seconds:
        moment = datetime.fromtimestamp(s, UTC)
        if style == "offset":
            minutes = draw(st.sampled_from([-330, -300, 0, 60, 120, 345]))
            zone = timezone(timedelta(minutes=minutes))
            cells.append(moment.astimezone(zone).isoformat())
        else:
            cells.append(moment.strftime(style))
    return cells, seconds


@st.composite
def interaction_tables(draw) -> dict:
    """A valid table: ids of one kind per column, optional ratings and timestamps, repeats."""
    n = draw(st.integers(1, 20))
    user_kind, item_kind = (
        draw(st.sampled_from(["int", "numeric_text", "text"])),
        draw(st.sampled_from(["int", "numeric_text", "text"])),
    )
    users = draw(id_columns(user_kind, n))
    items = draw(id_columns(item_kind, n))
    if n > 1 and draw(st.booleans()):  # repeated pairs: the latest must win
        users[-1], items[-1] = users[0], items[0]
    table: dict[str, list] = {"user_id": users, "item_id": items}
    if draw(st.booleans()):
        table["rating"] = draw(
            st.lists(st.sampled_from([1, 1.5, 2, 3, 3.5, 4, 5]), min_size=n, max_size=n)
        )
    if draw(st.booleans()):
        table["timestamp"], seconds = draw(timestamps(n))
    else:
        seconds = list(range(n))  # file order stands in for time
    fmt = draw(st.sampled_from(["csv", "tsv", "parquet", "duckdb"]))
    return {"table": table, "kinds": (user_kind, item_kind), "seconds": seconds, "format": fmt}


def write(table: dict[str, list], fmt: str, folder: Path) -> Path | str:
    """The table as a file of `fmt` (a DuckDB table is given as its duckdb:PATH::TABLE spec)."""
    frame = pl.DataFrame({k: pl.Series(v, strict=False) for k, v in table.items()})
    path = folder / f"t.{fmt}"
    if fmt == "duckdb":
        with duck.connect(path) as con:
            con.register("frame", frame.to_arrow())
            con.execute("create table events as select * from frame")
        return f"duckdb:{path}::events"
    if fmt == "parquet":
        frame.write_parquet(path)
    else:
        frame.write_csv(path, separator="," if fmt == "csv" else "\t")
    return path


def expected_rows(case: dict) -> dict[tuple, tuple]:
    """(user, item) -> (rating, seconds) of the row that must survive: latest time, then
    latest in the file."""
    table = case["table"]
    users = expected_ids(table["user_id"], case["kinds"][0])
    items = expected_ids(table["item_id"], case["kinds"][1])
    ratings = table.get("rating", [1.0] * len(users))
    kept: dict[tuple, tuple] = {}
    order = sorted(range(len(users)), key=lambda r: (case["seconds"][r], r))
    for row in order:
        kept[(users[row], items[row])] = (float(ratings[row]), case["seconds"][row])
    return kept


@FUZZ
@given(interaction_tables())
def test_valid_interaction_tables_come_back_as_given(case: dict) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = write(case["table"], case["format"], Path(folder))
        data = load_interactions(str(path), ColumnsConfig(), DATA)
    frame = data.frame
    got = {
        (u, i): (r, t)
        for u, i, r, t in zip(
            data.users.decode(frame["user_idx"].to_numpy()).to_list(),
            data.items.decode(frame["item_idx"].to_numpy()).to_list(),
            frame["rating"].to_list(),
            frame["timestamp"].to_list(),
            strict=True,
        )
    }
    assert got == expected_rows(case)
    assert data.has_ratings == ("rating" in case["table"])
    # The vocabularies hold exactly the IDs given, each once, sorted: index order is ID order.
    assert data.users.to_list() == sorted({u for u, _ in got})
    assert data.items.to_list() == sorted({i for _, i in got})


# ------------------------------------------------------------------------ invalid tables

MUTATIONS = ["blank_id", "bad_rating", "rating_range", "future", "not_utf8", "no_user_column",
             "twice", "float_id", "empty"]  # fmt: skip


@st.composite
def broken_tables(draw) -> dict:
    case = draw(interaction_tables())
    table, n = case["table"], len(case["table"]["user_id"])
    row = draw(st.integers(0, n - 1))
    mutation = draw(st.sampled_from(MUTATIONS))
    fmt = case["format"]
    expect = ""
    if mutation == "blank_id":
        column = draw(st.sampled_from(["user_id", "item_id"]))
        table[column] = [str(v) for v in table[column]]
        table[column][row] = draw(st.sampled_from(["", "  ", None]))
        expect = (rf"column '{column}' (has \d+ empty or NULL values \(first at row {row + 1}\)"
                  r"|is entirely NULL \(expected (user|item) values\))")  # fmt: skip
    elif mutation == "bad_rating":
        table["rating"] = [str(v) for v in table.get("rating", [3] * n)]
        table["rating"][row] = draw(st.sampled_from(["x", "NaN", "", "4..5", "five"]))
        expect = rf"column 'rating' row {row + 1}: expected a number"
    elif mutation == "rating_range":
        table["rating"] = list(table.get("rating", [3] * n))
        table["rating"][row] = draw(st.sampled_from([0, -1, 5.5, 100, 0.999]))
        expect = rf"column 'rating' row {row + 1}: rating .* outside \[1, 5\]"
    elif mutation == "future":
        cells = [str(s) for s in case["seconds"]]
        cells[row] = str(int(NOW.timestamp()) + draw(st.integers(2 * 86_400, 10**9)))
        table["timestamp"] = cells
        expect = rf"column 'timestamp' row {row + 1}: timestamp '\d+' is in the future"
    elif mutation == "not_utf8":
        fmt = draw(st.sampled_from(["csv", "tsv"]))
        table["user_id"] = [f"u{v}" for v in table["user_id"]]
        table["user_id"][row] = "\udce9" + table["user_id"][row]  # a lone 0xE9 byte, written raw
        expect = rf"line {row + 2} is not UTF-8 text \(byte 0xe9\)"
    elif mutation == "no_user_column":
        table["person"] = table.pop("user_id")
        expect = r"column 'user_id' missing \(found: .*\); set columns.user in recsys.toml"
    elif mutation == "twice":
        fmt = draw(st.sampled_from(["csv", "tsv"]))
        expect = r"column 'item_id' appears twice in the header"
    elif mutation == "float_id":
        fmt = "parquet"
        table["item_id"] = [float(i) for i in range(n)]
        table["item_id"][row] = draw(
            st.sampled_from([float("nan"), float("inf"), -float("inf"), 0.5, 1e20])
        )
        expect = rf"column 'item_id' row {row + 1}: ID .* is not a whole number"
    elif mutation == "empty":
        fmt = draw(st.sampled_from(["csv", "tsv"]))
        expect = r"file is empty \(expected a header and rows\)"
    return {"table": table, "format": fmt, "mutation": mutation, "expect": expect}


def write_broken(case: dict, folder: Path) -> Path:
    table, fmt = case["table"], case["format"]
    if case["mutation"] == "empty":
        path = folder / f"t.{fmt}"
        path.write_bytes(b"")
        return path
    if case["mutation"] in ("not_utf8", "twice"):
        sep = "," if fmt == "csv" else "\t"
        columns = list(table) + (["item_id"] if case["mutation"] == "twice" else [])
        rows = [sep.join(columns)]
        for r in range(len(table["user_id"])):
            cells = [str(table[c][r]).replace(sep, "_").replace('"', "_") for c in columns]
            rows.append(sep.join(cells))
        path = folder / f"t.{fmt}"
        path.write_bytes("\n".join(rows).encode("utf-8", "surrogateescape") + b"\n")
        return path
    return write(table, fmt, folder)


@FUZZ
@given(broken_tables())
def test_invalid_interaction_tables_are_refused_with_the_row(case: dict) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = write_broken(case, Path(folder))
        with pytest.raises((DataError, MissingInputError)) as caught:
            load_interactions(str(path), ColumnsConfig(), DATA)
    message = str(caught.value)
    assert "\n" not in message
    label = str(path).removeprefix("duckdb:")  # how messages name a DuckDB table
    assert re.fullmatch(rf"{re.escape(label)}: {case['expect']}.*", message), message


# ------------------------------------------------------------------------ feature tables


@st.composite
def feature_tables(draw) -> dict:
    n = draw(st.integers(1, 15))
    ids = draw(
        st.lists(
            st.one_of(INT_IDS.map(str), TEXT), min_size=n, max_size=n, unique_by=lambda s: s.strip()
        )
    )
    duplicate = n > 1 and draw(st.booleans())
    if duplicate:
        ids[-1] = ids[0]
    table: dict[str, list] = {"user_id": ids}
    maybe = st.one_of(st.none(), st.just(""))
    table["age"] = draw(
        st.lists(
            st.one_of(st.integers(0, 99), st.floats(0, 99, allow_nan=False), st.none()),
            min_size=n,
            max_size=n,
        )
    )
    table["job"] = draw(
        st.lists(
            st.one_of(st.sampled_from(["eng", "art", "doc", "éè"]), maybe), min_size=n, max_size=n
        )
    )
    table["tags"] = draw(
        st.lists(
            st.one_of(
                st.lists(st.sampled_from(["a", "b", "c d", "e"]), max_size=3).map("|".join), maybe
            ),
            min_size=n,
            max_size=n,
        )
    )
    return {
        "table": table,
        "duplicate": duplicate,
        "format": draw(st.sampled_from(["csv", "parquet"])),
    }


@FUZZ
@given(feature_tables(), st.data())
def test_feature_tables_encode_every_entity_or_refuse_a_repeated_id(case: dict, data) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = write(case["table"], case["format"], Path(folder))
        if case["duplicate"]:
            with pytest.raises(DataError) as caught:
                read_feature_table(str(path), "user_id", "user")
            n = len(case["table"]["user_id"])
            assert re.fullmatch(
                rf"{re.escape(str(path))}: user .* appears more than once \(row {n}\); each user needs one row",
                str(caught.value),
            )
            return
        table = read_feature_table(str(path), "user_id", "user")
    config = FeaturesConfig()
    kinds = detect_kinds(table, config.separator)
    # Entities: some in the table, some not (cold, or rows for others), in a random order.
    known = table["id"].to_list()
    extra = data.draw(
        st.lists(
            st.sampled_from(["zz-new", "yy-new"])
            if table["id"].dtype == pl.String
            else st.integers(10**13, 10**13 + 5),
            max_size=2,
        )
    )
    ids = IdMap(
        pl.Series(
            "id", data.draw(st.permutations(known))[: data.draw(st.integers(1, len(known)))] + extra
        )
    )
    active = np.asarray(data.draw(st.lists(st.booleans(), min_size=len(ids), max_size=len(ids))))
    side = encode_side(ids, table, kinds, config, "user", active=active)
    n, fields, slots = side.index.shape
    assert (n, fields) == (len(ids), 1 + len(kinds)) and side.weight.shape == side.index.shape
    offsets = side.offsets + [side.num_features]
    for f in range(fields):  # every slot points into its own field's rows of the table
        assert ((side.index[:, f, :] >= offsets[f]) & (side.index[:, f, :] < offsets[f + 1])).all()
    totals = side.weight.sum(axis=2)  # (N, F): each field's weights sum to one ...
    assert np.allclose(totals[:, 1:], 1.0)
    assert np.allclose(totals[:, 0], active.astype(np.float32))  # ... the ID only when trained
    rows = dict(zip(table["id"].to_list(), table.iter_rows(named=True), strict=True))
    for f, name in enumerate(kinds, start=1):
        if kinds[name] != "categorical":
            continue
        for e, entity in enumerate(ids.to_list()):  # a value is its vocabulary's slot, or unknown
            value = rows.get(entity, {}).get(name)
            slot = int(side.index[e, f, 0]) - offsets[f]
            vocab = side.fields[f].values
            assert slot == (
                vocab.index(str(value)) + 1 if value is not None and str(value) in vocab else 0
            )
