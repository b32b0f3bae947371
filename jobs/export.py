"""`recsys export --out DIR`: the served run's tables as Parquet files."""

from __future__ import annotations

from pathlib import Path

import click

from jobs.common import build_config, config_option, database_option, handle_errors


@click.command()
@config_option
@database_option
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Folder for <table>.parquet files (replaced one by one, each whole).")  # fmt: skip
@handle_errors
def export(config_path, database, out) -> None:
    """Write every table of the served database as Parquet, for warehouses that do not read
    DuckDB files."""
    from recsys.files import check_writable
    from recsys.warehouse import export_parquet  # duckdb, no torch

    config = build_config(config_path, {"output.database": database})
    check_writable(Path(out), "Parquet exports")
    run_id, rows = export_parquet(Path(config.output.database), Path(out))
    click.echo(f"exported run {run_id} to {out}: "
               + ", ".join(f"{table} {n}" for table, n in rows.items()))  # fmt: skip
