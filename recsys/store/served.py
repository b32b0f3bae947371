"""Which run a published file serves: one definition (sql/queries/served_run.sql), read by
the publisher, the report and the lookups alike."""

from __future__ import annotations

from pathlib import Path

import duckdb

SERVED_RUN_SQL = Path(__file__).resolve().parents[2] / "sql" / "queries" / "served_run.sql"


def served_run_id(con: duckdb.DuckDBPyConnection) -> str:
    """The run whose recommendations the open file holds ('' when it holds none)."""
    return con.sql(SERVED_RUN_SQL.read_text()).fetchall()[0][0]
