"""`recsys score`: score every user with a checkpoint and publish, like nightly without training;
with --parts, sharded: each rank (torchrun, or --shard K/N) writes Parquet parts."""

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


class ShardType(click.ParamType):
    """K/N: shard K (0-based) of N."""

    name = "K/N"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        rank, _, world = str(value).partition("/")
        try:
            rank, world = int(rank), int(world)
        except ValueError:
            rank, world = -1, 0
        if not 0 <= rank < world:
            self.fail(f"expected K/N with 0 <= K < N (e.g. 0/4), found {value!r}", param, ctx)
        return rank, world


@click.command()
@click.option(
    "--checkpoint", type=click.Path(dir_okay=False), required=True, help="From `recsys train`."
)
@config_option
@database_option
@click.option("--top-n", type=click.IntRange(min=1), default=None, help="Items per user.")
@click.option("--parts", type=click.Path(file_okay=False), default=None,
              help="Shared folder for Parquet parts: score this rank's shard of the users into "
                   "it (the rank from torchrun, or --shard); without either, world size 1.")  # fmt: skip
@click.option("--shard", type=ShardType(), default=None,
              help="Score only shard K of N (0-based) into --parts, in a plain process (array "
                   "jobs); publish the parts afterwards with `recsys publish`.")  # fmt: skip
@force_publish_option
@handle_errors
def score(checkpoint, config_path, database, top_n, parts, shard, force_publish) -> None:
    """Score all users against all items with CHECKPOINT and publish the top-N.

    With --parts the scoring is sharded by user: under torchrun every rank scores its slice
    into Parquet parts and rank 0 publishes them as one run after a barrier; with --shard K/N
    one plain process scores slice K and publishes nothing."""
    config = build_config(config_path, {"output.database": database, "scoring.top_n": top_n})
    from recsys import distributed  # no torch until join()

    if parts is None:
        if shard is not None:
            raise click.UsageError("--shard needs --parts DIR (the folder the shards write to)")
        refuse_if_running(config)
        with job_progress(config, "score"):
            # These import torch: after the lock check, so an overlapping run exits 75 at once.
            from recsys.pipeline import checkpoint_loader, run_job

            summary = run_job(config, checkpoint_loader(Path(checkpoint)),
                              force_publish=force_publish)  # fmt: skip
        click.echo(
            f"published run {summary.run_id}: {summary.model}, {summary.num_rows} recommendations -> {summary.database}"
        )
        if summary.forced:
            click.echo(summary.forced.removeprefix("; "))
        if summary.report:
            click.echo(f"report: {summary.report}")
        return
    if shard is not None:
        if force_publish:
            raise click.UsageError(
                "--shard publishes nothing: give --force-publish to `recsys publish` instead"
            )
        if distributed.launched():
            raise click.UsageError(
                "--shard is for plain processes; under torchrun each rank takes its shard from "
                "RANK and WORLD_SIZE (leave --shard out)"
            )
        with job_progress(config, f"score shard {shard[0]}/{shard[1]}"):
            from recsys.pipeline import score_shard

            manifest = score_shard(config, Path(checkpoint), Path(parts), *shard)
        click.echo(_wrote(manifest, parts))
        click.echo(
            f"when all {shard[1]} shards are done: recsys publish --parts {parts} "
            f"--checkpoint {checkpoint}"
        )
        return
    if distributed.launched_rank() == 0:
        refuse_if_running(config)  # rank 0 holds the run; the other ranks never take the lock
    with job_progress(config, "score"):
        from recsys.pipeline import score_parts

        with distributed.join(config.scoring.device) as group:
            summary = score_parts(config, Path(checkpoint), Path(parts), group, force_publish)
    if summary is None:
        click.echo(f"rank {group.rank} of {group.world_size}: parts written to {parts}; rank 0 publishes")  # fmt: skip
        return
    click.echo(
        f"published run {summary.run_id}: {summary.model}, {summary.num_rows} recommendations "
        f"from {group.world_size} part(s) in {parts} -> {summary.database}"
    )
    if summary.forced:
        click.echo(summary.forced.removeprefix("; "))
    if summary.report:
        click.echo(f"report: {summary.report}")


def _wrote(manifest: dict, parts: str) -> str:
    tables = ", ".join(f"{info['rows']} {table} rows" for table, info in manifest["tables"].items())
    return f"shard {manifest['rank']}/{manifest['world_size']}: {tables} -> {parts}"
