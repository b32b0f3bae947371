"""Choosing the served model: tuning within a budget, the holdout without time order, models
that cannot run at a catalogue's size, and blends that must beat both members."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import polars as pl
import pytest
import torch

from recsys.config import ColumnsConfig, Config, DataConfig
from recsys.data.interactions import interactions_from_frame
from recsys.data.split import holdout_split
from recsys.dataset import load_dataset
from recsys.errors import ConfigError
from recsys.evaluate import HeldOut, blend_ndcg
from recsys.models import REGISTRY
from recsys.models.blend import Blend
from recsys.select import Validation, best_blend, compare_candidates
from recsys.tune import Tuned, tune

CPU = torch.device("cpu")


def _demo_config(**tuning) -> Config:
    config = Config()
    config.source.demo_users, config.source.demo_items = 200, 80
    config.source.demo_interactions_per_user = 15
    config.model.candidates = ["popularity", "ease", "itemknn"]
    config.model.tuning = dataclasses.replace(config.model.tuning, **tuning)
    return config


def test_tune_starts_from_the_defaults_and_finds_a_better_point() -> None:
    """A known objective (best at reg = 3): the first trial is the defaults, later ones move
    towards the optimum, and settings the user gave are never searched."""

    def run_trial(params):
        return None, -((np.log10(params["reg"]) - np.log10(3.0)) ** 2), 0, 0

    space = {"reg": ("log", 0.01, 1000.0)}
    result = tune("m", {}, {"reg": 300.0}, space, run_trial, 60.0, 25, 0, True, True)
    assert result.trials[0].params == {"reg": 300.0}
    assert len(result.trials) == 25
    assert abs(np.log10(result.params["reg"]) - np.log10(3.0)) < 0.3, result.params
    fixed = tune("m", {"reg": 7.0}, {"reg": 300.0}, space, run_trial, 60.0, 25, 0, True, True)
    assert [t.params for t in fixed.trials] == [{"reg": 7.0}]


def test_budget_zero_trains_each_candidate_once_with_its_defaults() -> None:
    config = _demo_config(budget_seconds=0.0, blend=False)
    comparison = compare_candidates(load_dataset(config), config, CPU)
    for name in ("ease", "itemknn"):
        assert len(comparison.tuned[name].trials) == 1
        assert comparison.tuned[name].model.hparams == REGISTRY[name].DEFAULTS
    trials = {m.model: m.value for m in comparison.metrics if m.metric == "tuning_trials"}
    assert trials == {"popularity": 1.0, "ease": 1.0, "itemknn": 1.0}


def test_tuning_records_the_chosen_settings_and_never_loses_to_the_defaults() -> None:
    config = _demo_config(budget_seconds=20.0, trials=8, blend=False)
    dataset = load_dataset(config)
    defaults = compare_candidates(dataset, _demo_config(budget_seconds=0.0, blend=False), CPU)
    tuned = compare_candidates(dataset, config, CPU)
    for name in ("ease", "itemknn"):
        assert 1 < len(tuned.tuned[name].trials) <= 8
        assert tuned.scores[name][0] >= defaults.scores[name][0] - 1e-9
    chosen = tuned.tuned["ease"].model.hparams
    rows = {m.metric: m.value for m in tuned.metrics if m.model == "ease"}
    assert rows["param.reg"] == pytest.approx(chosen["reg"])
    assert rows["param.half_life"] == pytest.approx(chosen["half_life"])


def test_a_catalogue_too_large_for_ease_is_skipped_by_auto_and_refused_by_name(caplog) -> None:
    config = _demo_config(budget_seconds=0.0, blend=False)
    config.model.params = {"ease": {"max_items": 50}}
    dataset = load_dataset(config)
    with caplog.at_level(logging.INFO, logger="recsys.select"):
        comparison = compare_candidates(dataset, config, CPU)
    assert "ease" not in comparison.tuned
    assert "candidate ease: skipped (ease needs a dense 80 x 80 matrix" in caplog.text
    config.model.name = "ease"
    with pytest.raises(
        ConfigError, match=r"model 'ease': ease needs a dense 80 x 80 matrix .* max_items = 50"
    ):
        compare_candidates(dataset, config, CPU)


def test_without_timestamps_the_holdout_is_random_unless_order_is_time() -> None:
    """Rows sorted by item (as exports often are): the latest rows would be the highest item
    IDs; the default holdout is a random sample instead, order_is_time takes the last rows."""
    rows = [(u, i) for u in range(1, 41) for i in range(1, 21)]
    frame = pl.DataFrame(rows, schema=["user_id", "item_id"], orient="row")
    held = {}
    for order_is_time in (False, True):
        data = interactions_from_frame(frame, "export.csv", ColumnsConfig(),
                                       DataConfig(order_is_time=order_is_time))  # fmt: skip
        assert data.has_time is order_is_time
        _, valid = holdout_split(data, 0.2, seed=0)
        held[order_is_time] = set(data.items.decode(valid.frame["item_idx"].to_numpy()).to_list())
    assert held[True] == {17, 18, 19, 20}
    assert len(held[False]) > 10  # every item shows up somewhere in a random holdout


class _Scores(torch.nn.Module):
    """A fixed score matrix as a model (blend members with a known quality per user)."""

    def __init__(self, scores: torch.Tensor, name: str) -> None:
        super().__init__()
        self.scores, self.name = scores, name
        self.num_users, self.num_items = scores.shape
        self.hparams, self.model_args, self.bytes_per_score = {}, {}, 12
        self.uses_features = self.has_item_matrix = False

    def score_block(self, user_idx: torch.Tensor) -> torch.Tensor:
        return self.scores[user_idx]

    def factors(self):
        return None

    def eval(self):
        return self


def _oracle(check: Validation, users: np.ndarray) -> torch.Tensor:
    """Scores that rank each of `users`' held-out items first, noise for everyone else."""
    torch.manual_seed(0)
    valid = check.valid.frame
    scores = torch.rand(check.train.num_users, check.train.num_items)
    keep = np.isin(valid["user_idx"].to_numpy(), users)
    scores[valid["user_idx"].to_numpy()[keep], valid["item_idx"].to_numpy()[keep]] += 10.0
    return scores


def test_a_blend_is_kept_only_when_it_beats_both_members() -> None:
    config = _demo_config()
    check = Validation(load_dataset(config), config, CPU)
    users = np.arange(check.train.num_users)
    even, odd = _oracle(check, users[::2]), _oracle(check, users[1::2])
    a = Tuned("a", _Scores(even, "a"), {}, check.value(_Scores(even, "a")), 0)
    b = Tuned("b", _Scores(odd, "b"), {}, check.value(_Scores(odd, "b")), 0)
    blend = best_blend([a, b], check)
    assert blend is not None and check.value(blend) > max(a.value, b.value) + 0.2
    assert best_blend([a, dataclasses.replace(a, name="a2")], check) is None


def test_candidates_tuned_side_by_side_give_the_sequential_results() -> None:
    """Worker threads change only when candidates run, not what they find (budget 0: every
    candidate's defaults, deterministic)."""
    runs = {}
    for workers in (1, 3):
        config = _demo_config(budget_seconds=0.0, blend=False)
        config.model.candidates = ["popularity", "ease", "itemknn", "ials"]
        config.training.candidate_workers = workers
        comparison = compare_candidates(load_dataset(config), config, CPU)
        runs[workers] = {
            (m.model, m.metric, m.k): m.value
            for m in comparison.metrics
            if "seconds" not in m.metric
        }
    assert runs[1] == runs[3]


def test_the_blend_weight_sweep_equals_scoring_each_blend() -> None:
    config = _demo_config(budget_seconds=0.0, blend=False)
    config.model.candidates = ["ease", "itemknn"]
    comparison = compare_candidates(load_dataset(config), config, CPU)
    check = Validation(load_dataset(config), config, CPU)
    members = [comparison.tuned["ease"].model, comparison.tuned["itemknn"].model]
    weights = [0.0, 0.3, 0.8]
    swept = blend_ndcg(members, weights, HeldOut(check.train, check.valid), 10, CPU)
    for weight, per_user in zip(weights, swept, strict=True):
        value = float(per_user.mean())
        blend = Blend.of(members, [weight, 1.0 - weight])
        assert value == pytest.approx(check.value(blend), abs=1e-9)
