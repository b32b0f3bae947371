"""`recsys rollback RUN_ID`: serve an archived run again, atomically."""

from __future__ import annotations

import click

from jobs.common import build_config, config_option, database_option, handle_errors
from recsys.ledger import new_run_id
from recsys.warehouse import Warehouse


@click.command()
@click.argument("run_id")
@config_option
@database_option
@handle_errors
def rollback(run_id, config_path, database) -> None:
    """Replace the served database with archived run RUN_ID."""
    config = build_config(config_path, {"output.database": database})
    warehouse = Warehouse(config.output.database, config.output.keep_archives)
    with warehouse.lock(new_run_id()):
        warehouse.rollback(run_id)
        warehouse.ledger.append(run_id, event="rollback", message="served again by rollback")
    click.echo(f"now serving run {run_id} from {warehouse.served}")
