"""The README says what ships: the data files it uses are explained, its example output names
a model the default can choose, every command is listed, the storage format is the written one."""

from __future__ import annotations

import re
from pathlib import Path

from jobs.cli import main
from recsys.config import Config
from recsys.warehouse import STORAGE_VERSION

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_movielens_file_the_readme_uses_is_explained() -> None:
    used = set(re.findall(r"\.\./shared/data/ml-100k/([\w.]+)", README))
    assert used >= {"u.data", "u.user", "items.csv"}
    for name in used:
        assert re.search(rf"^- `{re.escape(name)}`: ", README, re.MULTILINE), name
    assert "not** a GroupLens file name" in README  # items.csv is a converted u.item


def test_show_user_example_names_a_model_the_default_can_choose() -> None:
    (header,) = re.findall(r"^user 42: \d+ recommendations from run \w+ \(model (\w+)\)$", README,
                           re.MULTILINE)  # fmt: skip
    assert header in Config().model.candidates


def test_every_command_is_in_the_readme() -> None:
    for name in main.commands:
        assert f"`recsys {name}" in README, name


def test_readme_names_the_storage_format_written() -> None:
    assert f"`{STORAGE_VERSION}` storage format" in README
    assert "DuckDB 1.0 and every later" in README
