"""Click-through quality on MovieLens-100K: FM and DeepFM with `loss = "logloss"` (label
rating >= 4) and user/item features, AUC and LogLoss of their probabilities on a held-out 20%.

Split: seeded random 80/20 of the ratings (`random_split(data, 0.2, seed)`, seed 42 unless
--seed). Early stopping uses an inner random 10% of the 80% only; the model is then refit on
the whole 80% for the epochs early stopping chose. The constant predictor is the training
positive rate: a model's LogLoss must be below it to carry any information.
Runs alone (`.venv/bin/python benchmarks/quality_ctr.py`) or as one section of quality.py.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from recsys.config import Config
from recsys.data.split import random_split
from recsys.dataset import Dataset, load_dataset
from recsys.evaluate import evaluate_clicks
from recsys.metrics import logloss
from recsys.select import new_model, train_settings
from recsys.train import fit

ML100K = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"
CPU = torch.device("cpu")
THRESHOLD = 4.0  # rating >= 4 is a click
BAR_AUC = 0.81

# (model, parameters beyond the model's logloss defaults, what the row shows)
CTR_MODELS = [
    ("fm", {}, "logloss defaults"),
    ("deepfm", {}, "logloss defaults"),
    ("deepfm", {"history": False}, "logloss defaults without the history field"),
]


def ctr_section(dataset: Dataset, config: Config) -> list[str]:
    """Markdown lines: one row per CTR_MODELS entry with AUC and LogLoss on the held-out 20%."""
    config = copy.deepcopy(config)
    config.data.positive_threshold = THRESHOLD
    seed = config.training.seed
    settings = train_settings(config, CPU)
    train, test = random_split(dataset.interactions, 0.2, seed)
    inner_train, inner_valid = random_split(train, 0.1, seed + 1)
    labels = test.frame["rating"].to_numpy() >= THRESHOLD
    positive_rate = float(np.mean(train.frame["rating"].to_numpy() >= THRESHOLD))
    constant = logloss(np.full(len(labels), positive_rate), labels)
    lines = [
        f"## Click-through: rating >= {THRESHOLD:g} as the label (random 80/20, seed {seed}; "
        "AUC and LogLoss of `recsys predict`'s probabilities on the 20%)",
        "",
        "| model | settings | AUC | LogLoss | constant LogLoss | train s |",
        "|---|---|---|---|---|---|",
    ]
    for name, params, label in CTR_MODELS:
        config.model.params[name] = {"loss": "logloss", **params}
        started = time.monotonic()
        probe = new_model(name, dataclasses.replace(dataset, interactions=inner_train), config)
        result = fit(probe, inner_train, inner_valid, settings)
        model = new_model(name, dataclasses.replace(dataset, interactions=train), config)
        fit(model, train, None, settings, epochs=max(result.best_epoch, 1))
        seconds = time.monotonic() - started
        clicks = evaluate_clicks(model, test, CPU, THRESHOLD)
        settings_text = f"{label}, {result.best_epoch} epochs: " + ", ".join(
            f"{k} = {v}" for k, v in sorted(model.hparams.items()) if k in SHOWN
        )
        lines.append(
            f"| {name} | {settings_text} | {clicks['auc']:.4f} | {clicks['logloss']:.4f} "
            f"| {constant:.4f} | {seconds:.0f} |"
        )
        print(lines[-1], flush=True)
    return lines


# The hyper-parameters worth showing in the table (the rest are each model's defaults).
SHOWN = ("dim", "lr", "reg", "history", "hidden", "dropout", "weight_decay")


def ml100k_config(data_dir: Path, seed: int) -> Config:
    config = Config()
    config.source.interactions = str(data_dir / "u.data")
    config.source.user_features = str(data_dir / "u.user")
    config.source.item_features = str(data_dir / "items.csv")
    config.training.seed = seed
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ML100K)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    if not (args.data / "u.data").exists():
        raise SystemExit(
            f"{args.data}: MovieLens-100K not found (expected u.data, u.user, items.csv)"
        )
    config = ml100k_config(args.data, args.seed)
    started = time.monotonic()
    lines = ctr_section(load_dataset(config), config)
    print("\n".join(lines))
    print(f"\nTotal {time.monotonic() - started:.0f} s; training uses 1 thread per model.")


if __name__ == "__main__":
    main()
