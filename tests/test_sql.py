"""Every file in sql/ runs against a published database."""

from pathlib import Path

import duckdb
import pytest

from tests.conftest import run_cli

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
SQL_FILES = sorted(SQL_DIR.rglob("*.sql"))


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import FAST_CONFIG

    tmp = tmp_path_factory.mktemp("sql")
    (tmp / "recsys.toml").write_text(FAST_CONFIG)
    db = tmp / "recs.duckdb"
    result = run_cli(
        "nightly", "--config", str(tmp / "recsys.toml"), "--database", str(db), "--model", "ials"
    )
    assert result.returncode == 0, result.stderr
    return db


def test_sql_folder_has_ddl_and_queries() -> None:
    names = {p.name for p in SQL_FILES}
    assert {
        "001_recommendations.sql",
        "003_runs.sql",
        "user_recommendations.sql",
        "most_recommended.sql",
        "run_history.sql",
    } <= names


@pytest.mark.parametrize("path", SQL_FILES, ids=lambda p: p.name)
def test_sql_file_runs(published: Path, path: Path) -> None:
    read_only = "ddl" not in path.parts  # DDL is idempotent: it must run on the published file too
    with duckdb.connect(str(published), read_only=read_only) as con:
        first_user = con.sql("select min(user_id) from recommendations").fetchall()[0][0]
        con.execute(f"set variable user_id = {first_user!r}")
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
