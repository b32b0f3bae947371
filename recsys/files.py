"""What the job writes for others to read: folders it must be able to write before it starts
the work, and the permissions of every file and folder it creates."""

from __future__ import annotations

import os
from pathlib import Path

from recsys.errors import CannotWriteError

# The first bytes of every DuckDB database file hold this at offset 8.
DUCKDB_MAGIC = b"DUCK"


def umask_for(file_mode: str) -> int:
    """The umask that makes new files `file_mode` (from 0666) and new folders the same mode
    with x added wherever r is set (from 0777), whatever umask the job was started with."""
    mode = int(file_mode, 8)
    folders = mode | ((mode & 0o444) >> 2)
    return 0o777 & ~folders


def check_writable(folder: Path, what: str) -> None:
    """Refuse (exit 73) before any work when files cannot be created in `folder` (made if
    missing): a real probe file, since permission bits lie on read-only mounts and to root."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".recsys-probe-{os.getpid()}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise CannotWriteError(
            f"{folder}: cannot write {what} there ({exc.strerror or type(exc).__name__}); "
            "nothing was done"
        ) from None


def is_duckdb_file(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(12)[8:12] == DUCKDB_MAGIC
