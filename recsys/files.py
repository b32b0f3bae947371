"""What the job writes for others to read: folders it must be able to write before it starts
the work, the permissions of every file and folder it creates, and the one way a file is
written whole or not at all (`atomic_path`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
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


def fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_name(path: Path) -> Path:
    """Where `path` is written before it is renamed into place: hidden, beside it (the same
    file system, so the rename is atomic), and named by the writing process."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write `path`'s content to; when the block ends normally the
    file is fsynced, renamed over `path` and the folder fsynced, so readers and a crash see
    the old file or the new one whole. On an error the temporary file is removed."""
    tmp = temporary_name(path)
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
