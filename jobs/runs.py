"""`recsys runs`: the run ledger (published, failed, abandoned, running)."""

from __future__ import annotations

import json

import click

from jobs.common import build_config, config_option, database_option, handle_errors


@click.command()
@config_option
@database_option
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--verbose", "-v", is_flag=True, help="Also every metric and each phase's time.")
@handle_errors
def runs(config_path, database, limit, verbose) -> None:
    """List recent runs, newest first: status, model, rows, the selection metric, seconds."""
    from recsys.warehouse import Warehouse  # duckdb and polars: only for commands that read

    config = build_config(config_path, {"output.database": database})
    warehouse = Warehouse(config.output.database)
    records = warehouse.history()
    if not records:
        click.echo(f"no runs recorded for {warehouse.served}")
        return
    metric = config.model.selection_metric
    if metric in ("ndcg", "recall", "precision", "map", "hitrate", "coverage"):
        metric = f"{metric}@{config.model.selection_k}"
    click.echo(f"  {'run_id':<22}  {'status':<9}  {'model':<10}  {'rows':>9}  {metric:>9}  "
               f"{'seconds':>7}  message")  # fmt: skip
    for run in reversed(records[-limit:]):
        timings = _as_dict(run.get("timings"))
        metrics = _as_dict(run.get("metrics"))
        model = run.get("model") or "-"
        value = metrics.get(f"{model}.{metric}")
        message = str(run.get("message") or "")
        if run.get("rolled_back_at"):
            message += f" (served again by rollback at {run['rolled_back_at']})"
        click.echo(
            f"{'*' if run.get('served') else ' '} {run['run_id']:<22}  {str(run.get('status', '?')):<9}  "
            f"{str(model):<10}  {str(run.get('num_rows') or '-'):>9}  "
            f"{'-' if value is None else f'{value:.4f}':>9}  "
            f"{sum(timings.values()):>7.1f}  {message}"
        )
        if verbose:
            if timings:
                click.echo("    timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in timings.items()))
            if metrics:
                click.echo("    metrics: " + ", ".join(f"{k} {v:g}" for k, v in metrics.items()))
    click.echo("(* = served now)")


def _as_dict(value) -> dict:
    """Timings and metrics are JSON text in the served file's runs table, objects in the ledger;
    only their numbers are shown (a hand-edited ledger may hold anything)."""
    if isinstance(value, str):
        try:
            value = json.loads(value or "{}")
        except json.JSONDecodeError:
            value = {}
    if not isinstance(value, dict):
        return {}
    return {
        k: v for k, v in value.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
