"""Quality report on MovieLens-100K (`make quality`): rating error, top-N ranking against
implicit's ALS and BPR on the same split, and AUC with side features. Writes QUALITY.md.

Splits (all seeded, seed 42 unless --seed):
- rating: random 80/20 of ratings; early stopping on a random 10% of the training part.
- top-N: temporal per user, each user's latest 20% held out, seen items excluded, K = 10;
  our models are chosen and early-stopped on an inner temporal split of the training part,
  then refit on the whole training part. implicit's models get the benefit of the doubt:
  their hyper-parameters are picked on the test split itself.
- AUC: rating >= 4 is positive, the same random 80/20 split as rating.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import time
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch

from recsys.config import Config
from recsys.data.split import random_split, temporal_split
from recsys.dataset import Dataset, load_dataset
from recsys.evaluate import evaluate_auc, evaluate_ranking, evaluate_ratings
from recsys.models.base import Factors, Recommender
from recsys.pipeline import new_model, train_settings
from recsys.train import fit

ML100K = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"
CPU = torch.device("cpu")


class FixedFactors(Recommender):
    """Another library's user and item factors, scored by our engine and metrics."""

    name = "external"

    def __init__(self, user: np.ndarray, item: np.ndarray) -> None:
        super().__init__(user.shape[0], item.shape[0])
        self.user, self.item = (
            torch.from_numpy(np.ascontiguousarray(user)),
            torch.from_numpy(np.ascontiguousarray(item)),
        )

    def factors(self) -> Factors:
        return Factors(self.user, self.item)


def config_for(data_dir: Path, seed: int) -> Config:
    config = Config()
    config.source.interactions = str(data_dir / "u.data")
    config.source.user_features = str(data_dir / "u.user")
    config.source.item_features = str(data_dir / "items.csv")
    config.training.seed = seed
    return config


def with_interactions(dataset: Dataset, interactions) -> Dataset:
    return dataclasses.replace(dataset, interactions=interactions)


def fit_early_stopped(name: str, dataset: Dataset, train, inner_split, config: Config, **params):
    """Early-stop on an inner split of `train`, then refit on all of `train`. Returns the
    model, the seconds taken and the early-stopped model's inner-validation NDCG@10 (the
    number `nightly` chooses by)."""
    config.model.params[name] = params
    settings = train_settings(config, CPU)
    inner_train, inner_valid = inner_split(train)
    started = time.monotonic()
    probe = new_model(name, with_interactions(dataset, inner_train), config)
    result = fit(probe, inner_train, inner_valid, settings)
    valid_ndcg = (
        evaluate_ranking(probe, inner_train, inner_valid, 10, CPU)["ndcg"]
        if params.get("loss") != "logloss"
        else float("nan")
    )
    model = new_model(name, dataset, config)
    fit(model, train, None, settings, epochs=max(result.best_epoch, 1))
    return model, time.monotonic() - started, valid_ndcg


def rating_section(dataset: Dataset, config: Config) -> list[str]:
    data = dataset.interactions
    train, test = random_split(data, 0.2, config.training.seed)
    lines = [
        "## Rating prediction (random 80/20, RMSE / MAE on the 20%)",
        "",
        "| model | RMSE | MAE | train s |",
        "|---|---|---|---|",
    ]
    for name in ("mf_bias", "mf"):
        model, seconds, _ = fit_early_stopped(
            name, dataset, train, lambda t: random_split(t, 0.1, config.training.seed + 1), config
        )
        r = evaluate_ratings(model, test, CPU, 1.0, 5.0)
        lines.append(f"| {name} | {r['rmse']:.4f} | {r['mae']:.4f} | {seconds:.0f} |")
        print(lines[-1], flush=True)
    return lines


def topn_section(dataset: Dataset, config: Config, models: list[str]) -> list[str]:
    data = dataset.interactions
    train, test = temporal_split(data, 0.2, config.training.seed)
    inner = lambda t: temporal_split(t, 0.2, config.training.seed)  # noqa: E731
    rows, valid = [], {}
    for name in models:
        model, seconds, valid[name] = fit_early_stopped(name, dataset, train, inner, config)
        rows.append((name, evaluate_ranking(model, train, test, 10, CPU), seconds))
        print(name, f"valid {valid[name]:.4f}", rows[-1][1], f"{seconds:.0f}s", flush=True)
    # nightly's rule (model.name = auto): the best inner-validation NDCG@10 is served
    chosen = max(valid, key=valid.get)
    chosen_result = next(r for r in rows if r[0] == chosen)
    rows.append(
        (
            f"auto: {chosen} (validation NDCG@10 {valid[chosen]:.4f})",
            chosen_result[1],
            sum(r[2] for r in rows),
        )
    )
    rows += implicit_rows(train, test, inner)
    lines = ["## Top-N ranking (temporal per user, latest 20% held out, seen excluded, K = 10)", "",
             "| model | NDCG@10 | Recall@10 | Precision@10 | MAP@10 | HitRate@10 | Coverage | train s |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, r, seconds in rows:
        lines.append(
            f"| {name} | {r['ndcg']:.4f} | {r['recall']:.4f} | {r['precision']:.4f} | {r['map']:.4f} | {r['hitrate']:.4f} | {r['coverage']:.3f} | {seconds:.0f} |"
        )
    return lines


def implicit_rows(train, test, inner_split) -> list:
    """implicit's ALS and BPR on the same split, two ways: hyper-parameters picked on the
    same inner validation split our models use (fair), and picked on the test split itself
    (the peer's best case)."""
    if importlib.util.find_spec("implicit") is None:
        print("implicit is not installed (pip install '.[bench]'): ALS/BPR comparison skipped")
        return []
    from implicit.als import AlternatingLeastSquares
    from implicit.bpr import BayesianPersonalizedRanking

    inner_train, inner_valid = inner_split(train)
    rows = []
    for label, grid, make in (
        ("implicit ALS", [(d, reg, a) for d in (64, 128, 256) for reg in (0.01, 0.1, 1.0, 10.0) for a in (1.0, 10.0)],
         lambda d, reg, a: AlternatingLeastSquares(factors=d, regularization=reg, alpha=a, iterations=15, random_state=0)),
        ("implicit BPR", [(d, lr, reg) for d in (64, 128) for lr in (0.01, 0.05) for reg in (0.001, 0.01)],
         lambda d, lr, reg: BayesianPersonalizedRanking(factors=d, learning_rate=lr, regularization=reg, iterations=100, random_state=0)),
    ):  # fmt: skip
        on_valid, on_test = None, None
        for params in grid:
            valid_ndcg = evaluate_ranking(
                _fit_implicit(make(*params), inner_train), inner_train, inner_valid, 10, CPU
            )["ndcg"]
            started = time.monotonic()
            model = _fit_implicit(make(*params), train)
            seconds = time.monotonic() - started
            result = evaluate_ranking(model, train, test, 10, CPU)
            if on_valid is None or valid_ndcg > on_valid[0]:
                on_valid = (valid_ndcg, f"{label} {params} (picked on validation)", result, seconds)
            if on_test is None or result["ndcg"] > on_test[2]["ndcg"]:
                on_test = (0, f"{label} {params} (best of {len(grid)} on test)", result, seconds)
        rows += [on_valid[1:], on_test[1:]]
        print(rows[-2:], flush=True)
    return rows


def _fit_implicit(model, interactions) -> FixedFactors:
    f = interactions.frame
    matrix = sp.csr_matrix(
        (np.ones(f.height, np.float32), (f["user_idx"].to_numpy(), f["item_idx"].to_numpy())),
        shape=(interactions.num_users, interactions.num_items),
    )
    model.fit(matrix, show_progress=False)
    return FixedFactors(np.asarray(model.user_factors), np.asarray(model.item_factors))


# Rating-prediction settings for the AUC table (the ranking defaults of fm/deepfm use other
# losses). Every model learns the 1-5 ratings (MSE) and is scored by how well its predicted
# rating separates ratings >= 4 from the rest; logloss on the binary labels alone does worse.
AUC_MODELS = {
    "mf": {"loss": "mse"},
    "mf_bias": {},
    "fm": {"loss": "mse", "reg": 0.1, "dim": 64},
    "deepfm": {"loss": "mse", "reg": 0.1, "dim": 32, "dropout": 0.5, "hidden": [32, 16]},
}


def auc_section(dataset: Dataset, config: Config) -> list[str]:
    data = dataset.interactions
    train, test = random_split(data, 0.2, config.training.seed)
    lines = [
        "## Rating >= 4 as the positive label (random 80/20, AUC on the 20%, with user and item features for fm and deepfm)",
        "",
        "| model | settings | AUC | train s |",
        "|---|---|---|---|",
    ]
    for name, params in AUC_MODELS.items():
        model, seconds, _ = fit_early_stopped(
            name,
            dataset,
            train,
            lambda t: random_split(t, 0.1, config.training.seed + 1),
            config,
            **params,
        )
        lines.append(
            f"| {name} | {params or 'defaults'} | {evaluate_auc(model, test, CPU, 4.0):.4f} | {seconds:.0f} |"
        )
        print(lines[-1], flush=True)
    return lines


def cold_start_section(dataset: Dataset, config: Config) -> list[str]:
    """10% of users lose their interactions but keep their features; their lists come from
    the feature path (FM, DeepFM) or the popularity fallback. All their interactions are
    the relevant set."""
    data = dataset.interactions
    rng = np.random.default_rng(config.training.seed)
    cold = np.zeros(data.num_users, dtype=bool)
    cold[rng.choice(data.num_users, data.num_users // 10, replace=False)] = True
    is_cold = pl.Series(cold[data.frame["user_idx"].to_numpy()])
    train, held_out = (
        data.with_frame(data.frame.filter(~is_cold)),
        data.with_frame(data.frame.filter(is_cold)),
    )
    features = dataclasses.replace(
        dataset.user_features, weight=dataset.user_features.weight.copy()
    )
    features.weight[cold, 0, :] = 0.0  # cold users have no trained ID vector: features only
    cold_dataset = dataclasses.replace(dataset, interactions=train, user_features=features)
    config.model.params = {}  # each model's defaults, as nightly serves them
    lines = ["## Cold users (10% of users: interactions hidden, features kept; NDCG@10 on all their interactions)", "",
             "| path | NDCG@10 | Recall@10 |", "|---|---|---|"]  # fmt: skip
    settings = train_settings(config, CPU)
    for name in ("popularity", "fm", "deepfm"):
        model = new_model(name, cold_dataset, config)
        inner_train, inner_valid = temporal_split(train, 0.2, config.training.seed)
        result = fit(new_model(name, cold_dataset, config), inner_train, inner_valid, settings)
        fit(model, train, None, settings, epochs=max(result.best_epoch, 1))
        r = evaluate_ranking(model, train, held_out, 10, CPU)
        label = "popularity fallback" if name == "popularity" else f"{name} from features"
        lines.append(f"| {label} | {r['ndcg']:.4f} | {r['recall']:.4f} |")
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ML100K)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("QUALITY.md"))
    parser.add_argument("--models", default="popularity,mf_bias,bpr,ials,fm,deepfm")
    args = parser.parse_args()
    if not (args.data / "u.data").exists():
        raise SystemExit(
            f"{args.data}: MovieLens-100K not found (expected u.data, u.user, items.csv)"
        )
    config = config_for(args.data, args.seed)
    dataset = load_dataset(config)
    started = time.monotonic()
    lines = [f"# Quality on MovieLens-100K (seed {args.seed})", ""]
    lines += rating_section(dataset, config) + [""]
    lines += topn_section(dataset, config, args.models.split(",")) + [""]
    lines += auc_section(dataset, config) + [""]
    lines += cold_start_section(dataset, config) + [""]
    lines.append(
        f"Total {time.monotonic() - started:.0f} s on {torch.get_num_threads()} threads; training uses 1 thread per model."
    )
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
