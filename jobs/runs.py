"""`recsys runs`: the run ledger (published, failed, abandoned, running)."""

from __future__ import annotations

import json

import click

from jobs.common import build_config, config_option, database_option, handle_errors
from recsys.warehouse import Warehouse


@click.command()
@config_option
@database_option
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@handle_errors
def runs(config_path, database, limit) -> None:
    """List recent runs, newest first, with status, model, rows and timings."""
    config = build_config(config_path, {"output.database": database})
    warehouse = Warehouse(config.output.database)
    records = warehouse.ledger.runs()
    if not records:
        click.echo(f"no runs recorded for {warehouse.served}")
        return
    click.echo(f"{'run_id':<24} {'status':<10} {'model':<12} {'rows':>10} {'seconds':>8}  message")
    for run in reversed(records[-limit:]):
        timings = run.get("timings") or {}
        if isinstance(timings, str):
            timings = json.loads(timings or "{}")
        seconds = sum(timings.values()) if timings else 0.0
        click.echo(
            f"{run['run_id']:<24} {run.get('status', '?'):<10} {run.get('model') or '-':<12} "
            f"{run.get('num_rows') or '-':>10} {seconds:>8.1f}  {run.get('message') or ''}"
        )
