"""What every job shares: config loading with CLI overrides, and turning library errors into
one stderr line plus a sysexits exit code."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from recsys import lock, logs, progress
from recsys.config import MAX_SEED, Config, load_config, set_option, validate
from recsys.errors import EX_SOFTWARE, RecsysError
from recsys.files import umask_for
from recsys.interrupts import sigterm_stops
from recsys.redact import redact

log = logging.getLogger("recsys.jobs")
DEFAULT_CONFIG = Path("recsys.toml")
# Where the `recsys` group leaves the stderr log level (-v, -q, --log-level) for its commands.
LOG_LEVEL = "recsys.log_level"
# --seed: refused by Click (exit 2) before anything loads when numpy or the runs table
# could not take it.
SEED = click.IntRange(0, MAX_SEED)


def config_option(f: Callable) -> Callable:
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="TOML config file (default: ./recsys.toml when present).",
    )(f)


def not_empty(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An option given as "" (a cron line's unset variable) is refused, not taken as unset:
    an empty --interactions would otherwise train on the demo data."""
    if value is not None and not value.strip():
        raise click.BadParameter("is empty (leave the option out to use the config's value)")
    return value


def interactions_option(f: Callable) -> Callable:
    return click.option("--interactions", default=None, callback=not_empty,
                        help="u.data, .csv, .parquet, a MovieLens folder, or duckdb:PATH::TABLE.")(f)  # fmt: skip


def database_option(f: Callable) -> Callable:
    return click.option("--database", type=click.Path(dir_okay=False), default=None,
                        callback=not_empty, help="Served DuckDB file (default: output.database).")(f)  # fmt: skip


class ModelChoice(click.Choice):
    """The model names a user may ask for and `auto`, read from recsys.models.SELECTABLE only
    when Click needs them (a --model given, --help): the registry imports torch, which commands
    that never see --model must not wait for."""

    def __init__(self) -> None:
        super().__init__((), case_sensitive=True)

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        from recsys.models import SELECTABLE

        return (*SELECTABLE, "auto")

    @choices.setter
    def choices(self, value: tuple[str, ...]) -> None:
        pass  # always the registry's


def model_option(help: str) -> Callable[[Callable], Callable]:
    def decorate(f: Callable) -> Callable:
        return click.option("--model", type=ModelChoice(), default=None, show_choices=True,
                            help=help)(f)  # fmt: skip

    return decorate


def _reason(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    if value is not None and not value.strip():
        raise click.BadParameter("give the reason, e.g. --force-publish 'catalogue doubled'")
    return (value or "").strip()


def force_publish_option(f: Callable) -> Callable:
    return click.option(
        "--force-publish", metavar="REASON", default=None, callback=_reason,
        help="Publish even when the quality gate's comparison with the last published run "
             "(row count, validation metric) refuses it, for a change you made on purpose; "
             "REASON goes into the ledger, runs.force_publish and the report. A run whose own "
             "rows are broken (empty, NULL keys, bad ranks, NaN scores) is refused all the same.",
    )(f)  # fmt: skip


def build_config(config_path: str | None, overrides: dict[str, Any]) -> Config:
    """File (or ./recsys.toml), then RECSYS_* variables, then CLI `overrides` ("section.key")."""
    path = (
        Path(config_path) if config_path else (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    )
    config = load_config(path)
    for dotted, value in overrides.items():
        if value is not None:
            section, key = dotted.split(".")
            set_option(config, section, key, value, origin=f"option for {section}.{key}",
                       source="option")  # fmt: skip
    validate(config)
    # Files for others to read get the same permissions whatever umask cron or a shell gave.
    os.umask(umask_for(config.output.file_mode))
    return config


def refuse_if_running(config: Config) -> None:
    """Exit 75 at once when another run holds the lock, before loading torch (seconds).
    The job takes the lock itself later; losing a race there is exit 75 too."""
    lock.probe(lock.lock_path(config.output.database))


@contextlib.contextmanager
def job_progress(config: Config, what: str) -> Iterator[None]:
    """A first log line at once, then a progress line every output.progress_seconds while
    `what` runs, so that a cron log never stays silent for long."""
    from recsys.version import code_version

    log.info("%s: starting, recsys %s", what, code_version())
    with progress.heartbeat(config.output.progress_seconds):
        yield


def stderr_level() -> int:
    ctx = click.get_current_context(silent=True)
    return logging.getLevelName(ctx.meta.get(LOG_LEVEL, "INFO") if ctx else "INFO")


def handle_errors(f: Callable) -> Callable:
    """Library errors -> `error: <one line>` on stderr and their exit code; no traceback."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        logs.configure(stderr_level())
        try:
            with sigterm_stops(lambda: "stopped by SIGTERM"):  # recorded and cleaned up like ^C
                return f(*args, **kwargs)
        except click.ClickException:
            raise  # usage errors found in the command itself: Click's own message and exit 2
        except RecsysError as exc:
            log.debug("failed", exc_info=True)
            click.echo(f"error: {redact(str(exc))}", err=True)
            sys.exit(exc.exit_code)
        except BrokenPipeError:
            stop_writing_stdout()
            sys.exit(0)  # the reader (`| head`) has what it wanted: not an error
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # unexpected: one line on stderr, the traceback in the run log
            log.debug("unexpected error:\n%s", traceback.format_exc())
            run_log = logs.last_run_log()
            where = f"traceback in {run_log}" if run_log else f"at {_origin(exc)}; no run log"
            click.echo(f"error: unexpected {type(exc).__name__}: {redact(str(exc).splitlines()[0]) if str(exc) else ''}"
                       f" ({where})", err=True)  # fmt: skip
            sys.exit(EX_SOFTWARE)

    return wrapper


def stop_writing_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit does not raise again on the
    closed pipe (the Python docs' recipe for SIGPIPE)."""
    with contextlib.suppress(OSError, ValueError):  # no file descriptor (tests' CliRunner)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _origin(exc: BaseException) -> str:
    """Where in this project's code an unexpected error was raised (file:line), for a command
    that writes no run log to hold its traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    root = Path(__file__).resolve().parent.parent
    ours = [f for f in frames if Path(f.filename).resolve().is_relative_to(root)]
    frame = (ours or frames)[-1]
    path = Path(frame.filename).resolve()
    return f"{path.relative_to(root) if path.is_relative_to(root) else path.name}:{frame.lineno}"
