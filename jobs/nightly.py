"""`recsys nightly`: the whole job on the configured source (or the demo data)."""

from __future__ import annotations

import click

from jobs.common import (
    SEED,
    build_config,
    config_option,
    database_option,
    force_publish_option,
    handle_errors,
    interactions_option,
    job_progress,
    model_option,
    refuse_if_running,
)
from recsys.config import SOURCES


@click.command()
@config_option
@interactions_option
@database_option
@model_option("A model, or auto to train the candidates and serve the best.")
@click.option("--top-n", type=click.IntRange(min=1), default=None, help="Items per user.")
@click.option(
    "--seed", type=SEED, default=None, help="Seed for splits, initialisation and sampling."
)
@click.option("--demo", is_flag=True,
              help="Train on the built-in demo data, whatever source is configured; needed to "
                   "replace a served file that was built from a real source.")  # fmt: skip
@force_publish_option
@handle_errors
def nightly(config_path, interactions, database, model, top_n, seed, demo, force_publish) -> None:
    """Train, choose, score every user and publish atomically to the served DuckDB file."""
    if demo and interactions is not None:
        raise click.UsageError("--demo and --interactions exclude each other")
    config = build_config(config_path, {
        "source.interactions": interactions, "output.database": database, "model.name": model,
        "scoring.top_n": top_n, "training.seed": seed,
    })  # fmt: skip
    if demo:  # the demo's own users, items and features: no configured source applies
        for key in SOURCES:
            setattr(config.source, key.split(".")[1], "")
    refuse_if_running(config)
    from recsys.select import check_settings  # imports torch

    check_settings(config)  # one line and nothing else for a bad setting
    with job_progress(config, "nightly"):
        from recsys.pipeline import nightly as run_nightly  # imports torch: after the lock check

        summary = run_nightly(config, allow_demo=demo, force_publish=force_publish)
    click.echo(
        f"published run {summary.run_id}: {summary.model}, {summary.num_users} users x "
        f"{summary.num_items} items, {summary.num_rows} recommendations, "
        f"{summary.num_similar_rows} similar-item rows -> {summary.database}"
    )
    click.echo(
        f"{summary.selection}; " + ", ".join(f"{k} {v:.1f}s" for k, v in summary.timings.items())
    )
    if summary.forced:
        click.echo(summary.forced.removeprefix("; "))
    if summary.report:
        click.echo(f"report: {summary.report}")
