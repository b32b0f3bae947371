"""`recsys --version` and `runs.code_version`: the package version and the git commit."""

from __future__ import annotations

import subprocess
from pathlib import Path

from recsys import __version__
from recsys.version import ROOT, code_version, git_commit
from tests.conftest import TwoRuns, read_table, run_cli


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip


def test_version_names_the_commit_and_runs_record_it(two_runs: TwoRuns) -> None:
    head = git(ROOT, "rev-parse", "HEAD")
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"recsys {__version__} (commit {head[:12]}")
    assert result.stdout.strip() == f"recsys {code_version()}"
    runs = read_table(two_runs.database, "select distinct code_version from runs")
    assert runs["code_version"].to_list() == [code_version()]


def test_a_commit_and_its_modifications(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("one\n")
    git(tmp_path, "add", "a.txt")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "one")
    head = git(tmp_path, "rev-parse", "HEAD")
    assert git_commit(tmp_path) == head[:12]
    (tmp_path / "new.txt").write_text("untracked files do not count\n")
    assert git_commit(tmp_path) == head[:12]
    (tmp_path / "a.txt").write_text("two\n")
    assert git_commit(tmp_path) == f"{head[:12]}-modified"


def test_unknown_outside_a_checkout_of_its_own(tmp_path: Path) -> None:
    assert git_commit(tmp_path) is None  # no repository at all
    git(tmp_path, "init", "-q")
    inner = tmp_path / "vendored" / "recsys"
    inner.mkdir(parents=True)
    assert git_commit(inner) is None  # inside someone else's repository
