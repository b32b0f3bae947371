"""`recsys train`: train (and choose) a model and write a self-describing checkpoint."""

from __future__ import annotations

import click

from jobs.common import build_config, config_option, handle_errors, job_progress, model_option


@click.command()
@config_option
@click.option(
    "--interactions",
    default=None,
    help="u.data, .csv, .parquet, a MovieLens folder, or duckdb:PATH::TABLE.",
)
@model_option("A model, or auto to train the candidates and keep the best.")
@click.option("--seed", type=int, default=None)
@click.option("--out", "out", type=click.Path(dir_okay=False), default="model.pt", show_default=True,
              help="Checkpoint file to write.")  # fmt: skip
@handle_errors
def train(config_path, interactions, model, seed, out) -> None:
    """Train on the interactions and save a checkpoint for `recsys score`."""
    config = build_config(
        config_path,
        {"source.interactions": interactions, "model.name": model, "training.seed": seed},
    )
    with job_progress(config, "train"):
        # torch is imported only by the commands that use it, so every other one starts fast.
        from recsys.checkpoint import save_checkpoint
        from recsys.dataset import load_dataset
        from recsys.score import resolve_device
        from recsys.select import train_and_choose

        device = resolve_device(config.training.device)
        trained = train_and_choose(load_dataset(config), config, device)
        save_checkpoint(trained, out)
    click.echo(f"wrote {out}: {trained.selection}")
