"""The code version recorded with every run and printed by `recsys --version`: the package
version and the git commit of the checkout it runs from."""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

from recsys import __version__

# The checkout this package runs from, when it runs from one (an editable install).
ROOT = Path(__file__).resolve().parent.parent


def git_commit(root: Path = ROOT) -> str | None:
    """`root`'s commit (12 hex digits, "-modified" when tracked files differ from it), or None
    when `root` is not the top of a git checkout (an installed wheel, a copied tree; a
    checkout that merely contains `root` is someone else's code) or git is missing."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # a look, never a write to the index

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                                  text=True, timeout=10, env=env)  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    found = git("rev-parse", "--show-toplevel", "HEAD")
    if found is None or len(found.splitlines()) != 2:
        return None
    top, commit = found.splitlines()
    if Path(top).resolve() != root.resolve():
        return None
    modified = git("status", "--porcelain", "--untracked-files=no")
    return commit[:12] + ("-modified" if modified else "")


@functools.cache
def code_version() -> str:
    """E.g. `0.1.0 (commit 329437d1a2b3)`; `(commit unknown)` outside a checkout."""
    return f"{__version__} (commit {git_commit() or 'unknown'})"
