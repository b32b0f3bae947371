"""The job's exclusive lock: `fcntl.flock` on `<dir>/<database name>.lock`, never waited on.

Only the standard library here, so a second run refuses (exit 75) before it loads torch.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from recsys.errors import AlreadyRunningError, CannotWriteError
from recsys.state import state_paths

# A probe (below) holds the lock for microseconds; retrying this long means a probe never
# turns a run away, while a real holder (a run lasts seconds at least) still does at once.
PATIENCE_S = 0.1


def _flock(fd: int) -> bool:
    """Take the exclusive lock on `fd` without waiting on a real holder; False when held."""
    deadline = time.monotonic() + PATIENCE_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)


def lock_path(database: str | Path) -> Path:
    """The lock guarding the served file `database` (one per database, not per folder)."""
    return state_paths(database).lock


class RunLock:
    """Held from `acquire()` to `release()`; the kernel frees it when the process dies,
    kill -9 included, because the lock belongs to the open file, not to the path."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # not inherited by children
        except OSError as exc:  # a read-only folder: refused before any work, exit 73
            raise CannotWriteError(
                f"{self.path}: cannot create the run lock ({exc.strerror}); the database's "
                "folder must be writable"
            ) from None
        if not _flock(fd):
            holder = os.pread(fd, 200, 0).decode(errors="replace")
            os.close(fd)
            raise _held(self.path, holder)
        self._fd = fd
        self.note("")

    def note(self, what: str) -> None:
        """Say who holds the lock, for the message a refused run prints."""
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        text = f"pid {os.getpid()}" + (f", {what}" if what else "")
        os.pwrite(self._fd, f"{text}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def probe(path: Path) -> None:
    """Raise AlreadyRunningError now if another process holds the lock at `path`."""
    if not path.exists():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if not _flock(fd):  # when taken, the close below releases it
            raise _held(path, os.pread(fd, 200, 0).decode(errors="replace"))
    finally:
        os.close(fd)


def _held(path: Path, holder: str) -> AlreadyRunningError:
    return AlreadyRunningError(f"another run holds {path} ({holder.strip() or 'unknown'}); exiting")


def is_held(path: Path) -> bool:
    try:
        probe(path)
    except AlreadyRunningError:
        return True
    return False
