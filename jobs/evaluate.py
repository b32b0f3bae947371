"""`recsys evaluate`: compare models on the temporal holdout without publishing anything."""

from __future__ import annotations

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


@click.command()
@config_option
@interactions_option
@model_option("A model, or auto for all the candidates.")
@click.option(
    "--k", "k", type=click.IntRange(min=1), default=None, help="Cut-off for top-N metrics."
)
@click.option("--seed", type=SEED, default=None)
@handle_errors
def evaluate(config_path, interactions, model, k, seed) -> None:
    """Train each candidate on each user's earlier interactions and report its metrics on
    the held-out latest ones (seen items excluded)."""
    config = build_config(config_path, {"source.interactions": interactions, "model.name": model,
                                        "model.selection_k": k, "training.seed": seed})  # fmt: skip
    from recsys.select import check_settings  # imports torch

    check_settings(config)  # one line and nothing else for a bad setting
    with job_progress(config, "evaluate"):
        # torch is imported only by the commands that use it, so every other one starts fast.
        from recsys.dataset import load_dataset
        from recsys.score import resolve_device
        from recsys.select import compare_candidates

        device = resolve_device(config.training.device)
        comparison = compare_candidates(load_dataset(config), config, device)
    models = list(dict.fromkeys(m.model for m in comparison.metrics))
    names = list(dict.fromkeys((m.metric, m.k) for m in comparison.metrics))
    values = {(m.model, m.metric, m.k): m.value for m in comparison.metrics}
    click.echo(f"{'metric':<16}" + "".join(f"{name:>12}" for name in models))
    for metric, cut in names:
        label = f"{metric}@{cut}" if cut else metric
        cells = "".join(
            f"{values[(name, metric, cut)]:>12.4f}"
            if (name, metric, cut) in values
            else f"{'-':>12}"
            for name in models
        )
        click.echo(f"{label:<16}{cells}")
    click.echo(comparison.selection)
