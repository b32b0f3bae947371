"""Errors the jobs turn into one stderr line and a sysexits.h exit code (see DESIGN.md)."""

from __future__ import annotations

EX_SOFTWARE = 1  # anything unexpected
EX_USAGE = 2  # Click's own code for bad command-line usage
EX_DATAERR = 65  # bad input data or a failed quality gate
EX_NOINPUT = 66  # an input file missing or unreadable
EX_CANTCREAT = 73  # cannot write an output: no free disk, a read-only folder, ...
EX_TEMPFAIL = 75  # another run holds the lock (or the served file); try later
EX_TERMINATED = 143  # stopped by SIGTERM (128 + 15, as a shell reports it)


class RecsysError(Exception):
    """Base class: a problem the user can fix, reported as one line with `exit_code`."""

    exit_code = EX_SOFTWARE


class ConfigError(RecsysError):
    """The config file or an option is invalid."""

    exit_code = EX_DATAERR


class DataError(RecsysError):
    """Input data is malformed; the message names the file, column or row."""

    exit_code = EX_DATAERR


class MissingInputError(RecsysError):
    """An input file is missing or unreadable."""

    exit_code = EX_NOINPUT


class QualityGateError(RecsysError):
    """The staged result failed the quality gate; nothing was published."""

    exit_code = EX_DATAERR


class NoSpaceError(RecsysError):
    """Not enough free disk to build the new database."""

    exit_code = EX_CANTCREAT


class CannotWriteError(RecsysError):
    """An output file or folder cannot be written (read-only, a directory in the way, ...)."""

    exit_code = EX_CANTCREAT


class UsageError(RecsysError):
    """The command line asks for something it cannot mean (e.g. an empty --interactions)."""

    exit_code = EX_USAGE


class AlreadyRunningError(RecsysError):
    """Another run holds the lock."""

    exit_code = EX_TEMPFAIL


class TrainingError(RecsysError):
    """Training diverged (NaN or infinite loss)."""

    exit_code = EX_SOFTWARE


class ServedBusyError(RecsysError):
    """Another process has the served file open read-write, which locks everyone else out."""

    exit_code = EX_TEMPFAIL


class NotFoundError(RecsysError):
    """A user, item or run that the published tables do not hold."""

    exit_code = EX_SOFTWARE


class Terminated(RecsysError):
    """Stopped by SIGTERM (under torchrun: another rank failed); nothing was published."""

    exit_code = EX_TERMINATED
