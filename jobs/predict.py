"""`recsys predict`: score given (user, item) pairs with a checkpoint."""

from __future__ import annotations

from pathlib import Path

import click

from jobs.common import build_config, config_option, handle_errors
from recsys.files import check_writable


@click.command()
@click.option(
    "--checkpoint", type=click.Path(dir_okay=False), required=True, help="From `recsys train`."
)
@click.option(
    "--pairs",
    required=True,
    help="CSV/Parquet (or duckdb:PATH::TABLE) with user and item ID columns.",
)
@click.option(
    "--out", type=click.Path(dir_okay=False), required=True, help="Parquet file to write."
)
@config_option
@handle_errors
def predict(checkpoint, pairs, out, config_path) -> None:
    """Predict a rating (rating models), a probability (logloss models) or a score for every
    (user_id, item_id) pair."""
    config = build_config(config_path, {})
    check_writable(Path(out).resolve().parent, "predictions")  # before any scoring
    # torch is imported only by the commands that use it, so every other one starts fast.
    from recsys.checkpoint import load_checkpoint
    from recsys.predict import predict_file
    from recsys.score import resolve_device

    trained = load_checkpoint(checkpoint)
    result = predict_file(
        trained, pairs, out, config.columns, config.data, resolve_device(config.scoring.device)
    )
    click.echo(f"wrote {result.height} predictions from {trained.model.name} -> {out}")
