"""`recsys rollback RUN_ID`: serve an archived run again, atomically."""

from __future__ import annotations

import click

from jobs.common import build_config, config_option, database_option, handle_errors


@click.command()
@click.argument("run_id")
@config_option
@database_option
@handle_errors
def rollback(run_id, config_path, database) -> None:
    """Replace the served database with archived run RUN_ID (`recsys runs` lists them)."""
    from recsys.warehouse import Warehouse  # duckdb and polars: only for commands that read

    config = build_config(config_path, {"output.database": database})
    warehouse = Warehouse(config.output.database, config.output.keep_archives)
    with warehouse.lock():
        previous = warehouse.rollback(run_id)
    click.echo(f"now serving run {run_id} from {warehouse.served} (was {previous or 'none'})")
