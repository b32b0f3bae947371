"""Every DuckDB connection the job opens. None loads or installs an extension behind the job's
back: given a SQLite file as a database, DuckDB would otherwise try to fetch its SQLite
extension from the network."""

from __future__ import annotations

from pathlib import Path

import duckdb

SETTINGS = {"autoload_known_extensions": False, "autoinstall_known_extensions": False}


def connect(
    path: str | Path = ":memory:", read_only: bool = False, storage_version: str = ""
) -> duckdb.DuckDBPyConnection:
    """`storage_version`: the file format a new database is written in (see warehouse)."""
    config = dict(SETTINGS)
    if storage_version:
        config["storage_compatibility_version"] = storage_version
    return duckdb.connect(str(path), read_only=read_only, config=config)
