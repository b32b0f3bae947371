"""Hyper-parameter search on the validation split with Optuna's TPE sampler (Bergstra et al.,
NeurIPS 2011; Akiba et al., KDD 2019), within a time budget.

Each model declares its `SEARCH_SPACE`; settings the user gave in [model.params.NAME] are kept
as given, everything else in the space is searched. The first trial is always the defaults
(user settings applied), so tuning can only match or improve the validation metric.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna

from recsys.errors import RecsysError, TrainingError
from recsys.models.base import Recommender

log = logging.getLogger(__name__)
STARTUP_TRIALS = 6
optuna.logging.set_verbosity(optuna.logging.WARNING)  # trials are logged here, at DEBUG


@dataclass
class Trial:
    params: dict[str, Any]
    value: float
    best_epoch: int
    seconds: float


@dataclass
class Tuned:
    """A candidate's best trial: the model as fitted on the training split, and its record."""

    name: str
    model: Recommender
    params: dict[str, Any]  # the hyper-parameters it was built with (user settings included)
    value: float  # the selection metric on validation
    best_epoch: int
    steps: int = 0  # optimizer steps of the best trial's fit (closed-form fits: 0)
    trials: list[Trial] = field(default_factory=list)
    seconds: float = 0.0


# One trial: build and fit a model with these hyper-parameters, return it with its validation
# value, best epoch and optimizer steps. A TrainingError (e.g. a diverging loss) fails only that trial; any
# other error (a bad setting) stops the run.
TrialRunner = Callable[[dict[str, Any]], tuple[Recommender, float, int, int]]


def tune(
    name: str,
    given: dict[str, Any],
    defaults: dict[str, Any],
    space: dict[str, tuple],
    run_trial: TrialRunner,
    budget_seconds: float,
    max_trials: int,
    seed: int,
    maximize: bool,
    ordered: bool,
    stop: threading.Event | None = None,
) -> Tuned:
    """Search `space` (minus the keys in `given`) for the best validation value within
    `budget_seconds` and `max_trials`; budget 0 runs the defaults only. Once `stop` is set,
    no further trial starts."""
    space = {k: v for k, v in space.items() if k not in given and (ordered or v[0] != "half_life")}
    started = time.monotonic()
    best: Tuned | None = None
    trials: list[Trial] = []

    stopped: list[BaseException] = []  # a setting error ends the search, and is raised after

    def objective(trial: optuna.Trial) -> float:
        nonlocal best
        if stop is not None and stop.is_set() and best is not None:
            trial.study.stop()
            raise optuna.TrialPruned()
        params = {**given, **suggest(trial, space)}
        began = time.monotonic()
        try:
            model, value, epoch, steps = run_trial(params)
        except TrainingError as exc:  # e.g. a diverging loss: only this point is bad
            log.info("%s: trial %s failed (%s)", name, _show(params), exc)
            raise optuna.TrialPruned() from None
        except BaseException as exc:  # Optuna would log it with a traceback: stop instead
            stopped.append(exc)
            trial.study.stop()
            raise optuna.TrialPruned() from None
        trials.append(Trial(params, value, epoch, time.monotonic() - began))
        log.debug("%s trial %d: %s -> %.4f", name, len(trials), _show(params), value)
        if best is None or (value > best.value if maximize else value < best.value):
            best = Tuned(name, model, params, value, epoch, steps)
        return value if math.isfinite(value) else (-1e30 if maximize else 1e30)

    # Few random start-up trials: budgets allow tens of trials, not hundreds; multivariate TPE
    # models the interplay of settings (regularisation and half-life move together).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=min(STARTUP_TRIALS, max_trials), multivariate=True
        )
    study = optuna.create_study(direction="maximize" if maximize else "minimize", sampler=sampler)
    study.enqueue_trial(default_point(space, defaults))
    runs = max_trials if space and budget_seconds > 0 else 1
    study.optimize(objective, n_trials=runs, timeout=max(budget_seconds, 1e-3), catch=())
    if stopped:
        raise stopped[0]
    if best is None:
        raise RecsysError(f"model '{name}': every tuning trial failed (see the run log)")
    best.trials, best.seconds = trials, time.monotonic() - started
    return best


def suggest(trial: optuna.Trial, space: dict[str, tuple]) -> dict[str, Any]:
    """One point of `space` from an Optuna trial (see Recommender.SEARCH_SPACE)."""
    params: dict[str, Any] = {}
    for key, (kind, *args) in space.items():
        if kind == "log":
            params[key] = trial.suggest_float(key, args[0], args[1], log=True)
        elif kind == "float":
            params[key] = trial.suggest_float(key, args[0], args[1])
        elif kind == "int_log":
            params[key] = trial.suggest_int(key, args[0], args[1], log=True)
        elif kind == "choice":
            params[key] = trial.suggest_categorical(key, args[0])
        elif kind == "half_life":  # off, or a half-life on a log scale
            on = trial.suggest_categorical(f"{key}_on", [True, False])
            params[key] = trial.suggest_float(key, args[0], args[1], log=True) if on else 0.0
        else:
            raise ValueError(f"unknown search kind {kind!r} for {key}")
    return params


def default_point(space: dict[str, tuple], defaults: dict[str, Any]) -> dict[str, Any]:
    """The defaults as Optuna parameters (for the first, enqueued trial)."""
    point: dict[str, Any] = {}
    for key, (kind, *_) in space.items():
        value = defaults[key]
        if kind == "half_life":
            point[f"{key}_on"] = value > 0
            if value > 0:
                point[key] = float(value)
        else:
            point[key] = value
    return point


def _show(params: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items())
    )
