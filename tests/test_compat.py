"""The served file opens in the DuckDB users already have: DuckDB 1.x, installed from PyPI into
a throwaway environment, reads published and archived files, and the README's `duckdb` command
runs as written. Skipped only when no 1.x package can be installed (no network, no index)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import venv
from pathlib import Path

import duckdb
import pytest

from recsys.warehouse import QUERIES_DIR
from tests.conftest import TwoRuns

ROOT = Path(__file__).resolve().parent.parent
TABLES = ("recommendations", "similar_items", "items", "user_history", "runs", "metrics",
          "metrics_by_activity")  # fmt: skip
# The oldest release the README promises, and the newest 1.x (with its CLI, as `make duckdb-cli`
# installs it) that PyPI has.
OLDEST = ("duckdb==1.0.0",)
NEWEST_1X = ("duckdb<2", "duckdb-cli<2")


def duckdb_env(cache_root: Path, requirements: tuple[str, ...]) -> Path:
    """A virtualenv with `requirements`, made once and kept under `cache_root` (a few seconds
    the first time, none after); skips the test when pip cannot install them."""
    key = re.sub(r"[^A-Za-z0-9.]+", "_", "-".join(requirements))
    env = cache_root / key
    python = env / "bin" / "python"
    if (env / "ready").exists():
        return env
    venv.EnvBuilder(clear=True, with_pip=False).create(env)
    # This venv's pip installs into the new one: no pip of its own to bootstrap.
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--disable-pip-version-check", *requirements],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.skip(f"cannot install {' '.join(requirements)}: {result.stderr.strip()[-300:]}")
    (env / "ready").write_text("\n".join(requirements) + "\n")
    return env


@pytest.fixture(scope="session")
def env_cache(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = getattr(pytestconfig, "cache", None)
    return cache.mkdir("duckdb-envs") if cache else tmp_path_factory.mktemp("duckdb-envs")


READ_TABLES = """
import json, sys
import duckdb
out = {"version": duckdb.__version__, "files": {}}
for path in sys.argv[2:]:
    con = duckdb.connect(path, read_only=True)
    out["files"][path] = {t: con.sql(f"select count(*), count(distinct run_id) from {t}").fetchall()[0]
                          if t in ("recommendations", "similar_items", "user_history")
                          else [con.sql(f"select count(*) from {t}").fetchall()[0][0], None]
                          for t in sys.argv[1].split(",")}
    con.close()
print(json.dumps(out))
"""


def counts_here(path: Path) -> dict:
    with duckdb.connect(str(path), read_only=True) as con:
        return {
            t: list(con.sql(f"select count(*), count(distinct run_id) from {t}").fetchall()[0])
            if t in ("recommendations", "similar_items", "user_history")
            else [con.sql(f"select count(*) from {t}").fetchall()[0][0], None]
            for t in TABLES
        }


@pytest.mark.parametrize("requirements", [OLDEST, NEWEST_1X], ids=["oldest", "newest-1.x"])
def test_duckdb_1x_reads_the_served_and_archived_files(
    two_runs: TwoRuns, env_cache: Path, requirements: tuple[str, ...]
) -> None:
    env = duckdb_env(env_cache, requirements)
    files = [
        two_runs.database,
        *sorted((two_runs.database.parent / "recs.archive").glob("*.duckdb")),
    ]
    assert len(files) == 3  # served, and both runs archived
    result = subprocess.run(
        [str(env / "bin" / "python"), "-c", READ_TABLES, ",".join(TABLES), *map(str, files)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    found = json.loads(result.stdout)
    assert found["version"].startswith("1."), found["version"]
    for path in files:
        assert found["files"][str(path)] == counts_here(path), (found["version"], path)
    assert found["files"][str(two_runs.database)]["recommendations"][0] > 0


def test_newest_duckdb_1x_runs_every_shipped_query(two_runs: TwoRuns, env_cache: Path) -> None:
    """The example queries in sql/queries give the same rows in DuckDB 1.x as in this one
    (compared as text: a bare 1.x needs pytz to hand timestamps with time zones to Python)."""
    env = duckdb_env(env_cache, NEWEST_1X)
    variables = {"user_id": two_runs.user_id, "item_id": two_runs.item_id}
    script = """
import json, sys
import duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
for name, value in json.loads(sys.argv[2]).items():
    con.execute(f"set variable {name} = ?", [value])
print(json.dumps({name: con.sql(sql).fetchall() for name, sql in json.loads(sys.argv[3]).items()}))
"""
    queries = {p.name: as_text(p.read_text()) for p in sorted(QUERIES_DIR.glob("*.sql"))}
    result = subprocess.run(
        [str(env / "bin" / "python"), "-c", script, str(two_runs.database),
         json.dumps(variables), json.dumps(queries)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    theirs = json.loads(result.stdout)
    with duckdb.connect(str(two_runs.database), read_only=True) as con:
        for name, value in variables.items():
            con.execute(f"set variable {name} = ?", [value])
        ours = {name: [list(row) for row in con.sql(sql).fetchall()]
                for name, sql in queries.items()}  # fmt: skip
    assert theirs == ours
    assert any(theirs.values())


def as_text(query: str) -> str:
    return f"select columns(*)::varchar from ({query.strip().rstrip(';')}\n)"


def readme_duckdb_commands() -> list[str]:
    """The README's shell lines that run the DuckDB CLI."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.DOTALL)
    return [line for block in blocks for line in block.splitlines()
            if re.match(r"(\.venv/bin/)?duckdb ", line)]  # fmt: skip


def test_readme_duckdb_command_runs_as_written(
    two_runs: TwoRuns, env_cache: Path, tmp_path: Path
) -> None:
    """In a folder laid out as after `make install && make nightly && make duckdb-cli`, each
    README line that runs `duckdb` works unchanged with the newest 1.x CLI."""
    commands = readme_duckdb_commands()
    assert commands, "the README shows no duckdb command"
    env = duckdb_env(env_cache, NEWEST_1X)
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "duckdb").symlink_to(env / "bin" / "duckdb")
    (tmp_path / "warehouse").mkdir()
    (tmp_path / "warehouse" / "recs.duckdb").symlink_to(two_runs.database)
    path = f"{tmp_path / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    for command in commands:
        result = subprocess.run(shlex.split(command), cwd=tmp_path, capture_output=True,
                                text=True, timeout=60, env={**os.environ, "PATH": path})  # fmt: skip
        assert result.returncode == 0, (command, result.stderr)
        assert "Error" not in result.stderr, (command, result.stderr)
        assert result.stdout.strip(), command
    version = subprocess.run([str(env / "bin" / "duckdb"), "--version"], capture_output=True,
                             text=True, timeout=60)  # fmt: skip
    assert version.stdout.startswith("v1."), version.stdout


def test_make_duckdb_cli_installs_the_cli_into_the_venv() -> None:
    """The README's `make duckdb-cli` puts PyPI's duckdb-cli into .venv (dry run)."""
    result = subprocess.run(["make", "-n", "duckdb-cli"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert re.search(r"\.venv/bin/pip install .*duckdb-cli", result.stdout), result.stdout
    assert "make duckdb-cli" in (ROOT / "README.md").read_text()
