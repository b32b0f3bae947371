"""`recsys score`: score every user with a checkpoint and publish, like nightly without training."""

from __future__ import annotations

import click

from jobs.common import (
    build_config,
    config_option,
    database_option,
    handle_errors,
    refuse_if_running,
)


@click.command()
@click.option(
    "--checkpoint", type=click.Path(dir_okay=False), required=True, help="From `recsys train`."
)
@config_option
@database_option
@click.option("--top-n", type=click.IntRange(min=1), default=None, help="Items per user.")
@handle_errors
def score(checkpoint, config_path, database, top_n) -> None:
    """Score all users against all items with CHECKPOINT and publish the top-N."""
    config = build_config(config_path, {"output.database": database, "scoring.top_n": top_n})
    refuse_if_running(config)
    # These import torch: after the lock check, so an overlapping run exits 75 at once.
    from recsys.checkpoint import load_checkpoint
    from recsys.pipeline import run_job

    summary = run_job(config, lambda timer: load_checkpoint(checkpoint))
    click.echo(
        f"published run {summary.run_id}: {summary.model}, {summary.num_rows} recommendations -> {summary.database}"
    )
