"""The `recsys` command: one subcommand per file in jobs/."""

from __future__ import annotations

import click

from jobs.common import LOG_LEVEL
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


LEVELS = ("debug", "info", "warning", "error")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=print_version,
              help="Show the version and git commit, and exit.")  # fmt: skip
@click.option("-v", "--verbose", is_flag=True,
              help="Log DEBUG lines on stderr too (each epoch, chunk sizes).")  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="Log only warnings and errors on stderr.")
@click.option("--log-level", type=click.Choice(LEVELS, case_sensitive=False), default=None,
              help="Lowest level logged on stderr (default: info). The run log keeps "
                   "everything.")  # fmt: skip
@click.pass_context
def main(ctx: click.Context, verbose: bool, quiet: bool, log_level: str | None) -> None:
    """Nightly batch recommender: train, score every user against every item, publish top-N
    to DuckDB. Exit codes: 0 published, 2 usage, 65 bad data or failed gate, 66 missing
    input, 73 no space, 75 already running, 1 anything else."""
    given = [
        name for name, on in (("-v", verbose), ("-q", quiet), ("--log-level", log_level)) if on
    ]
    if len(given) > 1:
        raise click.UsageError(f"{' and '.join(given)} contradict each other: give one")
    level = log_level or ("debug" if verbose else "warning" if quiet else "info")
    ctx.meta[LOG_LEVEL] = level.upper()


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
