"""Quality report on MovieLens-100K (`make quality`): the default nightly's lists against
implicit's ALS tuned on the same split, rating error, click-through AUC and cold users.
Writes QUALITY.md.

Every comparison holds out a test split the job never sees; the job gets only the rest and
runs exactly as `recsys nightly` does on it (train_and_choose: its own validation holdout,
tuning, choice, refit). Peers are tuned on the same inner validation split the job uses.
Quality claims are paired over the test users (t-statistic of per-user NDCG@10 differences).

- temporal: each user's latest 20% is the test split (u.data, with timestamps).
- bare CSV: u.data reduced to its user and item columns (no rating, no timestamp), each
  user's random 20% is the test split; the job then validates on random samples too.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch

from recsys.config import Config
from recsys.data.interactions import Interactions
from recsys.data.split import holdout_split, random_split, temporal_split, user_random_split
from recsys.dataset import Dataset, load_dataset
from recsys.evaluate import Ranking, evaluate_ranking, evaluate_ratings, rank_held_out
from recsys.models.base import Factors, Recommender
from recsys.select import new_model, train_and_choose, train_settings
from recsys.train import fit

ML100K = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"
CPU = torch.device("cpu")
K = 10
RANKING_HEADER = [
    "| model | NDCG@10 | Recall@10 | MAP@10 | HitRate@10 | Coverage | train s |",
    "|---|---|---|---|---|---|---|",
]


class FixedFactors(Recommender):
    """Another library's user and item factors, scored by our engine and metrics."""

    name = "external"

    def __init__(self, user: np.ndarray, item: np.ndarray) -> None:
        super().__init__(user.shape[0], item.shape[0])
        self.user = torch.from_numpy(np.ascontiguousarray(user))
        self.item = torch.from_numpy(np.ascontiguousarray(item))

    def factors(self) -> Factors:
        return Factors(self.user, self.item)


def with_interactions(dataset: Dataset, interactions: Interactions) -> Dataset:
    return dataclasses.replace(dataset, interactions=interactions)


def ranking_row(label: str, r: Ranking, seconds: float) -> str:
    m = r.metrics
    return (
        f"| {label} | {m['ndcg']:.4f} | {m['recall']:.4f} | {m['map']:.4f} | "
        f"{m['hitrate']:.4f} | {m['coverage']:.3f} | {seconds:.0f} |"
    )


def paired_t(ours: Ranking, theirs: Ranking) -> tuple[float, float, int]:
    """Mean per-user NDCG difference, its t-statistic, and the number of users."""
    assert np.array_equal(ours.users, theirs.users), "paired tests need the same users"
    diff = ours.ndcg - theirs.ndcg
    se = diff.std(ddof=1) / np.sqrt(diff.size)
    return float(diff.mean()), float(diff.mean() / se) if se > 0 else float("inf"), diff.size


def nightly(dataset: Dataset, train: Interactions, test: Interactions, config: Config):
    """The default job on `train` only, evaluated on `test`: (ranking, seconds, selection)."""
    started = time.monotonic()
    trained = train_and_choose(with_interactions(dataset, train), config, CPU)
    seconds = time.monotonic() - started
    return rank_held_out(trained.model, train, test, K, CPU), seconds, trained.selection


# ------------------------------------------------------------------------------ peers


def implicit_als(
    train: Interactions, test: Interactions, inner: Callable, bm25: bool
) -> tuple[str, Ranking, float]:
    """implicit's ALS tuned on the job's inner validation split (factors 64-256, regularization
    0.01-10, alpha 1/10, and BM25's K1 when bm25), refit on `train`, evaluated on `test`."""
    from implicit.als import AlternatingLeastSquares

    inner_train, inner_valid = inner(train)
    grid = [(d, reg, a, k1) for d in (64, 128, 256) for reg in (0.01, 0.1, 1.0, 10.0)
            for a in (1.0, 10.0) for k1 in ((1.2, 100.0) if bm25 else (None,))]  # fmt: skip
    best = None
    for d, reg, a, k1 in grid:
        model = AlternatingLeastSquares(
            factors=d, regularization=reg, alpha=a, iterations=15, random_state=0
        )
        value = evaluate_ranking(_fit_implicit(model, inner_train, k1), inner_train, inner_valid, K, CPU)["ndcg"]  # fmt: skip
        if best is None or value > best[0]:
            best = (value, (d, reg, a, k1))
    d, reg, a, k1 = best[1]
    started = time.monotonic()
    model = _fit_implicit(
        AlternatingLeastSquares(factors=d, regularization=reg, alpha=a, iterations=15, random_state=0),
        train, k1,
    )  # fmt: skip
    seconds = time.monotonic() - started
    label = f"implicit ALS{' on BM25(K1=' + f'{k1:g}, B=0.8)' if bm25 else ''} (factors {d}, reg {reg:g}, alpha {a:g}; picked on validation)"
    return label, rank_held_out(model, train, test, K, CPU), seconds


def _fit_implicit(model, interactions: Interactions, bm25_k1: float | None) -> FixedFactors:
    from implicit.nearest_neighbours import bm25_weight

    f = interactions.frame
    matrix = sp.csr_matrix(
        (np.ones(f.height, np.float32), (f["user_idx"].to_numpy(), f["item_idx"].to_numpy())),
        shape=(interactions.num_users, interactions.num_items),
    )
    if bm25_k1 is not None:
        matrix = bm25_weight(matrix, K1=bm25_k1, B=0.8).tocsr()
    model.fit(matrix, show_progress=False)
    return FixedFactors(np.asarray(model.user_factors), np.asarray(model.item_factors))


# --------------------------------------------------------------------------- sections


def topn_section(dataset: Dataset, config: Config) -> list[str]:
    data = dataset.interactions
    train, test = temporal_split(data, 0.2, config.training.seed)
    inner = lambda t: holdout_split(t, 0.2, config.training.seed)  # noqa: E731
    ours, seconds, selection = nightly(dataset, train, test, config)
    lines = [
        "## Top-N: temporal per-user 80/20 (each user's latest 20% held out), seen items excluded, K = 10",
        "",
        f"The default `recsys nightly` on the 80% (u.data only): {selection}.",
        "",
        *RANKING_HEADER,
        ranking_row("**default nightly**", ours, seconds),
    ]
    print(lines[-1], flush=True)
    lines += peer_rows(train, test, inner, ours, bm25_too=False)
    lines += ["", *candidate_table(dataset, train, test, config)]
    return lines


def peer_rows(train, test, inner, ours: Ranking, bm25_too: bool) -> list[str]:
    if importlib.util.find_spec("implicit") is None:
        return ["", "implicit is not installed (pip install '.[bench]'): peers skipped"]
    rows, tests = [], []
    for bm25 in (False, True) if bm25_too else (False,):
        label, theirs, seconds = implicit_als(train, test, inner, bm25)
        rows.append(ranking_row(label, theirs, seconds))
        diff, t, n = paired_t(ours, theirs)
        tests.append(
            f"- default nightly vs {label.split(' (')[0]}: mean NDCG@10 difference {diff:+.4f} over {n} users, paired t = {t:.2f}"
        )
        print(rows[-1], tests[-1], flush=True)
    return rows + ["", *tests]


def candidate_table(dataset: Dataset, train, test, config: Config) -> list[str]:
    """Each candidate alone: defaults or tuned (the nightly's budget per candidate), with and
    without recency weighting (half_life 0)."""
    lines = [
        "### Each candidate alone (trained on the 80%, tuned on the job's inner holdout)",
        "",
        "| model | tuning | recency | NDCG@10 | Recall@10 | chosen settings | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    budget = config.model.tuning.budget_seconds / max(len(config.model.candidates) - 1, 1)
    for name in config.model.candidates:
        if name == "fm" and not dataset.user_features.fields[1:]:
            continue
        has_recency = "half_life" in new_model(name, dataset, config).hparams
        for tuned in (False, True):
            for recency in (True, False) if has_recency else (None,):
                variant = dataclasses.replace(
                    config,
                    model=dataclasses.replace(
                        config.model, name=name,
                        params={name: {"half_life": 0.0}} if recency is False else {},
                        tuning=dataclasses.replace(config.model.tuning,
                                                   budget_seconds=budget if tuned else 0.0),
                    ),
                )  # fmt: skip
                started = time.monotonic()
                trained = train_and_choose(with_interactions(dataset, train), variant, CPU)
                seconds = time.monotonic() - started
                r = rank_held_out(trained.model, train, test, K, CPU).metrics
                settings = ", ".join(
                    f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in trained.model.params().items()
                    if k not in ("max_items", "recency", "init_std", "cg_steps", "iterations")
                )
                lines.append(
                    f"| {name} | {'tuned' if tuned else 'defaults'} | "
                    f"{'-' if recency is None else ('on' if recency else 'off')} | "
                    f"{r['ndcg']:.4f} | {r['recall']:.4f} | {settings} | {seconds:.0f} |"
                )
                print(lines[-1], flush=True)
    return lines


def bare_section(data_dir: Path, config: Config) -> list[str]:
    """u.data as a bare two-column CSV (user, item): no rating, no timestamp."""
    with tempfile.TemporaryDirectory() as tmp:
        bare = Path(tmp) / "bare.csv"
        raw = pl.read_csv(data_dir / "u.data", separator="\t", has_header=False,
                          new_columns=["user_id", "item_id", "rating", "timestamp"])  # fmt: skip
        raw.select("user_id", "item_id").write_csv(bare)
        bare_config = dataclasses.replace(config, source=dataclasses.replace(config.source, interactions=str(bare), user_features="", item_features=""))  # fmt: skip
        dataset = load_dataset(bare_config)
    data = dataset.interactions
    train, test = user_random_split(data, 0.2, config.training.seed)
    inner = lambda t: holdout_split(t, 0.2, config.training.seed)  # noqa: E731
    ours, seconds, selection = nightly(dataset, train, test, bare_config)
    lines = [
        "## Top-N: bare two-column CSV (u.data's user and item columns only), per-user random 80/20, K = 10",
        "",
        f"No timestamp, so the job validates on a random sample of each user's interactions and recency weighting is off. {selection}.",
        "",
        *RANKING_HEADER,
        ranking_row("**default nightly**", ours, seconds),
    ]
    print(lines[-1], flush=True)
    return lines + peer_rows(train, test, inner, ours, bm25_too=True)


def rating_section(dataset: Dataset, config: Config) -> list[str]:
    """Rating prediction: random 80/20 of ratings, early stopping on a random 10% of the 80%."""
    data = dataset.interactions
    train, test = random_split(data, 0.2, config.training.seed)
    inner_train, inner_valid = random_split(train, 0.1, config.training.seed + 1)
    settings = train_settings(config, CPU)
    lines = [
        "## Rating prediction (random 80/20, RMSE / MAE on the 20%)",
        "",
        "| model | RMSE | MAE | train s |",
        "|---|---|---|---|",
    ]
    for name in ("mf_bias", "mf"):
        started = time.monotonic()
        probe = new_model(name, with_interactions(dataset, inner_train), config, {})
        result = fit(probe, inner_train, inner_valid, settings)
        model = new_model(name, dataset, config, {})
        fit(model, train, None, settings, epochs=max(result.best_epoch, 1))
        r = evaluate_ratings(model, test, CPU, 1.0, 5.0)
        lines.append(
            f"| {name} | {r['rmse']:.4f} | {r['mae']:.4f} | {time.monotonic() - started:.0f} |"
        )
        print(lines[-1], flush=True)
    return lines


def cold_start_section(dataset: Dataset, config: Config) -> list[str]:
    """10% of users lose their interactions but keep their features; their lists come from
    the feature path (FM) or the popularity fallback. All their interactions are relevant."""
    data = dataset.interactions
    rng = np.random.default_rng(config.training.seed)
    cold = np.zeros(data.num_users, dtype=bool)
    cold[rng.choice(data.num_users, data.num_users // 10, replace=False)] = True
    is_cold = pl.Series(cold[data.frame["user_idx"].to_numpy()])
    train = data.with_frame(data.frame.filter(~is_cold))
    held_out = data.with_frame(data.frame.filter(is_cold))
    features = dataclasses.replace(
        dataset.user_features, weight=dataset.user_features.weight.copy()
    )
    features.weight[cold, 0, :] = 0.0  # cold users have no trained ID vector: features only
    cold_dataset = dataclasses.replace(dataset, interactions=train, user_features=features)
    lines = ["## Cold users (10% of users: interactions hidden, features kept; NDCG@10 on all their interactions)", "",
             "| path | NDCG@10 | Recall@10 |", "|---|---|---|"]  # fmt: skip
    settings = train_settings(config, CPU)
    for name in ("popularity", "fm"):
        inner_train, inner_valid = temporal_split(train, 0.2, config.training.seed)
        result = fit(new_model(name, cold_dataset, config, {}), inner_train, inner_valid, settings)
        model = new_model(name, cold_dataset, config, {})
        fit(model, train, None, settings, epochs=max(result.best_epoch, 1))
        r = evaluate_ranking(model, train, held_out, K, CPU)
        label = "popularity fallback" if name == "popularity" else f"{name} from features"
        lines.append(f"| {label} | {r['ndcg']:.4f} | {r['recall']:.4f} |")
        print(lines[-1], flush=True)
    return lines


def ctr_lines(dataset: Dataset, config: Config) -> list[str]:
    """Click-through models (benchmarks/quality_ctr.py), when that section is present."""
    path = Path(__file__).with_name("quality_ctr.py")
    if not path.exists():
        return []
    spec = importlib.util.spec_from_file_location("quality_ctr", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ctr_section(dataset, config) + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ML100K)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("QUALITY.md"))
    parser.add_argument("--sections", default="topn,bare,rating,ctr,cold")
    args = parser.parse_args()
    if not (args.data / "u.data").exists():
        raise SystemExit(
            f"{args.data}: MovieLens-100K not found (expected u.data, u.user, items.csv)"
        )
    sections = args.sections.split(",")
    config = Config()
    config.source.interactions = str(args.data / "u.data")
    config.training.seed = args.seed
    started = time.monotonic()
    lines = [f"# Quality on MovieLens-100K (seed {args.seed})", ""]
    if "topn" in sections:
        lines += topn_section(load_dataset(config), config) + [""]
    if "bare" in sections:
        lines += bare_section(args.data, config) + [""]
    featured = dataclasses.replace(config, source=dataclasses.replace(
        config.source, user_features=str(args.data / "u.user"), item_features=str(args.data / "items.csv")))  # fmt: skip
    dataset = load_dataset(featured) if {"rating", "ctr", "cold"} & set(sections) else None
    if "rating" in sections:
        lines += rating_section(dataset, featured) + [""]
    if "ctr" in sections:
        lines += ctr_lines(dataset, featured)
    if "cold" in sections:
        lines += cold_start_section(dataset, featured) + [""]
    lines.append(
        f"Total {time.monotonic() - started:.0f} s with {torch.get_num_threads()} torch threads."
    )
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
