"""Job configuration: one TOML file, overridden by RECSYS_* environment variables, then CLI options.

Precedence (lowest first): dataclass defaults < recsys.toml < RECSYS_SECTION_KEY env < CLI.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys.errors import ConfigError, MissingInputError, UsageError


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
    # Optional count or strength per row (plays, clicks, seconds watched): repeated (user, item)
    # rows add up, and models with a `confidence` setting turn the sum into confidence.
    weight: str = "weight"


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
    # Without a timestamp column, whether the file's row order is chronological. When false
    # (exports are often sorted by ID) the validation holdout is a seeded random sample of each
    # user's interactions and recency weighting is off.
    order_is_time: bool = False


@dataclass
class TuningConfig:
    """Hyper-parameter search on the validation split (Optuna's TPE sampler), per candidate.
    The first trial is always the model's defaults (with [model.params.NAME] applied)."""

    # Seconds for the whole search, shared by the candidates; 0 = no tuning (defaults).
    budget_seconds: float = 60.0
    # At most this many trials per candidate.
    trials: int = 40
    # Serve a blend of the two best candidates when it beats both on validation.
    blend: bool = True


@dataclass
class ModelConfig:
    # A registered model name, or "auto" to train `candidates` and serve the best.
    name: str = "auto"
    # Ranking models compared by `auto` (rating models such as mf_bias are left to `predict`).
    candidates: list[str] = field(
        default_factory=lambda: ["popularity", "ease", "itemknn", "ials", "fm"]
    )
    selection_metric: str = "ndcg"
    selection_k: int = 10
    # Embedding size for every model that has one; 0 = each model's own default.
    dim: int = 0
    # Refit the chosen model on all interactions before scoring.
    refit: bool = True
    # Per-model hyper-parameters, e.g. [model.params.bpr] dim = 128, lr = 0.01.
    params: dict[str, dict] = field(default_factory=dict)
    tuning: TuningConfig = field(default_factory=TuningConfig)


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
    # CPU threads for training: small per-batch ops gain little from more, and OpenMP thread
    # teams slow down badly (seen: 10x) when another process shares the cores. Scoring uses all.
    threads: int = 1
    # Candidates tuned at the same time on CPU, each with `threads` threads; 0 = one per core.
    candidate_workers: int = 0


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
    # Published databases kept in <dir>/<name>.archive for rollback (recsys.state).
    keep_archives: int = 5
    # Free disk needed before writing, as a multiple of the served file's size.
    free_space_factor: float = 2.0
    # Run logs: "" = <dir>/<name>.logs beside the database.
    log_dir: str = ""
    # Off a terminal (cron), a progress line at this interval in seconds through the whole
    # job (phase, step, rate, ETA); 0 = none. On a terminal a bar shows progress instead.
    progress_seconds: float = 15.0
    # Latest interactions per user published in user_history ("because you liked/watched"
    # look-ups); 0 = all of them.
    history_n: int = 0
    # Write the HTML run report after every publish (a failure there is only a warning).
    report: bool = True
    # Where: <report_dir>/<name>.report-<run_id>.html and <name>.report-latest.html; "" = the
    # database's folder.
    report_dir: str = ""
    # Run reports kept in report_dir (oldest deleted first); 0 = keep all.
    keep_reports: int = 30
    # Permissions of everything the jobs create (the served file, archives, reports, logs,
    # ledger, exports), whatever the umask; folders get x where r is set (644 -> 755).
    file_mode: str = "644"


@dataclass
class GateConfig:
    enabled: bool = True
    # New row count must be within [old / ratio, old * ratio] of the last published run.
    max_row_ratio: float = 3.0
    # Validation metric may drop by at most this much (absolute) from the last published run.
    max_metric_drop: float = 0.05
    # The absolute check: the served model's validation metric may be at most this share
    # below popularity's on the same split (0.5: at least half of it).
    max_below_popularity: float = 0.5


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
        except UnicodeDecodeError as exc:
            line = path.read_bytes()[: exc.start].count(b"\n") + 1
            raise ConfigError(
                f"{path}: line {line} is not UTF-8 text (byte {exc.object[exc.start]:#04x}); "
                "TOML files must be UTF-8"
            ) from None
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
    """RECSYS_SECTION_KEY=value overrides, e.g. RECSYS_OUTPUT_DATABASE=/srv/recs.duckdb or,
    for a nested table, RECSYS_MODEL_TUNING_BUDGET_SECONDS=30."""
    sections = {f.name for f in dataclasses.fields(config)}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section, _, key = rest.partition("_")
        if section not in sections or not key:
            continue  # other RECSYS_* variables (e.g. test hooks) are not config
        if f"{section}.{key}" in SOURCES and not value.strip():
            # A cron line's unset variable: an empty source would quietly mean "none" (the
            # demo data for interactions), so it is a usage error, not a setting.
            raise UsageError(
                f"environment variable {name} is set but empty; give a path, or unset it "
                f"to leave [{section}] {key} as the config file has it"
            )
        origin, source = f"environment variable {name}", f"env {name}"
        table, _, nested_key = key.partition("_")
        if dataclasses.is_dataclass(getattr(getattr(config, section), table, None)):
            set_option(config, section, table, {nested_key: value}, origin, source)
        else:
            set_option(config, section, key, value, origin, source)


def set_option(
    config: Config, section: str, key: str, value: Any, origin: str, source: str = ""
) -> None:
    """Set one `section.key` (a nested table such as [model.tuning] takes a mapping),
    converting `value` to the field's type with a clear error; `origin` names the setting in
    errors, `source` (default `origin`) is what `config show --origin` says it came from."""
    _set(config, getattr(config, section), section, key, value, origin, source or origin)


def _set(
    config: Config, target: Any, section: str, key: str, value: Any, origin: str, source: str
) -> None:
    fields = {f.name: f for f in dataclasses.fields(target)}
    if key not in fields:
        raise ConfigError(
            f"{origin}: unknown key '{key}' in [{section}] "
            f"(expected one of: {', '.join(sorted(fields))})"
        )
    nested = getattr(target, key)
    if dataclasses.is_dataclass(nested):
        if not isinstance(value, dict):
            raise ConfigError(f"{origin}: [{section}.{key}] must be a table of keys")
        for inner, inner_value in value.items():
            _set(config, nested, f"{section}.{key}", inner, inner_value, origin, source)
        return
    hint = typing.get_type_hints(type(target))[key]
    value = coerce(value, hint, f"{origin}: [{section}] {key}")
    check_range(f"{section}.{key}", value, f"{origin}: [{section}] {key}")
    setattr(target, key, value)
    config.origins[f"{section}.{key}"] = source or origin


@dataclass(frozen=True)
class Range:
    """Closed or half-open numeric bounds: what a setting must lie in to make sense."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is not allowed
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (
            self.high is not None and (value >= self.high if self.high_open else value > self.high)
        )

    def __str__(self) -> str:
        low, high = _number(self.low), _number(self.high)
        if self.high is None:
            return f"{'above' if self.low_open else 'at least'} {low}"
        if self.low is None:
            return f"{'below' if self.high_open else 'at most'} {high}"
        return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"


def _number(value: float | None) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# Settings naming an input: explicitly empty (an environment variable set to "") is refused.
SOURCES = ("source.interactions", "source.user_features", "source.item_features",
           "source.users_to_score")  # fmt: skip
MAX_SEED = 2**63 - 1  # the runs table stores it as BIGINT; numpy takes no negative seeds
# Settings the job cannot run with outside these; refused up front rather than as odd results
# (a negative batch size trains nothing, a NaN margin turns the gate off).
RANGES: dict[str, Range] = {
    "source.demo_users": Range(1),
    "source.demo_items": Range(2),
    "source.demo_interactions_per_user": Range(1),
    "features.numeric_buckets": Range(1),
    "data.positive_threshold": Range(0),
    "data.holdout_fraction": Range(0, 1, low_open=True, high_open=True),
    "data.min_user_interactions": Range(1),
    "model.selection_k": Range(1),
    "model.dim": Range(0),
    "training.batch_size": Range(1),
    "training.patience": Range(0),
    "training.seed": Range(0, MAX_SEED),
    "training.threads": Range(1),
    "scoring.top_n": Range(1),
    "scoring.memory_budget_bytes": Range(0),
    "scoring.similar_items_n": Range(0),
    "output.keep_archives": Range(0),
    "output.free_space_factor": Range(0),
    "output.history_n": Range(0),
    "output.keep_reports": Range(0),
    "gate.max_row_ratio": Range(1),
    "gate.max_metric_drop": Range(0),
    "gate.max_below_popularity": Range(0, 1),
    "output.progress_seconds": Range(0),
    "model.tuning.budget_seconds": Range(0),
    "model.tuning.trials": Range(1),
    "training.candidate_workers": Range(0),
}
# Settings with a fixed set of values (devices: a CUDA index may follow, e.g. cuda:1).
CHOICES: dict[str, str] = {
    "training.device": r"auto|cpu|cuda(:\d+)?|mps",
    "scoring.device": r"auto|cpu|cuda(:\d+)?|mps",
    "scoring.dtype": r"auto|float32|float16|bfloat16",
    "output.file_mode": r"0?[0-7]{3}",
}
CHOICE_TEXT = {"training.device": "auto, cpu, cuda, cuda:N or mps",
               "scoring.device": "auto, cpu, cuda, cuda:N or mps",
               "scoring.dtype": "auto, float32, float16 or bfloat16",
               "output.file_mode": "an octal mode such as 644"}  # fmt: skip
NON_EMPTY = ("columns.user", "columns.item", "columns.rating", "columns.timestamp",
             "columns.weight",
             "features.separator", "output.database")  # fmt: skip


def check_range(dotted: str, value: Any, where: str) -> None:
    """Refuse a value outside RANGES or CHOICES, or an empty NON_EMPTY string."""
    allowed = RANGES.get(dotted)
    if allowed is not None and value not in allowed:
        raise ConfigError(f"{where} = {value!r} must be {allowed}")
    pattern = CHOICES.get(dotted)
    if pattern is not None and not re.fullmatch(pattern, str(value)):
        raise ConfigError(f"{where} = {value!r} unknown (expected {CHOICE_TEXT[dotted]})")
    if dotted in NON_EMPTY and not str(value).strip():
        raise ConfigError(f"{where} is empty (expected a name)")


def validate(config: Config) -> None:
    """Every setting in range, and the ones that depend on each other consistent: called once
    all sources (defaults, file, environment, options) are applied, before any work."""
    for section in dataclasses.fields(config):
        _validate_table(section.name, getattr(config, section.name))
    data = config.data
    if not data.min_rating < data.max_rating:
        raise ConfigError(
            f"[data] min_rating = {data.min_rating:g} must be below max_rating = {data.max_rating:g}"
        )
    if data.positive_threshold > data.max_rating:
        raise ConfigError(
            f"[data] positive_threshold = {data.positive_threshold:g} is above max_rating = "
            f"{data.max_rating:g}, so no rating would count as positive"
        )


def _validate_table(name: str, values: Any) -> None:
    """Every value of one table (and of its nested tables, e.g. [model.tuning]) finite and in
    range."""
    for f in dataclasses.fields(values):
        value = getattr(values, f.name)
        if dataclasses.is_dataclass(value):
            _validate_table(f"{name}.{f.name}", value)
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"[{name}] {f.name} = {value!r} must be a finite number")
        check_range(f"{name}.{f.name}", value, f"[{name}] {f.name}")


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
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, found {value!r}") from None
        if not math.isfinite(number):  # nan would switch off every comparison made with it
            raise ConfigError(f"{where}: expected a finite number, found {value!r}")
        return number
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
