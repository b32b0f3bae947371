"""`recsys config show`: the effective configuration after file, environment and options."""

from __future__ import annotations

import click

from jobs.common import build_config, config_option, handle_errors
from recsys.config import to_toml


@click.group("config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("show")
@config_option
@handle_errors
def show(config_path) -> None:
    """Print the effective config as TOML."""
    click.echo(to_toml(build_config(config_path, {})))
