"""`recsys train`: train (and choose) a model and write a self-describing checkpoint."""

from __future__ import annotations

from pathlib import Path

import click

from jobs.common import (
    SEED,
    build_config,
    config_option,
    handle_errors,
    interactions_option,
    job_progress,
    model_option,
)
from recsys.files import check_writable


@click.command()
@config_option
@interactions_option
@model_option("A model, or auto to train the candidates and keep the best.")
@click.option("--seed", type=SEED, default=None)
@click.option("--out", "out", type=click.Path(dir_okay=False), default="model.pt", show_default=True,
              help="Checkpoint file to write.")  # fmt: skip
@handle_errors
def train(config_path, interactions, model, seed, out) -> None:
    """Train on the interactions and save a checkpoint for `recsys score`."""
    config = build_config(
        config_path,
        {"source.interactions": interactions, "model.name": model, "training.seed": seed},
    )
    from recsys.select import check_settings  # imports torch

    check_settings(config)  # one line and nothing else for a bad setting
    with job_progress(config, "train"):
        # torch is imported only by the commands that use it, so every other one starts fast.
        from recsys.checkpoint import save_checkpoint
        from recsys.dataset import load_dataset
        from recsys.score import resolve_device
        from recsys.select import train_and_choose

        check_writable(Path(out).resolve().parent, "the checkpoint")  # before hours of training
        device = resolve_device(config.training.device)
        trained = train_and_choose(load_dataset(config), config, device)
        save_checkpoint(trained, out)
    click.echo(f"wrote {out}: {trained.selection}")
