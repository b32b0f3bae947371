from pathlib import Path

import pytest

from recsys.config import Config, load_config, to_toml, toml_value, validate
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


def shown(args: list[str], env: dict[str, str] | None = None) -> str:
    from click.testing import CliRunner

    from jobs.cli import main

    result = CliRunner().invoke(main, ["config", "show", *args], env=env)
    assert result.exit_code == 0, result.output
    return result.output


def origins(text: str) -> dict[str, tuple[str, str]]:
    """section.key -> (value, origin) from `config show --origin` lines."""
    found, section = {}, ""
    for line in text.splitlines():
        if line.startswith("["):
            section = line.split("]")[0][1:]
        elif " = " in line:
            key, rest = line.split(" = ", 1)
            value, _, origin = rest.partition("  # ")
            found[f"{section}.{key}"] = (value.strip(), origin.strip())
    return found


def test_config_show_origin_names_default_file_env_and_option(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[scoring]\ntop_n = 7\n[output]\nkeep_archives = 2\n")
    text = shown(["--config", str(path), "--origin", "--seed", "5"],
                 env={"RECSYS_OUTPUT_KEEP_ARCHIVES": "3"})  # fmt: skip
    found = origins(text)
    assert found["scoring.top_n"] == ("7", f"file {path}")
    assert found["output.keep_archives"] == ("3", "env RECSYS_OUTPUT_KEEP_ARCHIVES")
    assert found["training.seed"] == ("5", "option")
    assert found["scoring.dtype"] == ('"auto"', "default")
    keys = {f"{s}.{k}" for s, values in Config().to_dict().items() for k in values}
    assert keys - {"model.params"} <= set(found)


def test_config_show_origin_gives_every_models_effective_parameters(tmp_path: Path) -> None:
    from recsys.models import REGISTRY

    path = tmp_path / "c.toml"
    path.write_text("[model]\ndim = 24\ncandidates = ['bpr', 'fm']\n"
                    "[model.params.fm]\nlr = 0.5\nepochs = 3\n")  # fmt: skip
    text = shown(["--config", str(path), "--origin"])
    found = origins(text)
    assert "params = " not in text  # the tables replace the bare dict
    for name, cls in REGISTRY.items():
        if not cls.selectable:  # a blend is built by auto, never configured
            assert f"model.params.{name}." not in text
            continue
        for key, default in cls.DEFAULTS.items():
            value, origin = found[f"model.params.{name}.{key}"]
            if name == "fm" and key in ("lr", "epochs"):
                assert (value, origin) == ({"lr": "0.5", "epochs": "3"}[key], f"file {path}")
            elif key == "dim":
                assert (value, origin) == ("24", f"model.dim (file {path})")
            else:
                assert (value, origin) == (toml_value(default), f"default of {name}")
    assert "[model.params.fm]  # trained by this config" in text
    assert "[model.params.deepfm]  # not trained by this config" in text

    # What it prints loads back as the same run: the same values, every parameter explicit.
    again = tmp_path / "again.toml"
    again.write_text(text)
    reloaded = load_config(again, environ={})
    original = load_config(path, environ={})
    assert reloaded.scoring == original.scoring and reloaded.model.dim == original.model.dim
    from recsys.select import model_params

    for name, cls in REGISTRY.items():
        if not cls.selectable:
            continue
        assert {**cls.DEFAULTS, **model_params(reloaded, name)} == {
            **cls.DEFAULTS,
            **model_params(original, name),
        }


def test_config_show_origin_flags_a_parameter_no_model_has(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[model.params.bpr]\nlearning_rate = 0.1\n")
    found = origins(shown(["--config", str(path), "--origin"]))
    assert found["model.params.bpr.learning_rate"] == (
        "0.1",
        f"file {path}; unknown to bpr: a run refuses it",
    )


def test_shipped_config_lists_every_key_with_its_default() -> None:
    """recsys.toml is the reference: exactly the sections and keys the config knows, each set
    to its default value (a key added to the code must be added there, and vice versa)."""
    import tomllib

    with (Path(__file__).resolve().parent.parent / "recsys.toml").open("rb") as fh:
        shipped = tomllib.load(fh)
    assert shipped == Config().to_dict()


# ------------------------------------------- issue 13: every setting finite and in range


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"RECSYS_GATE_MAX_METRIC_DROP": "nan"},
            "max_metric_drop: expected a finite number, found 'nan'",
        ),
        ({"RECSYS_OUTPUT_FREE_SPACE_FACTOR": "inf"}, "free_space_factor: expected a finite number"),
        ({"RECSYS_TRAINING_BATCH_SIZE": "0"}, "[training] batch_size = 0 must be at least 1"),
        ({"RECSYS_TRAINING_BATCH_SIZE": "-5"}, "[training] batch_size = -5 must be at least 1"),
        ({"RECSYS_DATA_HOLDOUT_FRACTION": "1"}, "[data] holdout_fraction = 1.0 must be in (0, 1)"),
        ({"RECSYS_DATA_HOLDOUT_FRACTION": "-0.1"}, "holdout_fraction = -0.1 must be in (0, 1)"),
        ({"RECSYS_MODEL_SELECTION_K": "0"}, "[model] selection_k = 0 must be at least 1"),
        (
            {"RECSYS_SCORING_DEVICE": "banana"},
            "[scoring] device = 'banana' unknown (expected auto, cpu, cuda, cuda:N or mps)",
        ),
        (
            {"RECSYS_TRAINING_SEED": "-1"},
            "[training] seed = -1 must be in [0, 9223372036854775807]",
        ),
        ({"RECSYS_TRAINING_SEED": str(2**64)}, "seed = 18446744073709551616 must be in"),
        ({"RECSYS_SCORING_DTYPE": "float8"}, "[scoring] dtype = 'float8' unknown"),
        ({"RECSYS_GATE_MAX_ROW_RATIO": "0.5"}, "[gate] max_row_ratio = 0.5 must be at least 1"),
    ],
)
def test_settings_out_of_range_are_refused_naming_the_key(env: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ=env)
    assert message in str(caught.value)


def test_nan_in_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[gate]\nmax_metric_drop = nan\n")
    with pytest.raises(ConfigError, match=r"c.toml: \[gate\] max_metric_drop: expected a finite"):
        load_config(path, environ={})


def test_settings_that_depend_on_each_other() -> None:
    config = load_config(None, environ={"RECSYS_DATA_POSITIVE_THRESHOLD": "6"})
    with pytest.raises(ConfigError, match="positive_threshold = 6 is above max_rating = 5"):
        validate(config)
    config = load_config(None, environ={"RECSYS_DATA_MIN_RATING": "5"})
    with pytest.raises(ConfigError, match="min_rating = 5 must be below max_rating = 5"):
        validate(config)
    validate(Config())  # the defaults are valid


def test_validate_catches_values_set_directly() -> None:
    """Library callers build Config objects without set_option: validate() still sees them."""
    config = Config()
    config.training.batch_size = -1
    with pytest.raises(ConfigError, match=r"\[training\] batch_size = -1 must be at least 1"):
        validate(config)
    config = Config()
    config.gate.max_metric_drop = float("nan")
    with pytest.raises(ConfigError, match="max_metric_drop = nan must be a finite number"):
        validate(config)


def test_config_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(b'[output]\n# caf\xe9\ndatabase = "x.duckdb"\n')
    with pytest.raises(ConfigError, match=r"c.toml: line 2 is not UTF-8 text \(byte 0xe9\)"):
        load_config(path, environ={})
