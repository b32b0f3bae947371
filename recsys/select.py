"""Choosing the served model: every candidate is tuned on the validation holdout, the best one
(or a blend of the best two, when that beats both) is refit on all interactions.

The holdout is each user's latest share of interactions when the data has time, else a
seeded random share of each user's interactions (recsys.data.split.holdout_split).
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import torch

from recsys import progress
from recsys.checkpoint import TrainedModel
from recsys.config import Config, validate
from recsys.data.interactions import Interactions
from recsys.data.split import holdout_split
from recsys.dataset import Dataset
from recsys.errors import ConfigError, DataError
from recsys.evaluate import (
    ActivityMetric,
    HeldOut,
    Metric,
    blend_ndcg,
    evaluate_all,
    evaluate_auc,
    evaluate_clicks,
    evaluate_ratings,
    rank_held_out,
)
from recsys.metrics import LOWER_IS_BETTER, RANKING_METRICS, RATING_METRICS
from recsys.models import SELECTABLE, build_model, selectable_class
from recsys.models.base import Recommender
from recsys.models.blend import Blend
from recsys.models.fm import feature_args
from recsys.score import SeenMatrix
from recsys.train import LOSSES, TrainSettings, fit
from recsys.tune import Tuned, tune

log = logging.getLogger(__name__)

# Users sampled per tuning trial's ranking evaluation, and for a candidate's recorded metrics.
TRIAL_MAX_USERS = 10_000
EVALUATION_MAX_USERS = 50_000
# Blend weights tried for the best candidate (the runner-up gets the rest), and how clearly a
# blend must beat the better of the two on validation (paired t over users) to be served.
BLEND_WEIGHTS = tuple(np.round(np.arange(0.1, 1.0, 0.1), 2))
BLEND_MIN_T = 2.0


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
        raise ConfigError('model.candidates is empty; list at least one model, e.g. ["ease"]')
    for name in names:
        selectable_class(name)  # unknown names fail before any work
    metric = config.model.selection_metric
    if metric not in RANKING_METRICS + RATING_METRICS:
        raise ConfigError(
            f"unknown selection metric '{metric}' (expected one of: {', '.join(RANKING_METRICS + RATING_METRICS)})"
        )
    return names


def check_settings(config: Config) -> None:
    """Everything about the settings that can be refused before any data is read: ranges,
    model names, the selection metric, and every [model.params.NAME] table (each key's type
    and range), whether or not that model is a candidate this time."""
    validate(config)
    names = candidate_names(config)
    for name in config.model.params:
        if name not in SELECTABLE:
            raise ConfigError(
                f"[model.params.{name}]: unknown model '{name}' "
                f"(expected one of: {', '.join(SELECTABLE)})"
            )
    for name in dict.fromkeys([*names, *config.model.params]):
        params = selectable_class(name).checked_hparams(model_params(config, name))
        loss = params.get("loss")
        if loss is not None and loss not in LOSSES:
            raise ConfigError(
                f"model '{name}': [model.params.{name}] loss = {loss!r} unknown "
                f"(expected one of: {', '.join(LOSSES)})"
            )


def model_params(config: Config, name: str) -> dict[str, Any]:
    """The hyper-parameters the configuration sets for `name` ([model.params.NAME], model.dim)."""
    params = dict(config.model.params.get(name, {}))
    if config.model.dim and "dim" in selectable_class(name).DEFAULTS and "dim" not in params:
        params["dim"] = config.model.dim
    return params


def new_model(
    name: str, dataset: Dataset, config: Config, params: dict[str, Any] | None = None
) -> Recommender:
    """A fresh, seeded model of `name` with `params` (default: the configured ones); feature
    models get the dataset's side features."""
    data, users, items = dataset.interactions, dataset.user_features, dataset.item_features
    cls = selectable_class(name)
    args = feature_args(users, items) if cls.uses_features else None
    params = model_params(config, name) if params is None else params
    model = build_model(name, data.num_users, data.num_items, seed=config.training.seed,
                        model_args=args, **params)  # fmt: skip
    if model.uses_features:
        model.set_features(users, items)
    return model


def skip_reason(name: str, dataset: Dataset, config: Config) -> str:
    """Why `auto` leaves candidate `name` out on this data ("" when it is trained). A model
    asked for by name is never skipped: its own errors say what is wrong."""
    data = dataset.interactions
    cls = selectable_class(name)
    loss = {**cls.DEFAULTS, **model_params(config, name)}.get("loss")
    if loss in ("mse", "logloss") and not data.has_ratings:
        return f"it needs ratings and {data.source} has none"
    unsuitable = cls.unsuitable(
        data.num_users, data.num_items, {**cls.DEFAULTS, **model_params(config, name)}
    )
    if unsuitable:
        return unsuitable
    if cls.uses_features and not _has_side_features(dataset):
        return "no side features are configured (without them it is a slower ials)"
    return ""


def _has_side_features(dataset: Dataset) -> bool:
    return len(dataset.user_features.fields) > 1 or len(dataset.item_features.fields) > 1


@dataclass
class Comparison:
    """Every candidate's validation metrics and the winner ("blend" for a blend)."""

    metrics: list[Metric]
    scores: dict[str, tuple[float, int]]  # name -> (selection metric value, best epoch)
    best: str
    selection: str  # one line: who won, by how much
    by_activity: list[ActivityMetric] = field(default_factory=list)
    tuned: dict[str, Tuned] = field(default_factory=dict)  # fitted on the training split
    blend: Blend | None = None  # the winning blend, members fitted on the training split


class Validation:
    """The holdout of one comparison and how a model is scored on it."""

    def __init__(self, dataset: Dataset, config: Config, device: torch.device) -> None:
        data = dataset.interactions
        self.train, self.valid = holdout_split(data, config.data.holdout_fraction,
                                               config.training.seed,
                                               config.data.min_user_interactions)  # fmt: skip
        if len(self.valid) == 0:
            raise DataError(
                f"{data.source}: no user has {config.data.min_user_interactions}+ interactions, so nothing can be held out for validation"
            )
        self.config, self.device = config, device
        self.metric, self.k = config.model.selection_metric, config.model.selection_k
        self.maximize = self.metric not in LOWER_IS_BETTER
        self.threshold = config.data.positive_threshold
        self.rating_range = (config.data.min_rating, config.data.max_rating)

    def value(self, model: Recommender, max_users: int = TRIAL_MAX_USERS) -> float:
        """The selection metric of a fitted model on the holdout (NaN when it has none)."""
        if self.metric in RANKING_METRICS:
            return rank_held_out(model, self.train, self.valid, self.k, self.device,
                                 self.threshold, max_users, self.config.training.seed
                                 ).metrics[self.metric]  # fmt: skip
        if model.predicts_probabilities and self.metric in ("auc", "logloss"):
            return evaluate_clicks(model, self.valid, self.device, self.threshold)[self.metric]
        if self.metric == "auc":  # any model's scores rank positives above the rest, or not
            return evaluate_auc(model, self.valid, self.device, self.threshold)
        if self.metric == "logloss" or not (self.train.has_ratings and model.predicts_ratings):
            return float("nan")
        return evaluate_ratings(model, self.valid, self.device, *self.rating_range)[self.metric]

    def better(self, a: float, b: float) -> bool:
        return a > b if self.maximize else a < b

    def evaluate(self, model: Recommender) -> tuple[list[Metric], list[ActivityMetric]]:
        evaluation = evaluate_all(model, self.train, self.valid, self.k, self.device,
                                  self.threshold, self.rating_range, EVALUATION_MAX_USERS,
                                  self.config.training.seed)  # fmt: skip
        rows = evaluation.metrics
        if self.metric == "auc" and not any(r.metric == "auc" for r in rows):
            rows.append(Metric(model.name, "auc", None, self.value(model)))
        return rows, evaluation.by_activity


def compare_candidates(dataset: Dataset, config: Config, device: torch.device) -> Comparison:
    """Tune every candidate on the holdout within the tuning budget and rank them by the
    selection metric; with `auto`, also try a blend of the best two. Candidates are tuned
    side by side, one per worker thread (see `candidate_workers`)."""
    names = candidate_names(config)
    check = Validation(dataset, config, device)
    settings = train_settings(config, device)
    tuning = config.model.tuning
    auto = config.model.name == "auto"
    runnable = [name for name in names if _runnable(name, dataset, config, auto)]
    workers = candidate_workers(config, device, len(runnable))
    searching = [n for n in runnable if _search_space(n, config)] or runnable
    # Each worker's share of the budget goes to the candidates that have something to search.
    share = tuning.budget_seconds * workers / len(searching) if tuning.budget_seconds > 0 else 0.0

    stop = threading.Event()  # set when one candidate fails: the others stop between trials

    def run(name: str) -> tuple[Tuned, list[Metric], list[ActivityMetric]]:
        torch.set_num_threads(max(1, settings.threads))  # this worker's own thread team
        number = runnable.index(name) + 1
        progress.set_step(f"candidate {name} ({number}/{len(runnable)})")
        log.info("candidate %s (%d/%d): training on %d interactions, validating on %d; tuning "
                 "up to %d trials in %.0fs", name, number, len(runnable), len(check.train),
                 len(check.valid), tuning.trials, share)  # fmt: skip
        cls, given = selectable_class(name), model_params(config, name)

        def run_trial(params: dict[str, Any]) -> tuple[Recommender, float, int, int]:
            model = new_model(name, dataset, config, params)
            result = fit(model, check.train, check.valid, settings)
            return model, check.value(model), result.best_epoch, result.steps

        result = tune(name, given, {**cls.DEFAULTS, **given}, cls.SEARCH_SPACE, run_trial,
                      share, tuning.trials, config.training.seed, check.maximize,
                      check.train.has_time, stop)  # fmt: skip
        rows, by_activity = check.evaluate(result.model)
        value = next((r.value for r in rows if r.metric == check.metric), None)
        chosen = next(t for t in result.trials if t.params == result.params)
        log.info("candidate %s: %s@%d = %s (best epoch %d, %.1fs) after %d trial(s) in %.1fs: %s",
                 name, check.metric, check.k, "n/a" if value is None else f"{value:.4f}",
                 result.best_epoch, chosen.seconds, len(result.trials), result.seconds,
                 _show(result.model.params()))  # fmt: skip
        return result, rows + _tuning_rows(result), by_activity

    results = _in_workers(run, runnable, workers, stop)
    metrics = [row for name in runnable for row in results[name][1]]
    activity = [row for name in runnable for row in results[name][2]]
    tuned = {name: results[name][0] for name in runnable}
    scores = {
        name: (value, tuned[name].best_epoch)
        for name in tuned
        for value in [next((m.value for m in metrics if m.model == name and m.metric == check.metric), None)]
        if value is not None and np.isfinite(value)
    }  # fmt: skip
    if not scores:
        raise ConfigError(
            f"no candidate model reports {check.metric}; choose another model.selection_metric"
        )
    ranked = sorted(scores, key=lambda n: scores[n][0], reverse=check.maximize)
    best, blend = ranked[0], None
    selection = f"{best} chosen by validation {check.metric}@{check.k} = {scores[best][0]:.4f}"
    if len(ranked) > 1:
        selection += f" (runner-up {ranked[1]}: {scores[ranked[1]][0]:.4f})"
    if auto and tuning.blend and len(ranked) == 1:
        log.info("blend: skipped, a blend needs two candidates and only %s was trained", best)
    if auto and tuning.blend and len(ranked) > 1:
        blend = best_blend([tuned[n] for n in ranked[:2]], check)
        if blend is not None:
            rows, by_activity = check.evaluate(blend)
            metrics += rows
            activity += by_activity
            value = next(m.value for m in rows if m.metric == check.metric)
            scores["blend"] = (value, 0)
            a, b = ranked[:2]
            wa, wb = blend.hparams["weights"]
            selection = (
                f"blend of {a} ({wa:g}) and {b} ({wb:g}) chosen by validation "
                f"{check.metric}@{check.k} = {value:.4f}: it beats {a} ({scores[a][0]:.4f}) "
                f"and {b} ({scores[b][0]:.4f})"
            )
            best = "blend"
    log.info(selection)
    return Comparison(metrics, scores, best, selection, activity, tuned, blend)


def _runnable(name: str, dataset: Dataset, config: Config, auto: bool) -> bool:
    """Whether candidate `name` is trained: `auto` skips (and logs) what cannot run on this
    data; a model asked for by name that cannot run at this size is an error."""
    reason = skip_reason(name, dataset, config)
    if reason and auto:
        log.info("candidate %s: skipped (%s)", name, reason)
        return False
    data, cls = dataset.interactions, selectable_class(name)
    unsuitable = cls.unsuitable(data.num_users, data.num_items,
                                {**cls.DEFAULTS, **model_params(config, name)})  # fmt: skip
    if unsuitable:
        raise ConfigError(f"model '{name}': {unsuitable}")
    return True


def _search_space(name: str, config: Config) -> dict[str, tuple]:
    """What tuning searches for `name`: its space minus the settings the user fixed."""
    given = model_params(config, name)
    return {k: v for k, v in selectable_class(name).SEARCH_SPACE.items() if k not in given}


def candidate_workers(config: Config, device: torch.device, num_candidates: int) -> int:
    """Candidates tuned at once: one per CPU core the job may use (training.candidate_workers,
    0 = every core), one on a GPU (they would share it), never more than there are."""
    if device.type != "cpu":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    wanted = config.training.candidate_workers or max(
        1, (cores or 1) // max(1, config.training.threads)
    )
    return max(1, min(wanted, num_candidates))


def _in_workers(run, names: list[str], workers: int, stop: threading.Event) -> dict:
    """`run(name)` for every name, `workers` at a time. The first error (or an interrupt)
    sets `stop`: running searches end after their current trial, queued candidates never
    start, and the error is raised."""
    if workers <= 1:
        return {name: run(name) for name in names}
    main_threads = torch.get_num_threads()
    pool = ThreadPoolExecutor(workers, thread_name_prefix="candidate")
    try:
        futures = {name: pool.submit(run, name) for name in names}
        return {name: future.result() for name, future in futures.items()}
    except BaseException:
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(main_threads)


def best_blend(candidates: list[Tuned], check: Validation) -> Blend | None:
    """The blend of two tuned candidates with the best weight on the holdout, when it beats
    both of them there: for NDCG, by a paired t-statistic of at least BLEND_MIN_T over the
    holdout's users against the better one (a blend that only fits validation noise loses on
    new data); else None. Every weight is swept in one pass."""
    members = [c.model for c in candidates]
    names = " and ".join(c.name for c in candidates)
    weights = [1.0, *(float(w) for w in BLEND_WEIGHTS), 0.0]  # the ends: each member alone
    if check.metric == "ndcg":
        truth = HeldOut(check.train, check.valid, check.threshold, TRIAL_MAX_USERS,
                        check.config.training.seed)  # fmt: skip
        per_user = blend_ndcg(members, weights, truth, check.k, check.device)
        values = [float(u.mean()) for u in per_user]
    else:
        values = [c.value for c in candidates[:1]]
        values += [check.value(Blend.of(members, [w, 1.0 - w])) for w in weights[1:-1]]
        values += [candidates[1].value]
    alone = 0 if check.better(values[0], values[-1]) else len(weights) - 1
    best = max(
        range(1, len(weights) - 1), key=lambda i: values[i] if check.maximize else -values[i]
    )
    weight, value = weights[best], values[best]
    significance = ""
    if check.metric == "ndcg":
        diff = per_user[best] - per_user[alone]
        spread = diff.std(ddof=1) / np.sqrt(diff.size) if diff.size > 1 else 0.0
        t = diff.mean() / spread if spread > 0 else 0.0
        significance = f", paired t = {t:.2f} over {diff.size} users"
    if not check.better(value, values[alone]) or (significance and t < BLEND_MIN_T):
        log.info("blend of %s: not kept (best weight %.1f: validation %s %.4f against %.4f alone%s)",
                 names, weight, check.metric, value, values[alone], significance)  # fmt: skip
        return None
    log.info("blend of %s at %.1f: validation %s %.4f against %.4f alone%s", names, weight,
             check.metric, value, values[alone], significance)  # fmt: skip
    return Blend.of(members, [weight, round(1.0 - weight, 2)])


def _tuning_rows(result: Tuned) -> list[Metric]:
    """A candidate's tuning record for the metrics table: trials, seconds (all trials and the
    chosen one's fit) and each numeric hyper-parameter that was tuned or set (param.NAME)."""
    chosen = next((t for t in result.trials if t.params == result.params), None)
    rows = [
        Metric(result.name, "tuning_trials", None, float(len(result.trials))),
        Metric(result.name, "tuning_seconds", None, round(result.seconds, 3)),
        Metric(result.name, "train_seconds", None, round(chosen.seconds if chosen else 0.0, 3)),
    ]
    searched = set(selectable_class(result.name).SEARCH_SPACE) | set(result.params)
    for key, value in sorted(result.model.params().items()):
        if key in searched and isinstance(value, int | float) and not isinstance(value, bool):
            rows.append(Metric(result.name, f"param.{key}", None, float(value)))
    return rows


def _show(params: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def train_and_choose(dataset: Dataset, config: Config, device: torch.device) -> TrainedModel:
    """Compare the candidates, then refit the winner (each member of a winning blend) on all
    interactions with its tuned hyper-parameters, for the epochs early stopping chose; with
    model.refit off, serve it as fitted on the training split."""
    data = dataset.interactions
    comparison = compare_candidates(dataset, config, device)
    if config.model.refit:
        settings = train_settings(config, device)
        names = (
            [m.name for m in comparison.blend.members] if comparison.blend else [comparison.best]
        )
        models, steps = [], []
        for name in names:
            result = comparison.tuned[name]
            progress.set_step(f"refit {name}")
            model = new_model(name, dataset, config, result.params)
            epochs = max(result.best_epoch, 1)
            log.info("refit %s on all %d interactions %s", name, len(data),
                     f"for {epochs} epoch(s)" if model.trainable else "(closed form)")  # fmt: skip
            fit_result = fit(model, data, None, settings, epochs=epochs)
            log.info("refit %s: done in %.1fs", name, fit_result.seconds)
            models.append(model)
            steps.append(fit_result.steps if model.trainable else 1)  # closed form: fitted
        model = (
            Blend.of(models, comparison.blend.hparams["weights"]) if comparison.blend else models[0]
        )
        fitted = all(step > 0 for step in steps)
        seen = data
    else:
        model = comparison.blend or comparison.tuned[comparison.best].model
        served = model.members if comparison.blend else [model]
        fitted = all(not m.trainable or comparison.tuned[m.name].steps > 0 for m in served)
        seen = Validation(dataset, config, device).train
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
        fitted=fitted,
        baseline=[]
        if "popularity" in comparison.tuned
        else popularity_baseline(dataset, config, device),
    )


def popularity_baseline(dataset: Dataset, config: Config, device: torch.device) -> list[Metric]:
    """Popularity's validation metrics on the comparison's holdout when it was not a
    candidate: the floor the sanity gate holds the served model to (closed form: cheap)."""
    check = Validation(dataset, config, device)
    model = new_model("popularity", dataset, config, {})
    fit(model, check.train, check.valid, train_settings(config, device))
    return check.evaluate(model)[0]


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
