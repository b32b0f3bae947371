"""Every file in sql/ runs against a published database."""

from pathlib import Path

import duckdb
import pytest

from tests.conftest import TwoRuns

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
SQL_FILES = sorted(SQL_DIR.rglob("*.sql"))


@pytest.fixture(scope="module")
def published(two_runs: TwoRuns) -> Path:
    """A published database with similar_items and user_history filled (two runs of history)."""
    return two_runs.database


def test_sql_folder_has_ddl_and_queries() -> None:
    names = {p.name for p in SQL_FILES}
    assert {
        "001_recommendations.sql",
        "003_runs.sql",
        "user_recommendations.sql",
        "most_recommended.sql",
        "run_history.sql",
        "similar_items.sql",
        "because_you_watched.sql",
        "006_metrics_by_activity.sql",
        "007_user_history.sql",
    } <= names


@pytest.mark.parametrize("path", SQL_FILES, ids=lambda p: p.name)
def test_sql_file_runs(published: Path, path: Path) -> None:
    read_only = "ddl" not in path.parts  # DDL is idempotent: it must run on the published file too
    with duckdb.connect(str(published), read_only=read_only) as con:
        first_user = con.sql("select min(user_id) from recommendations").fetchall()[0][0]
        first_item = con.sql("select min(item_id) from similar_items").fetchall()[0][0]
        con.execute("set variable user_id = ?", [first_user])
        con.execute("set variable item_id = ?", [first_item])
        rows = con.sql(path.read_text()).fetchall() if read_only else con.execute(path.read_text())
        if read_only:
            assert rows, f"{path.name} returned no rows"


def test_user_query_matches_table(published: Path) -> None:
    with duckdb.connect(str(published), read_only=True) as con:
        user = con.sql("select max(user_id) from recommendations").fetchall()[0][0]
        con.execute(f"set variable user_id = {user!r}")
        rows = con.sql((SQL_DIR / "queries" / "user_recommendations.sql").read_text()).fetchall()
        direct = con.sql(
            f"select rank, item_id from recommendations where user_id = {user!r} order by rank"
        ).fetchall()
    assert [(r[0], r[1]) for r in rows] == direct


def test_source_enum_holds_the_scoring_paths_in_order(published: Path) -> None:
    """The DDL's list_source ENUM and recsys.recommend.SOURCES (the Arrow dictionary the batches
    carry) must name the same paths, or every insert of a routed list fails."""
    from recsys.recommend import SOURCES

    with duckdb.connect(str(published), read_only=True) as con:
        ((values,),) = con.sql("select enum_range(null::list_source)").fetchall()
    assert tuple(values) == SOURCES
