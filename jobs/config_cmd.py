"""`recsys config show`: the effective configuration after file, environment and options."""

from __future__ import annotations

import click

from jobs.common import build_config, config_option, database_option, handle_errors, model_option
from recsys.config import Config, ModelParams, to_toml


@click.group("config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("show")
@config_option
@click.option("--interactions", default=None, help="As `recsys nightly --interactions`.")
@database_option
@model_option("As `recsys nightly --model`.")
@click.option(
    "--top-n", type=click.IntRange(min=1), default=None, help="As `recsys nightly --top-n`."
)
@click.option("--seed", type=int, default=None, help="As `recsys nightly --seed`.")
@click.option("--origin", is_flag=True,
              help="Say where each value came from (default, file, env, option), and list "
                   "every model's parameters as a run would use them.")  # fmt: skip
@handle_errors
def show(config_path, interactions, database, model, top_n, seed, origin) -> None:
    """Print the effective config as TOML (the options are nightly's: what it would run with)."""
    config = build_config(config_path, {
        "source.interactions": interactions, "output.database": database, "model.name": model,
        "scoring.top_n": top_n, "training.seed": seed,
    })  # fmt: skip
    click.echo(to_toml(config, origin, effective_model_params(config) if origin else None))


def effective_model_params(config: Config) -> ModelParams:
    """Every registered model's hyper-parameters: its class's DEFAULTS, then model.dim, then
    [model.params.NAME], exactly as the run merges them, each with where it came from."""
    from recsys.models import SELECTABLE, model_class  # imports torch: only for --origin
    from recsys.select import model_params

    trained = config.model.candidates if config.model.name == "auto" else [config.model.name]
    tables: ModelParams = {}
    for name, cls in ((n, model_class(n)) for n in SELECTABLE):
        given = config.model.params.get(name, {})
        merged = {**cls.DEFAULTS, **model_params(config, name)}
        params = {}
        for key, value in merged.items():
            if key not in cls.DEFAULTS:
                origin = f"{config.origin('model.params')}; unknown to {name}: a run refuses it"
            elif key in given:
                origin = config.origin("model.params")
            elif key == "dim" and config.model.dim:
                origin = f"model.dim ({config.origin('model.dim')})"
            else:
                origin = f"default of {name}"
            params[key] = (value, origin)
        note = "trained by this config" if name in trained else "not trained by this config"
        tables[name] = (params, note)
    return tables
