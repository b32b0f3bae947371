from pathlib import Path

import pytest

from recsys.config import Config, load_config, to_toml
from recsys.errors import ConfigError, MissingInputError


def test_defaults_then_file_then_env(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[scoring]\ntop_n = 7\n[output]\ndatabase = "a.duckdb"\n')
    config = load_config(path, environ={"RECSYS_OUTPUT_DATABASE": "b.duckdb"})
    assert config.scoring.top_n == 7
    assert config.output.database == "b.duckdb"
    assert config.training.seed == Config().training.seed


def test_unknown_key_names_section_and_key(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[scoring]\ntopn = 7\n")
    with pytest.raises(
        ConfigError, match=r"c.toml: unknown key 'topn' in \[scoring\] \(expected one of: .*top_n"
    ):
        load_config(path, environ={})


def test_unknown_section(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[scorer]\ntop_n = 7\n")
    with pytest.raises(ConfigError, match=r"unknown section \[scorer\]"):
        load_config(path, environ={})


def test_invalid_toml_and_wrong_type(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[scoring\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path, environ={})
    path.write_text('[scoring]\ntop_n = "many"\n')
    with pytest.raises(ConfigError, match=r"\[scoring\] top_n: expected an integer, found 'many'"):
        load_config(path, environ={})


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError, match="config file not found"):
        load_config(tmp_path / "nope.toml", environ={})


def test_env_list_and_bool() -> None:
    config = load_config(
        None, environ={"RECSYS_MODEL_CANDIDATES": "bpr, popularity", "RECSYS_GATE_ENABLED": "false"}
    )
    assert config.model.candidates == ["bpr", "popularity"]
    assert config.gate.enabled is False


def test_shown_config_round_trips(tmp_path: Path) -> None:
    config = load_config(None, environ={"RECSYS_SCORING_TOP_N": "33"})
    path = tmp_path / "shown.toml"
    path.write_text(to_toml(config))
    assert load_config(path, environ={}) == config


def test_shipped_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parent.parent / "recsys.toml"
    assert load_config(example, environ={}).output.database == "warehouse/recs.duckdb"
