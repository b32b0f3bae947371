"""`recsys show user` and `recsys show item`: the rows of the shipped queries, "because you
watched" as defined, unknown ids as one line and exit 1."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pytest
from click.testing import CliRunner

from jobs.cli import main
from recsys.lookup import similar_items, user_list
from recsys.warehouse import QUERIES_DIR, StagedDatabase
from tests.conftest import TwoRuns, read_table, run_cli

RUN = "20260101T000000000000Z"
ITEMS = [("A", "Alpha", "Drama"), ("B", "Beta", "Comedy"), ("C", "Gamma", "Drama|Comedy"),
         ("D", "Delta", None), ("E", "Epsilon", "Horror"), ("F", "Phi", "Drama")]  # fmt: skip
# u1 has A and B; u2 has C and nothing left to recommend.
USER_ITEMS = [("u1", "A"), ("u1", "B"), ("u2", "C")]
RECS = [("u1", 1, "C", 0.9), ("u1", 2, "D", 0.8), ("u1", 3, "E", 0.7)]
# C's neighbours: F, then B, then A -> because of B (the best-ranked one u1 has);
# D's: only F (u1 has none) -> no reason; E's: A, then B -> because of A.
SIMILAR = [("C", 1, "F", 0.95), ("C", 2, "B", 0.9), ("C", 3, "A", 0.5), ("D", 1, "F", 0.7),
           ("E", 1, "A", 0.8), ("E", 2, "B", 0.6)]  # fmt: skip


def build(path: Path, key_type: str = "VARCHAR", user_history: bool = True) -> Path:
    """A served file made with the real DDL and a few known rows."""
    staged = StagedDatabase(path, key_type, key_type, RUN)
    con = staged.con
    cast = int if key_type == "BIGINT" else str
    key = {k: cast(i + 10) if key_type == "BIGINT" else k for i, k in enumerate("ABCDEF")}
    user = {
        "u1": cast(1) if key_type == "BIGINT" else "u1",
        "u2": cast(2) if key_type == "BIGINT" else "u2",
    }
    con.executemany("insert into items values (?, ?, ?, 5)", [(key[i], t, g) for i, t, g in ITEMS])
    con.executemany("insert into user_history by name select ? user_id, ? item_id, 0 timestamp, ? recency",
                    [(user[u], key[i], n + 1) for n, (u, i) in enumerate(USER_ITEMS)])  # fmt: skip
    con.executemany("insert into recommendations by name select ? user_id, ? rank, ? item_id, ? score, 'model' source",
                    [(user[u], r, key[i], s) for u, r, i, s in RECS])  # fmt: skip
    con.executemany("insert into similar_items by name select ? item_id, ? rank, ? similar_item_id, ? score",
                    [(key[i], r, key[j], s) for i, r, j, s in SIMILAR])  # fmt: skip
    con.execute("insert into runs (run_id, status, model) values (?, 'published', 'bpr')", [RUN])
    if not user_history:
        con.execute("drop table user_history")
    staged.close()
    return path


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_because_you_watched_is_the_best_ranked_neighbour_the_user_has(tmp_path: Path) -> None:
    db = build(tmp_path / "recs.duckdb")
    listing = user_list(db, "u1")
    assert listing.title == f"user u1: 3 recommendations from run {RUN} (model bpr)"
    rows = [dict(zip(listing.columns, r, strict=True)) for r in listing.rows]
    assert [(r["rank"], r["item_id"], r["title"], r["genres"], r["source"]) for r in rows] == [
        (1, "C", "Gamma", "Drama|Comedy", "model"), (2, "D", "Delta", None, "model"),
        (3, "E", "Epsilon", "Horror", "model")]  # fmt: skip
    assert [(r["because_item_id"], r["because_title"]) for r in rows] == [
        ("B", "Beta"), (None, None), ("A", "Alpha")]  # fmt: skip
    assert [r["because_score"] for r in rows] == pytest.approx([0.9, None, 0.8])


def test_show_user_prints_a_table_and_tsv(tmp_path: Path) -> None:
    db = str(build(tmp_path / "recs.duckdb"))
    result = invoke("show", "user", "u1", "--database", db)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"user u1: 3 recommendations from run {RUN} (model bpr)"
    assert lines[1].split() == ["rank", "item_id", "title", "genres", "score", "source",
                                "because", "you", "watched"]  # fmt: skip
    assert lines[2].split() == ["1", "C", "Gamma", "Drama|Comedy", "0.9000", "model", "Beta", "(B)"]
    assert lines[3].split() == ["2", "D", "Delta", "0.8000", "model"]
    tsv = invoke("show", "user", "u1", "--database", db, "--tsv")
    assert tsv.output.splitlines()[1].split("\t") == [
        "1", "C", "Gamma", "Drama|Comedy", "0.9000", "model", "B", "Beta", "0.9000"]  # fmt: skip


def test_show_item_prints_its_neighbours(tmp_path: Path) -> None:
    db = str(build(tmp_path / "recs.duckdb"))
    result = invoke("show", "item", "C", "--database", db)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert (
        lines[0] == f"item C: Gamma · Drama|Comedy · 5 interactions; similar items from run {RUN}"
    )
    assert [line.split()[:3] for line in lines[2:]] == [["1", "F", "Phi"], ["2", "B", "Beta"],
                                                        ["3", "A", "Alpha"]]  # fmt: skip


@pytest.mark.parametrize("key_type", ["VARCHAR", "BIGINT"])
def test_unknown_ids_are_one_line_and_exit_1(tmp_path: Path, key_type: str) -> None:
    db = str(build(tmp_path / "recs.duckdb", key_type))
    for kind, raw in (("user", "nobody"), ("user", "999"), ("item", "nothing"), ("item", "999")):
        result = invoke("show", kind, raw, "--database", db)
        assert result.exit_code == 1, result.output
        assert result.stdout == ""
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"error: unknown {kind} {raw}: not in the ")
        assert f"of run {RUN} in {db}" in line


def test_numeric_ids_and_a_user_with_nothing_left(tmp_path: Path) -> None:
    db = str(build(tmp_path / "recs.duckdb", "BIGINT"))
    result = invoke("show", "user", "1", "--database", db, "--tsv")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1].split("\t")[:2] == ["1", "12"]
    result = invoke("show", "user", "2", "--database", db)
    assert result.exit_code == 0
    assert result.output.splitlines() == [
        f"user 2: no recommendations in run {RUN}",
        "(the user already has every item there is to recommend)",
    ]


def test_a_file_without_user_history_lists_without_reasons(tmp_path: Path) -> None:
    db = build(tmp_path / "recs.duckdb", user_history=False)
    listing = user_list(db, "u1")
    assert listing.columns == ["rank", "item_id", "title", "genres", "score", "source"]
    assert [r[1] for r in listing.rows] == ["C", "D", "E"]
    assert similar_items(db, "D").rows == [(1, "F", "Phi", "Drama", pytest.approx(0.7))]


def test_missing_database_is_exit_66(tmp_path: Path) -> None:
    result = invoke("show", "user", "1", "--database", str(tmp_path / "none.duckdb"))
    assert result.exit_code == 66
    assert "no published database here yet" in result.stderr


# ----------------------------------------------------------- the installed command, for real


def sql_rows(database: Path, query: str, **variables) -> tuple[list[str], list[tuple]]:
    with duckdb.connect(str(database), read_only=True) as con:
        for name, value in variables.items():
            con.execute(f"set variable {name} = ?", [value])
        relation = con.sql((QUERIES_DIR / query).read_text())
        return list(relation.columns), relation.fetchall()


def as_tsv(columns: list[str], rows: list[tuple]) -> list[str]:
    def cell(v) -> str:
        return "" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    return ["\t".join(columns)] + ["\t".join(cell(v) for v in row) for row in rows]


def test_show_user_prints_the_sql_rows(two_runs: TwoRuns) -> None:
    db = two_runs.database
    user = read_table(db, "select max(user_id) as u from recommendations")["u"][0]
    result = run_cli("show", "user", str(user), "--database", str(db), "--tsv")
    assert result.returncode == 0, result.stderr
    columns, rows = sql_rows(db, "because_you_watched.sql", user_id=user)
    assert result.stdout.splitlines() == as_tsv(columns, rows)
    _, plain = sql_rows(db, "user_recommendations.sql", user_id=user)
    assert [r[:6] for r in rows] == plain  # the same list, with reasons added
    table = run_cli("show", "user", str(user), "--database", str(db))
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].startswith(
        f"user {user}: {len(rows)} recommendations from run {two_runs.run_ids[1]}"
    )
    assert [line.split()[:2] for line in lines[2:]] == [[str(r[0]), str(r[1])] for r in rows]


def test_show_item_prints_the_sql_rows(two_runs: TwoRuns) -> None:
    db, item = two_runs.database, two_runs.item_id
    result = run_cli("show", "item", str(item), "--database", str(db), "--tsv")
    assert result.returncode == 0, result.stderr
    columns, rows = sql_rows(db, "similar_items.sql", item_id=item)
    assert rows
    assert result.stdout.splitlines() == as_tsv(columns, rows)


def test_show_unknown_ids_for_real(two_runs: TwoRuns) -> None:
    for kind in ("user", "item"):
        result = run_cli("show", kind, "123456789", "--database", str(two_runs.database))
        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr.startswith(f"error: unknown {kind} 123456789: not in the ")
        assert len(result.stderr.splitlines()) == 1


def test_because_you_watched_matches_a_direct_computation(two_runs: TwoRuns) -> None:
    """The query against the same rule in polars: for each recommended item, its best-ranked
    similar item among the user's items."""
    db = two_runs.database
    recs = read_table(db, "select user_id, rank, item_id from recommendations")
    similar = read_table(db, "select item_id, rank as sim_rank, similar_item_id from similar_items")
    has = read_table(db, "select user_id, item_id as similar_item_id from user_history")
    expected = (
        recs.join(similar, on="item_id")
        .join(has, on=["user_id", "similar_item_id"])
        .sort("sim_rank")
        .group_by("user_id", "item_id")
        .agg(pl.col("similar_item_id").first())
    )
    users = recs["user_id"].unique().sort().head(25).to_list()
    checked = 0
    for user in users:
        _, rows = sql_rows(db, "because_you_watched.sql", user_id=user)
        want = dict(
            expected.filter(pl.col("user_id") == user)
            .select("item_id", "similar_item_id")
            .iter_rows()
        )
        got = {r[1]: r[6] for r in rows if r[6] is not None}
        assert got == want, user
        checked += len(got)
    assert checked > 0  # some reasons were found at all
