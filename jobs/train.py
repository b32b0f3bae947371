"""`recsys train`: train (and choose) a model and write a self-describing checkpoint."""

from __future__ import annotations

from pathlib import Path

import click

from jobs.common import SEED, build_config, config_option, handle_errors, interactions_option
from recsys.files import check_writable


@click.command()
@config_option
@interactions_option
@click.option("--model", default=None, help="A model name, or auto.")
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
    # torch is imported only by the commands that use it, so every other one starts fast.
    from recsys.checkpoint import save_checkpoint
    from recsys.dataset import load_dataset
    from recsys.pipeline import check_settings, train_and_choose
    from recsys.score import resolve_device

    check_settings(config)
    check_writable(Path(out).resolve().parent, "the checkpoint")  # before hours of training
    trained = train_and_choose(load_dataset(config), config, resolve_device(config.training.device))
    save_checkpoint(trained, out)
    click.echo(f"wrote {out}: {trained.selection}")
