"""The nightly job's steps, end to end: load -> split -> train candidates -> choose -> refit ->
score every user -> stage -> gate -> publish. Jobs call these; they hold no CLI code."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch

from recsys import __version__, faults, gate, interrupts, logs, report, shard
from recsys.checkpoint import TrainedModel, load_checkpoint
from recsys.config import Config, validate
from recsys.data.interactions import Interactions
from recsys.data.split import temporal_split
from recsys.data.tables import parse_source
from recsys.dataset import DEMO_SOURCE, Dataset, load_dataset
from recsys.distributed import Group, stop_on_sigterm
from recsys.errors import ConfigError, DataError, QualityGateError, RecsysError, UsageError
from recsys.evaluate import ActivityMetric, Metric, activity_frame, evaluate_all, metrics_frame
from recsys.ledger import now_iso
from recsys.metrics import LOWER_IS_BETTER, RANKING_METRICS, RATING_METRICS
from recsys.models import REGISTRY, build_model, model_class
from recsys.models.base import Recommender
from recsys.models.fm import feature_args
from recsys.recommend import (
    recommendation_batches,
    similar_item_batches,
    similar_items_skipped,
)
from recsys.redact import redact
from recsys.score import SeenMatrix, resolve_device, scoring_dtype
from recsys.train import LOSSES, TrainSettings, fit
from recsys.warehouse import StagedDatabase, Warehouse, duckdb_type

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    run_id: str
    model: str
    num_users: int
    num_items: int
    num_rows: int
    num_similar_rows: int
    database: str
    selection: str
    timings: dict[str, float] = field(default_factory=dict)
    report: str = ""  # the run report's path, "" when none was written


class Timer:
    """Seconds per phase, in order."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.monotonic() - start, 3)


# ---------------------------------------------------------------------------------- load


# --------------------------------------------------------------------------------- train


def train_settings(config: Config, device: torch.device) -> TrainSettings:
    return TrainSettings(
        seed=config.training.seed,
        device=device,
        batch_size=config.training.batch_size,
        patience=config.training.patience,
        threads=config.training.threads,
        eval_k=config.model.selection_k,
        positive_threshold=config.data.positive_threshold,
        rating_range=(config.data.min_rating, config.data.max_rating),
    )


def candidate_names(config: Config) -> list[str]:
    names = config.model.candidates if config.model.name == "auto" else [config.model.name]
    if not names:
        raise ConfigError('model.candidates is empty; list at least one model, e.g. ["bpr"]')
    for name in names:
        model_class(name)  # unknown names fail before any work
    metric = config.model.selection_metric
    if metric not in RANKING_METRICS + RATING_METRICS:
        raise ConfigError(
            f"unknown selection metric '{metric}' (expected one of: {', '.join(RANKING_METRICS + RATING_METRICS)})"
        )
    return names


def model_params(config: Config, name: str) -> dict:
    params = dict(config.model.params.get(name, {}))
    if config.model.dim and "dim" in model_class(name).DEFAULTS and "dim" not in params:
        params["dim"] = config.model.dim
    return params


def check_settings(config: Config) -> None:
    """Everything about the settings that can be refused before any data is read: ranges,
    model names, the selection metric, and every [model.params.NAME] table (each key's type
    and range), whether or not that model is a candidate this time."""
    validate(config)
    names = candidate_names(config)
    for name in config.model.params:
        if name not in REGISTRY:
            raise ConfigError(
                f"[model.params.{name}]: unknown model '{name}' "
                f"(expected one of: {', '.join(sorted(REGISTRY))})"
            )
    for name in dict.fromkeys([*names, *config.model.params]):
        params = model_class(name).checked_hparams(model_params(config, name))
        loss = params.get("loss")
        if loss is not None and loss not in LOSSES:
            raise ConfigError(
                f"model '{name}': [model.params.{name}] loss = {loss!r} unknown "
                f"(expected one of: {', '.join(LOSSES)})"
            )


def new_model(name: str, dataset: Dataset, config: Config) -> Recommender:
    """A fresh, seeded model of `name`; feature models get the dataset's side features."""
    data, users, items = dataset.interactions, dataset.user_features, dataset.item_features
    model = build_model(name, data.num_users, data.num_items, seed=config.training.seed,
                        model_args=feature_args(users, items), **model_params(config, name))  # fmt: skip
    if model.uses_features:
        model.set_features(users, items)
    return model


@dataclass
class Comparison:
    """Every candidate's validation metrics and the winner."""

    metrics: list[Metric]
    scores: dict[str, tuple[float, int]]  # name -> (selection metric value, best epoch)
    best: str
    selection: str  # one line: who won, by how much
    by_activity: list[ActivityMetric] = field(default_factory=list)


def compare_candidates(dataset: Dataset, config: Config, device: torch.device) -> Comparison:
    """Train every candidate on a temporal holdout and rank them by the selection metric."""
    data = dataset.interactions
    names = candidate_names(config)
    settings = train_settings(config, device)
    train, valid = temporal_split(
        data, config.data.holdout_fraction, config.training.seed, config.data.min_user_interactions
    )
    if len(valid) == 0:
        raise DataError(
            f"{data.source}: no user has {config.data.min_user_interactions}+ interactions, so nothing can be held out for validation"
        )
    k, metric = config.model.selection_k, config.model.selection_metric
    all_metrics: list[Metric] = []
    all_activity: list[ActivityMetric] = []
    scores: dict[str, tuple[float, int]] = {}
    for name in names:
        model = new_model(name, dataset, config)
        if model.hparams.get("loss") in ("mse", "logloss") and not data.has_ratings:
            log.info("skipping %s: it needs ratings and %s has none", name, data.source)
            continue
        result = fit(model, train, valid, settings)
        evaluation = evaluate_all(model, train, valid, k, device, config.data.positive_threshold,
                                  (config.data.min_rating, config.data.max_rating))  # fmt: skip
        rows = evaluation.metrics
        all_activity += evaluation.by_activity
        rows.append(Metric(name, "train_seconds", None, round(result.seconds, 3)))
        all_metrics += rows
        value = next((r.value for r in rows if r.metric == metric), None)
        log.info("candidate %s: %s@%d = %s (best epoch %d, %.1fs)", name, metric, k,
                 "n/a" if value is None else f"{value:.4f}", result.best_epoch, result.seconds)  # fmt: skip
        if value is not None:
            scores[name] = (value, result.best_epoch)
    if not scores:
        raise ConfigError(
            f"no candidate model reports {metric}; choose another model.selection_metric"
        )
    sign = 1 if metric in LOWER_IS_BETTER else -1
    ranked = sorted(scores, key=lambda n: sign * scores[n][0])
    best = ranked[0]
    selection = f"{best} chosen by validation {metric}@{k} = {scores[best][0]:.4f}"
    if len(ranked) > 1:
        selection += f" (runner-up {ranked[1]}: {scores[ranked[1]][0]:.4f})"
    log.info(selection)
    return Comparison(all_metrics, scores, best, selection, all_activity)


def recent_history(data: Interactions, n: int) -> pl.DataFrame:
    """Each user's latest `n` (0 = all) interactions with raw IDs; recency 1 is the latest."""
    latest = (
        data.frame.sort("timestamp", descending=True)
        .with_columns(pl.int_range(1, pl.len() + 1).over("user_idx").alias("recency"))
        .filter((pl.col("recency") <= n) | (n <= 0))
        .sort("user_idx", "recency")
    )
    return pl.DataFrame(
        {
            "user_id": data.users.decode(latest["user_idx"].to_numpy()),
            "item_id": data.items.decode(latest["item_idx"].to_numpy()),
            "timestamp": latest["timestamp"],
            "recency": latest["recency"].cast(pl.Int32),
        }
    )


def train_and_choose(dataset: Dataset, config: Config, device: torch.device) -> TrainedModel:
    """Compare the candidates, then refit the winner on all interactions for the epochs
    early stopping chose (or keep it as trained on the split when model.refit is off)."""
    data = dataset.interactions
    comparison = compare_candidates(dataset, config, device)
    model = new_model(comparison.best, dataset, config)
    settings = train_settings(config, device)
    if config.model.refit:
        result = fit(
            model, data, None, settings, epochs=max(comparison.scores[comparison.best][1], 1)
        )
        seen = data
    else:
        train, valid = temporal_split(
            data,
            config.data.holdout_fraction,
            config.training.seed,
            config.data.min_user_interactions,
        )
        result = fit(model, train, valid, settings)
        seen = train
    candidates = {m.model for m in comparison.metrics}
    baseline = [] if "popularity" in candidates else popularity_baseline(dataset, config, device)
    indptr, indices = seen.csr()
    return TrainedModel(
        model=model,
        users=data.users,
        items=data.items,
        seen=SeenMatrix(indptr, indices),
        catalogue=dataset.catalogue,
        history=recent_history(data, config.output.history_n),
        metrics=comparison.metrics,
        by_activity=comparison.by_activity,
        selection=comparison.selection,
        source=data.source,
        num_interactions=len(data),
        seed=config.training.seed,
        fitted=not model.trainable or result.steps > 0,
        baseline=baseline,
    )


def popularity_baseline(dataset: Dataset, config: Config, device: torch.device) -> list[Metric]:
    """Popularity's validation metrics on the comparison's split when it was not a candidate:
    the floor the sanity gate holds the served model to (closed form, so it costs little)."""
    data = dataset.interactions
    train, valid = temporal_split(
        data, config.data.holdout_fraction, config.training.seed, config.data.min_user_interactions
    )
    model = new_model("popularity", dataset, config)
    fit(model, train, valid, train_settings(config, device))
    return evaluate_all(model, train, valid, config.model.selection_k, device, config.data.positive_threshold,
                        (config.data.min_rating, config.data.max_rating)).metrics  # fmt: skip


# ----------------------------------------------------------------------- score + publish


Stager = Callable[[TrainedModel, str, Warehouse, Timer], tuple[StagedDatabase, int, int]]
"""(trained, run_id, warehouse, timer) -> the staged database (closed) and its row counts of
recommendations and similar_items: where a run's rows come from (scoring, or Parquet parts)."""


def _stage(
    trained: TrainedModel,
    run_id: str,
    warehouse: Warehouse,
    expected_rows: int,
    fill: Callable[[StagedDatabase], tuple[int, int]],
) -> tuple[StagedDatabase, int, int]:
    """Check free space, create the staged database, `fill` its recommendations and
    similar_items, add the catalogue and histories; discarded again on any failure."""
    warehouse.check_free_space(expected_rows + trained.history.height)
    staged = warehouse.stage(
        run_id, duckdb_type(trained.users.dtype), duckdb_type(trained.items.dtype)
    )
    try:
        num_rows, num_similar = fill(staged)
        staged.insert_frame("items", trained.catalogue)
        if trained.history.height:
            staged.insert_frame("user_history", trained.history)
        return staged, num_rows, num_similar
    except BaseException:
        warehouse.discard(staged)
        raise


def stage_results(
    trained: TrainedModel,
    config: Config,
    run_id: str,
    warehouse: Warehouse,
    timer: Timer,
    device: torch.device,
) -> tuple[StagedDatabase, int, int]:
    """Build the new database in the staging folder by scoring every user here; returns it
    (closed) and row counts."""
    top = config.scoring.top_n

    def fill(staged: StagedDatabase) -> tuple[int, int]:
        with timer.phase("score"):
            batches = recommendation_batches(
                trained,
                top,
                device,
                scoring_dtype(config.scoring.dtype),
                config.scoring.memory_budget_bytes,
            )
            num_rows = staged.write_batches("recommendations", batches)
        with timer.phase("similar_items"):
            num_similar = _stage_similar_items(staged, trained, config, device)
        return num_rows, num_similar

    expected = expected_rows(len(trained.users), len(trained.items), config)
    return _stage(trained, run_id, warehouse, expected, fill)


def expected_rows(num_users: int, num_items: int, config: Config) -> int:
    """Most rows scoring can write: a user gets at most every item, an item every other one
    (top_n beyond the catalogue must not ask for disk that can never be used)."""
    top, similar = config.scoring.top_n, config.scoring.similar_items_n
    return num_users * min(top, num_items) + num_items * min(similar, max(num_items - 1, 0))


def check_space_before_training(dataset: Dataset, config: Config) -> None:
    """The free-space check, with the loaded data's sizes, before hours of training; the
    publish checks again before it writes."""
    data = dataset.interactions
    per_user = np.bincount(data.frame["user_idx"].to_numpy(), minlength=data.num_users)
    n = config.output.history_n
    history = int(np.minimum(per_user, n).sum()) if n > 0 else len(data)
    warehouse = Warehouse(config.output.database, free_space_factor=config.output.free_space_factor)
    warehouse.check_free_space(expected_rows(data.num_users, data.num_items, config) + history)


def _stage_similar_items(
    staged: StagedDatabase, trained: TrainedModel, config: Config, device: torch.device
) -> int:
    n = config.scoring.similar_items_n
    skipped = similar_items_skipped(trained, n)
    if skipped:
        log.info("similar_items: skipped (%s)", skipped)
        return 0
    batches = similar_item_batches(trained, n, device, config.scoring.memory_budget_bytes)
    return staged.write_batches("similar_items", batches)


def stage_parts(
    trained: TrainedModel, parts: shard.Parts, run_id: str, warehouse: Warehouse, timer: Timer
) -> tuple[StagedDatabase, int, int]:
    """Build the new database from checked Parquet parts (`shard.read_parts`), loaded in rank
    order: the parts are consecutive ID ranges, so the tables stay sorted by ID."""

    def fill(staged: StagedDatabase) -> tuple[int, int]:
        with timer.phase("load_parts"):
            return (
                staged.load_parquet("recommendations", parts.files("recommendations")),
                staged.load_parquet("similar_items", parts.files("similar_items")),
            )

    expected = parts.rows("recommendations") + parts.rows("similar_items")
    return _stage(trained, run_id, warehouse, expected, fill)


def run_row(
    trained: TrainedModel,
    run_id: str,
    started_at: str,
    status: str,
    num_rows: int,
    message: str,
    timings: dict,
) -> dict:
    return {
        "run_id": run_id,
        "started_at": started_at,
        "finished_at": now_iso(),
        "status": status,
        "model": trained.model.name,
        "params": json.dumps(trained.model.hparams, sort_keys=True),
        "source": trained.source,
        "num_users": len(trained.users),
        "num_items": len(trained.items),
        "num_interactions": trained.num_interactions,
        "num_rows": num_rows,
        "code_version": __version__,
        "seed": trained.seed,
        "message": message,
        "timings": json.dumps(timings),
    }


RUN_COLUMNS = [
    "run_id", "started_at", "finished_at", "status", "model", "params", "source", "num_users",
    "num_items", "num_interactions", "num_rows", "code_version", "seed", "message", "timings",
]  # fmt: skip


def publish_trained(
    trained: TrainedModel,
    config: Config,
    run_id: str,
    started_at: str,
    warehouse: Warehouse,
    timer: Timer,
    stage: Stager | None = None,
    held: interrupts.Held | None = None,
) -> RunSummary:
    """Stage (by default: score every user here), gate and publish one run of a trained model
    (the lock must be held). From the publish on, SIGINT and SIGTERM are `held`."""
    previous = warehouse.published()
    if stage is None:
        device = resolve_device(config.scoring.device)
        staged, num_rows, num_similar = stage_results(
            trained, config, run_id, warehouse, timer, device
        )
    else:
        staged, num_rows, num_similar = stage(trained, run_id, warehouse, timer)
    try:
        faults.point("staged")
        with timer.phase("publish"):
            metric, k = config.model.selection_metric, config.model.selection_k
            value = next(
                (
                    m.value
                    for m in trained.metrics
                    if m.model == trained.model.name and m.metric == metric
                ),
                None,
            )
            k = k if metric in RANKING_METRICS else None
            popularity = next(
                (m.value for m in [*trained.metrics, *trained.baseline]
                 if m.model == "popularity" and m.metric == metric and m.k == k),
                None,
            )  # fmt: skip
            current = gate.GateInput(metric, k, value, popularity, trained.fitted)
            if config.gate.enabled:
                problems = gate.check(staged, config.gate, current, previous)
                if problems:
                    raise QualityGateError(
                        "quality gate failed: " + "; ".join(problems) + "; nothing was published"
                    )
            history = _history(warehouse, trained, run_id, started_at, num_rows, timer.seconds)
            staged.insert_frame("runs", history)
            old_metrics = previous.metrics if previous is not None else None
            new_metrics = metrics_frame(trained.metrics, run_id, "validation")
            staged.insert_frame(
                "metrics",
                pl.concat([old_metrics, new_metrics]) if old_metrics is not None else new_metrics,
            )
            new_activity = activity_frame(trained.by_activity, run_id, "validation")
            old_activity = previous.by_activity if previous is not None else None
            if old_activity is not None and old_activity.height:
                new_activity = pl.concat([old_activity.cast(new_activity.schema), new_activity])
            staged.insert_frame("metrics_by_activity", new_activity)
            staged.close()
            faults.point("gated")
            if held is not None:
                held.hold()  # the replace and its ledger line are not to be cut apart
            warehouse.publish(staged, run_id)
    except BaseException:
        warehouse.discard(staged)
        raise
    faults.point("published")  # served, not yet in the ledger: the next run records it
    return RunSummary(run_id, trained.model.name, len(trained.users), len(trained.items), num_rows,
                      num_similar, str(warehouse.served), trained.selection, dict(timer.seconds))  # fmt: skip


def _history(
    warehouse: Warehouse,
    trained: TrainedModel,
    run_id: str,
    started_at: str,
    num_rows: int,
    timings: dict,
) -> pl.DataFrame:
    """The ledger as the `runs` table, this run marked published."""
    rows = [
        {c: _as_text(r.get(c)) for c in RUN_COLUMNS}
        for r in warehouse.ledger.runs()
        if r["run_id"] != run_id
    ]
    rows.append(
        run_row(trained, run_id, started_at, "published", num_rows, trained.selection, timings)
    )
    frame = pl.DataFrame(rows, schema={c: pl.String for c in RUN_COLUMNS}, strict=False)
    return frame.with_columns(
        pl.col("started_at", "finished_at").str.to_datetime(time_zone="UTC", strict=False),
        pl.col("num_users", "num_items", "num_interactions", "num_rows", "seed").cast(
            pl.Int64, strict=False
        ),
    )


def _as_text(value: object) -> object:
    """Ledger values as the all-text frame takes them: a failed run's timings are an object
    in the ledger, and one such value would fail every later publish."""
    return json.dumps(value) if isinstance(value, dict | list) else value


def check_demo_over_real(warehouse: Warehouse, source: str, allow_demo: bool) -> None:
    """The demo data never replaces a file built from a real source unless asked to
    (`nightly --demo`): a cron line whose variable is unset must not serve made-up lists."""
    if source != DEMO_SOURCE or allow_demo:
        return
    served = warehouse.served_row()
    if served and served.get("source") and served["source"] != DEMO_SOURCE:
        raise UsageError(
            f"{warehouse.served} serves run {served['run_id']}, built from {served['source']}; "
            "this run has no source and would replace it with the demo data. Give "
            "--interactions (or source.interactions), or use `recsys nightly --demo` to "
            "replace it on purpose"
        )


def run_job(
    config: Config,
    make_trained,
    run_id: str | None = None,
    stage: Stager | None = None,
    allow_demo: bool = False,
) -> RunSummary:
    """Check the target (exit 73 before any work), lock, record the run in the ledger, build
    the model with `make_trained(timer)`, stage its rows with `stage` (default: score them
    here), gate and publish. Any failure is recorded as 'failed' with its one-line reason,
    then re-raised; a signal that arrives once the publish began waits until the run is
    recorded (`recsys.interrupts`). Without `run_id` one is made under the lock, so published
    ids only go forwards. The demo data replaces a real source's run only with `allow_demo`."""
    warehouse = Warehouse(
        config.output.database, config.output.keep_archives, config.output.free_space_factor
    )
    log_dir = Path(config.output.log_dir) if config.output.log_dir else warehouse.paths.logs
    warehouse.check_target(input_paths(config), log_dir)
    faults.point("starting")
    with (
        warehouse.lock(run_id) as run_id,
        logs.run_log(log_dir / f"{run_id}.log", run_id),
        interrupts.Held("publishing: the run is recorded first") as held,
    ):
        started_at = now_iso()
        warehouse.ledger.append(run_id, status="running", started_at=started_at, seed=config.training.seed,
                                code_version=__version__)  # fmt: skip
        timer = Timer()
        trained = None
        try:
            faults.point("locked")
            trained = make_trained(timer)
            check_demo_over_real(warehouse, trained.source, allow_demo)
            faults.point("trained")
            summary = publish_trained(
                trained, config, run_id, started_at, warehouse, timer, stage, held
            )
        except BaseException as exc:
            reason = redact(str(exc).splitlines()[0]) if str(exc) else type(exc).__name__
            log.debug("run failed: %s", reason, exc_info=True)
            if warehouse.record_if_served(run_id, f"published, then {reason}"):
                raise  # interrupted after the replace: served, and recorded so
            warehouse.ledger.append(
                run_id,
                status="failed",
                finished_at=now_iso(),
                message=reason,
                timings=timer.seconds,
                **({"model": trained.model.name} if trained is not None else {}),
            )
            raise
        row = run_row(
            trained,
            run_id,
            started_at,
            "published",
            summary.num_rows,
            trained.selection,
            timer.seconds,
        )
        del row["run_id"]
        warehouse.ledger.append(
            run_id,
            **row,
            metrics={
                f"{m.model}.{m.metric}" + (f"@{m.k}" if m.k else ""): round(m.value, 6)
                for m in trained.metrics
            },
        )
        faults.point("recorded")
        if held.received:  # published and recorded: the exit is 0, whatever came meanwhile
            log.warning("run %s is published and recorded; %s arrived after its publish began, "
                        "so the run report is skipped and the exit is 0", run_id,
                        " and ".join(dict.fromkeys(held.received)))  # fmt: skip
        elif config.output.report:  # published already: a failed report is only a warning
            summary.report = report.publish_report(config.output, warehouse.served, run_id)
        return summary


def input_paths(config: Config) -> dict[str, Path]:
    """The files the configured sources read (a publish must never replace one of them)."""
    found = {}
    for key in ("interactions", "user_features", "item_features", "users_to_score"):
        spec = getattr(config.source, key)
        if spec:
            with contextlib.suppress(RecsysError, OSError):  # reading it reports what is wrong
                found[f"source.{key}"] = parse_source(spec).path
    return found


def nightly(config: Config, run_id: str | None = None, allow_demo: bool = False) -> RunSummary:
    check_settings(config)

    def make_trained(timer: Timer) -> TrainedModel:
        if not config.source.interactions:  # refused before the demo data is even made
            check_demo_over_real(Warehouse(config.output.database), DEMO_SOURCE, allow_demo)
        device = resolve_device(config.training.device)
        with timer.phase("load"):
            dataset = load_dataset(config)
        check_space_before_training(dataset, config)
        with timer.phase("train"):
            return train_and_choose(dataset, config, device)

    return run_job(config, make_trained, run_id, allow_demo=allow_demo)


# ------------------------------------------------------------------------- sharded runs


def checkpoint_loader(checkpoint: Path) -> Callable[[Timer], TrainedModel]:
    """`run_job`'s model maker for a run that scores a trained checkpoint."""

    def load(timer: Timer) -> TrainedModel:
        with timer.phase("load"):
            return load_checkpoint(checkpoint)

    return load


def score_shard(
    config: Config,
    checkpoint: Path,
    parts: Path,
    rank: int,
    world_size: int,
    device: torch.device | None = None,
) -> dict:
    """Score rank `rank` of `world_size` with the checkpoint into the parts folder; returns
    its manifest. A failure leaves `error-….json` there for the publishing step to report."""
    with shard.reporting_errors(parts, rank, world_size):
        trained = load_checkpoint(checkpoint)
        fingerprint = shard.checkpoint_fingerprint(checkpoint)
        device = device or resolve_device(config.scoring.device)
        return shard.write_shard(trained, fingerprint, parts, rank, world_size, config.scoring,
                                 device, str(checkpoint))  # fmt: skip


def score_parts(config: Config, checkpoint: Path, parts: Path, group: Group) -> RunSummary | None:
    """Every rank of `group` scores its shard into `parts`; rank 0, which holds the run (lock,
    ledger) from the start, waits for all of them at a barrier, then checks the parts and
    publishes them as one run. Returns its summary on rank 0, None on the others."""
    if group.rank != 0:
        score_shard(config, checkpoint, parts, group.rank, group.world_size, group.device)
        group.barrier()
        return None

    def stage(
        trained: TrainedModel, run_id: str, warehouse: Warehouse, timer: Timer
    ) -> tuple[StagedDatabase, int, int]:
        with timer.phase("score"), shard.reporting_errors(parts, 0, group.world_size):
            fingerprint = shard.checkpoint_fingerprint(checkpoint)
            shard.write_shard(trained, fingerprint, parts, 0, group.world_size, config.scoring,
                              group.device, str(checkpoint))  # fmt: skip
        with timer.phase("barrier"):
            try:
                group.barrier()
            except RecsysError as exc:
                raise RecsysError(f"{exc}; {shard.unfinished(parts, group.world_size)}") from None
        return _stage_checked_parts(trained, checkpoint, parts, run_id, warehouse, timer,
                                    fingerprint)  # fmt: skip

    if not group.backend:
        return run_job(config, checkpoint_loader(checkpoint), stage=stage)
    with stop_on_sigterm(lambda: shard.unfinished(parts, group.world_size)):
        return run_job(config, checkpoint_loader(checkpoint), stage=stage)


def publish_parts(config: Config, checkpoint: Path, parts: Path) -> RunSummary:
    """Check the parts that `score --parts` wrote (every rank present and whole, from this
    checkpoint) and publish them as one run; any problem publishes nothing."""

    def stage(
        trained: TrainedModel, run_id: str, warehouse: Warehouse, timer: Timer
    ) -> tuple[StagedDatabase, int, int]:
        return _stage_checked_parts(trained, checkpoint, parts, run_id, warehouse, timer)

    return run_job(config, checkpoint_loader(checkpoint), stage=stage)


def _stage_checked_parts(
    trained: TrainedModel,
    checkpoint: Path,
    parts: Path,
    run_id: str,
    warehouse: Warehouse,
    timer: Timer,
    fingerprint: str = "",
) -> tuple[StagedDatabase, int, int]:
    with timer.phase("check_parts"):
        fingerprint = fingerprint or shard.checkpoint_fingerprint(checkpoint)
        checked = shard.read_parts(parts, trained, fingerprint, str(checkpoint))
    log.info("publishing %d part(s) from %s: %d recommendations, %d similar-item rows",
             checked.world_size, parts, checked.rows("recommendations"),
             checked.rows("similar_items"))  # fmt: skip
    timer.seconds["score"] = checked.seconds()  # the slowest rank's, as the run's scoring time
    return stage_parts(trained, checked, run_id, warehouse, timer)
