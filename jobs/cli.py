"""The `recsys` command: one subcommand per file in jobs/."""

from __future__ import annotations

import click

from jobs.config_cmd import config_group
from jobs.evaluate import evaluate
from jobs.export import export
from jobs.nightly import nightly
from jobs.predict import predict
from jobs.publish import publish
from jobs.report import report
from jobs.rollback import rollback
from jobs.runs import runs
from jobs.score import score
from jobs.show import show_group
from jobs.train import train


def print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from recsys.version import code_version  # runs git: only when asked

    click.echo(f"recsys {code_version()}")
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=print_version,
              help="Show the version and git commit, and exit.")  # fmt: skip
def main() -> None:
    """Nightly batch recommender: train, score every user against every item, publish top-N
    to DuckDB. Exit codes: 0 published, 2 usage, 65 bad data or failed gate, 66 missing
    input, 73 no space, 75 already running, 1 anything else."""


for command in (
    nightly,
    train,
    score,
    publish,
    export,
    evaluate,
    predict,
    runs,
    rollback,
    report,
    show_group,
    config_group,
):
    main.add_command(command)
