"""Job configuration: one TOML file, overridden by RECSYS_* environment variables, then CLI options.

Precedence (lowest first): dataclass defaults < recsys.toml < RECSYS_SECTION_KEY env < CLI.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys.errors import ConfigError, MissingInputError


@dataclass
class SourceConfig:
    # Empty means: generate the seeded demo dataset.
    interactions: str = ""
    # Where (delimiter) a plain .csv/.tsv/.txt file needs one; "" sniffs by extension.
    delimiter: str = ""
    user_features: str = ""
    item_features: str = ""
    # Extra users to score with no interactions (CSV/Parquet/DuckDB with the user column).
    users_to_score: str = ""
    # Demo data size (used only when interactions is empty).
    demo_users: int = 2000
    demo_items: int = 1000
    demo_interactions_per_user: int = 40


@dataclass
class ColumnsConfig:
    user: str = "user_id"
    item: str = "item_id"
    rating: str = "rating"
    timestamp: str = "timestamp"


@dataclass
class FeaturesConfig:
    """Which columns of the feature tables are used, and how. All lists empty = detect:
    numbers are bucketed, text with the separator is multi-valued, text with few distinct
    values is categorical, anything else (titles, zip codes) is left out."""

    user_categorical: list[str] = field(default_factory=list)
    user_multi: list[str] = field(default_factory=list)
    user_numeric: list[str] = field(default_factory=list)
    item_categorical: list[str] = field(default_factory=list)
    item_multi: list[str] = field(default_factory=list)
    item_numeric: list[str] = field(default_factory=list)
    separator: str = "|"
    numeric_buckets: int = 8


@dataclass
class DataConfig:
    # Ratings outside [min_rating, max_rating] are refused; predictions are clipped to it.
    min_rating: float = 1.0
    max_rating: float = 5.0
    # Ratings >= this count as positives for ranking losses and metrics; 0 = every row.
    positive_threshold: float = 0.0
    # Fraction of each user's latest interactions held out for validation.
    holdout_fraction: float = 0.2
    # Users with fewer interactions than this keep all of them in training.
    min_user_interactions: int = 3


@dataclass
class ModelConfig:
    # A registered model name, or "auto" to train `candidates` and serve the best.
    name: str = "auto"
    candidates: list[str] = field(
        default_factory=lambda: ["popularity", "mf_bias", "ials", "fm", "deepfm"]
    )
    selection_metric: str = "ndcg"
    selection_k: int = 10
    # Embedding size for every model that has one; 0 = each model's own default.
    dim: int = 0
    # Refit the chosen model on all interactions before scoring.
    refit: bool = True
    # Per-model hyper-parameters, e.g. [model.params.bpr] dim = 128, lr = 0.01.
    params: dict[str, dict] = field(default_factory=dict)


@dataclass
class TrainingConfig:
    """Loop settings shared by all models; per-model ones (lr, epochs, loss) are in
    [model.params.NAME]."""

    batch_size: int = 4096
    # Epochs without validation improvement before stopping.
    patience: int = 3
    seed: int = 42
    # "auto" = CUDA when present, else CPU.
    device: str = "auto"
    # CPU threads for training (small per-batch ops gain little from more; scoring uses all).
    threads: int = 1


@dataclass
class ScoringConfig:
    top_n: int = 20
    # Bytes of scratch memory for one chunk of scores; 0 = derived from free device memory.
    memory_budget_bytes: int = 0
    device: str = "auto"
    # auto, float32, or bfloat16/float16 for the product, with the candidates rescored in
    # fp32 (exact fp32 lists); auto = bfloat16 on CPUs with bf16 instructions, else float32.
    dtype: str = "auto"
    similar_items_n: int = 20


@dataclass
class OutputConfig:
    database: str = "warehouse/recs.duckdb"
    # Published databases kept in <dir>/archive for rollback.
    keep_archives: int = 5
    # Free disk needed before writing, as a multiple of the served file's size.
    free_space_factor: float = 2.0
    # Each run's full log (DEBUG lines, tracebacks) as <log_dir>/<run_id>.log; "" = <dir>/logs.
    log_dir: str = ""
    # Off a terminal (cron), a progress line at this interval in seconds through the whole
    # job (phase, step, rate, ETA); 0 = none. On a terminal a bar shows progress instead.
    progress_seconds: float = 15.0
    # Latest interactions per user published in user_history ("because you liked/watched"
    # look-ups); 0 = all of them.
    history_n: int = 0
    # Write the HTML run report after every publish (a failure there is only a warning).
    report: bool = True
    # Where: <report_dir>/report-<run_id>.html and report-latest.html; "" = the database's folder.
    report_dir: str = ""
    # Run reports kept in report_dir (oldest deleted first); 0 = keep all.
    keep_reports: int = 30


@dataclass
class GateConfig:
    enabled: bool = True
    # New row count must be within [old / ratio, old * ratio] of the last published run.
    max_row_ratio: float = 3.0
    # Validation metric may drop by at most this much (absolute) from the last published run.
    max_metric_drop: float = 0.05


@dataclass
class Config:
    source: SourceConfig = field(default_factory=SourceConfig)
    columns: ColumnsConfig = field(default_factory=ColumnsConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    gate: GateConfig = field(default_factory=GateConfig)

    def __post_init__(self) -> None:
        # Where each "section.key" set away from its default came from ("file recsys.toml",
        # "env RECSYS_...", "option"); not a field: two configs with the same values are equal.
        self.origins: dict[str, str] = {}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def origin(self, dotted: str) -> str:
        return self.origins.get(dotted, "default")


ENV_PREFIX = "RECSYS_"


def load_config(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Config:
    """Defaults, then the TOML file (when given or `recsys.toml` exists), then RECSYS_* vars."""
    config = Config()
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise MissingInputError(f"{path}: config file not found")
        try:
            with path.open("rb") as fh:
                raw = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
        except OSError as exc:
            raise MissingInputError(f"{path}: cannot read config ({exc.strerror})") from None
        apply_mapping(config, raw, origin=str(path))
    apply_env(config, os.environ if environ is None else environ)
    return config


def apply_mapping(config: Config, raw: dict[str, Any], origin: str) -> None:
    """Set sections from a nested mapping, refusing unknown sections and keys."""
    sections = {f.name for f in dataclasses.fields(config)}
    for section, values in raw.items():
        if section not in sections:
            raise ConfigError(
                f"{origin}: unknown section [{section}] (expected one of: {', '.join(sorted(sections))})"
            )
        if not isinstance(values, dict):
            raise ConfigError(f"{origin}: [{section}] must be a table of keys")
        for key, value in values.items():
            set_option(config, section, key, value, origin, source=f"file {origin}")


def apply_env(config: Config, environ: typing.Mapping[str, str]) -> None:
    """RECSYS_SECTION_KEY=value overrides, e.g. RECSYS_OUTPUT_DATABASE=/srv/recs.duckdb."""
    sections = {f.name for f in dataclasses.fields(config)}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section, _, key = rest.partition("_")
        if section not in sections or not key:
            continue  # other RECSYS_* variables (e.g. test hooks) are not config
        set_option(config, section, key, value, origin=f"environment variable {name}",
                   source=f"env {name}")  # fmt: skip


def set_option(
    config: Config, section: str, key: str, value: Any, origin: str, source: str = ""
) -> None:
    """Set one `section.key`, converting `value` to the field's type with a clear error;
    `origin` names the setting in errors, `source` (default `origin`) is what `config show
    --origin` says it came from."""
    target = getattr(config, section)
    fields = {f.name: f for f in dataclasses.fields(target)}
    if key not in fields:
        raise ConfigError(
            f"{origin}: unknown key '{key}' in [{section}] "
            f"(expected one of: {', '.join(sorted(fields))})"
        )
    hint = typing.get_type_hints(type(target))[key]
    value = coerce(value, hint, f"{origin}: [{section}] {key}")
    least = MINIMUMS.get(f"{section}.{key}")
    if least is not None and value < least:
        raise ConfigError(
            f"{origin}: [{section}] {key} = {value!r} is below {least!r}, the least that works"
        )
    setattr(target, key, value)
    config.origins[f"{section}.{key}"] = source or origin


# Settings the job cannot run with below these; refused up front rather than as odd results.
MINIMUMS: dict[str, float] = {
    "scoring.top_n": 1,
    "scoring.similar_items_n": 0,
    "output.keep_archives": 0,
    "output.free_space_factor": 0.0,
    "output.keep_reports": 0,
    "output.progress_seconds": 0.0,
    "gate.max_row_ratio": 1.0,
    "gate.max_metric_drop": 0.0,
}


def coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (list, types.GenericAlias) or hint is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, found {value!r}")
        (inner,) = typing.get_args(hint) or (str,)
        return [coerce(v, inner, where) for v in value]
    if origin is dict or hint is dict:
        if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
            raise ConfigError(f"{where}: expected tables of keys, e.g. [model.params.bpr]")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in (
            "1",
            "true",
            "yes",
            "on",
            "0",
            "false",
            "no",
            "off",
        ):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"{where}: expected true or false, found {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, found {value!r}")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected an integer, found {value!r}") from None
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, found {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, found {value!r}") from None
    if hint is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, found {value!r}")
        return str(value)
    return value


# A model's hyper-parameters as a run uses them: name -> (value, where it came from), and a
# comment for the model's table.
ModelParams = dict[str, tuple[dict[str, tuple[Any, str]], str]]


def to_toml(
    config: Config, with_origins: bool = False, model_params: ModelParams | None = None
) -> str:
    """The effective config as TOML text (for `recsys config show`). `with_origins` ends each
    line with a comment saying where its value came from; `model_params` replaces
    model.params with one complete [model.params.NAME] table per model. Either way the text
    loads back as the same configuration."""

    def line(key: str, value: Any, origin: str) -> str:
        text = f"{key} = {toml_value(value)}"
        return f"{text:<40}  # {origin}" if with_origins else text

    lines: list[str] = []
    for section, values in config.to_dict().items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if section == "model" and key == "params" and model_params is not None:
                continue
            lines.append(line(key, value, config.origin(f"{section}.{key}")))
        lines.append("")
        if section == "model" and model_params is not None:
            for name, (params, note) in model_params.items():
                lines.append(f"[model.params.{name}]" + (f"  # {note}" if note else ""))
                lines += [line(key, value, origin) for key, (value, origin) in params.items()]
                lines.append("")
    return "\n".join(lines)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
