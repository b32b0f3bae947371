"""`recsys report`: write the HTML run report of the served (or an archived) run."""

from __future__ import annotations

from pathlib import Path

import click

from jobs.common import build_config, config_option, database_option, handle_errors


@click.command()
@config_option
@database_option
@click.option("--run", "run_id", default=None,
              help="Run id (`recsys runs` lists them; default: the served run).")  # fmt: skip
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="HTML file to write (default: <name>.report-<run_id>.html in output.report_dir).")  # fmt: skip
@handle_errors
def report(config_path, database, run_id, out) -> None:
    """Write one self-contained HTML file: the run, the model choice, metric history, what is
    recommended and accuracy by user activity (charts inline; no network needed to view)."""
    from recsys.files import check_writable
    from recsys.metrics import RANKING_METRICS  # duckdb, polars, matplotlib: no torch
    from recsys.report import report_dir, write_report

    config = build_config(config_path, {"output.database": database})
    served = Path(config.output.database)
    check_writable(
        Path(out).resolve().parent if out else report_dir(config.output, served), "the report"
    )
    metric = config.model.selection_metric
    selection = (metric, config.model.selection_k if metric in RANKING_METRICS else None)
    path, run_id = write_report(
        served, Path(out) if out else None, run_id, selection, report_dir(config.output, served)
    )
    click.echo(f"wrote {path} (run {run_id})")
