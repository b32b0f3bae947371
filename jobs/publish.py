"""`recsys publish --parts DIR`: publish the Parquet parts of a sharded scoring as one run."""

from __future__ import annotations

from pathlib import Path

import click

from jobs.common import (
    build_config,
    config_option,
    database_option,
    force_publish_option,
    handle_errors,
    job_progress,
    refuse_if_running,
)


@click.command()
@click.option("--parts", type=click.Path(file_okay=False), required=True,
              help="The folder `recsys score --parts` wrote (every rank's manifest and parts).")  # fmt: skip
@click.option("--checkpoint", type=click.Path(dir_okay=False), required=True,
              help="The checkpoint the ranks scored with (parts of another are refused).")  # fmt: skip
@config_option
@database_option
@force_publish_option
@handle_errors
def publish(parts, checkpoint, config_path, database, force_publish) -> None:
    """Check that every rank's parts in PARTS are present and whole, then publish them as one
    run (quality gate, ledger, archive, atomic replace). A missing, truncated or duplicated
    part publishes nothing: exit 65, naming the rank."""
    config = build_config(config_path, {"output.database": database})
    refuse_if_running(config)
    with job_progress(config, "publish"):
        from recsys.pipeline import publish_parts  # imports torch: after the lock check

        summary = publish_parts(config, Path(checkpoint), Path(parts), force_publish)
    click.echo(
        f"published run {summary.run_id}: {summary.model}, {summary.num_rows} recommendations, "
        f"{summary.num_similar_rows} similar-item rows from {parts} -> {summary.database}"
    )
    if summary.forced:
        click.echo(summary.forced.removeprefix("; "))
    if summary.report:
        click.echo(f"report: {summary.report}")
