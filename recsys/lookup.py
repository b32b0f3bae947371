"""Look-ups on the served file, read-only: one user's list ("because you watched ...") and one
item's neighbours, by running the shipped queries in sql/queries/ for that id."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from recsys.errors import NotFoundError
from recsys.store.served import served_run_id
from recsys.warehouse import QUERIES_DIR, has_table, open_read_only


@dataclass
class Listing:
    """Rows of one look-up, as the SQL query returned them, and what they are about."""

    title: str  # one line: whose list, from which run
    columns: list[str]
    rows: list[tuple[Any, ...]]
    notes: list[str] = field(default_factory=list)


def user_list(database: str | Path, user_id: str) -> Listing:
    """The user's recommendations with item metadata and, where `similar_items` and
    `user_history` allow, the most similar item the user already has."""
    database = Path(database)
    with open_read_only(database) as con:
        run_id = served_run_id(con)
        key = _key(con, "recommendations", "user_id", user_id)
        query = (
            "because_you_watched.sql"
            if has_table(con, "user_history")
            else "user_recommendations.sql"
        )
        rows, columns = [], []
        if key is not None:
            con.execute("set variable user_id = ?", [key])
            rows, columns = _run(con, QUERIES_DIR / query)
        if rows:
            model = _model(con, run_id)
            return Listing(f"user {user_id}: {len(rows)} recommendations from run {run_id} "
                           f"(model {model})", columns, rows)  # fmt: skip
        if (
            key is not None
            and query == "because_you_watched.sql"
            and _count(con, "select count(*) from user_history where user_id = ?", key)
        ):
            return Listing(f"user {user_id}: no recommendations in run {run_id}", columns, [],
                           ["the user already has every item there is to recommend"])  # fmt: skip
        num_users = _count(con, "select count(distinct user_id) from recommendations")
    raise NotFoundError(
        f"unknown user {user_id}: not in the recommendations of run {run_id or 'none'} "
        f"in {database} ({num_users:,} users have a list)"
    )


def similar_items(database: str | Path, item_id: str) -> Listing:
    """The item's most similar items (cosine of the served model's item vectors) with metadata."""
    database = Path(database)
    with open_read_only(database) as con:
        run_id = served_run_id(con)
        key = _key(con, "items", "item_id", item_id)
        found = (
            con.sql(
                "select title, genres, num_interactions from items where item_id = ?", params=[key]
            ).fetchall()
            if key is not None
            else []
        )
        if not found:
            num_items = _count(con, "select count(*) from items")
            raise NotFoundError(
                f"unknown item {item_id}: not in the catalogue (items) of run {run_id or 'none'} "
                f"in {database} ({num_items:,} items)"
            )
        title, genres, num_interactions = found[0]
        con.execute("set variable item_id = ?", [key])
        rows, columns = _run(con, QUERIES_DIR / "similar_items.sql")
        described = " · ".join(str(v) for v in (title, genres) if v)
        listing = Listing(
            f"item {item_id}{': ' + described if described else ''} · "
            f"{num_interactions:,} interactions; similar items from run {run_id}",
            columns,
            rows,
        )
        if not rows:
            listing.notes.append(
                f"run {run_id} has no similar items (its model, {_model(con, run_id)}, has no "
                "item vectors, or scoring.similar_items_n is 0)"
            )
        return listing


def _run(con: duckdb.DuckDBPyConnection, path: Path) -> tuple[list[tuple], list[str]]:
    relation = con.sql(path.read_text())
    return relation.fetchall(), list(relation.columns)


def _model(con: duckdb.DuckDBPyConnection, run_id: str) -> str:
    found = con.sql("select model from runs where run_id = ?", params=[run_id]).fetchall()
    return (found[0][0] if found else None) or "?"


def _count(con: duckdb.DuckDBPyConnection, sql: str, *params: Any) -> int:
    return int(con.sql(sql, params=list(params) or None).fetchall()[0][0])


def _key(con: duckdb.DuckDBPyConnection, table: str, column: str, raw: str) -> int | str | None:
    """`raw` as the column's type (IDs are BIGINT or VARCHAR as the source had them); None
    when it cannot be one (a non-number for numeric IDs), so it is unknown."""
    found = con.execute(
        "select data_type from information_schema.columns where table_name = ? and column_name = ?",
        [table, column],
    ).fetchall()
    if found and found[0][0].upper() in ("BIGINT", "INTEGER", "HUGEINT", "SMALLINT"):
        try:
            return int(raw)
        except ValueError:
            return None
    return raw
