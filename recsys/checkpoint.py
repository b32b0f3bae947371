"""Self-describing checkpoints: the model's name and hyper-parameters, its state dict, the ID
vocabularies, the seen-item matrix and the validation metrics, so that scoring and predicting
rebuild everything without the training data or guessing (loaded with weights_only=True)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch

from recsys.data.idmap import IdMap
from recsys.errors import DataError, MissingInputError
from recsys.evaluate import ActivityMetric, Metric
from recsys.models import build_model
from recsys.models.base import Recommender
from recsys.score import SeenMatrix
from recsys.version import code_version

FORMAT = "recsys-checkpoint/1"


@dataclass
class TrainedModel:
    """Everything scoring needs, as training leaves it."""

    model: Recommender
    users: IdMap
    items: IdMap
    seen: SeenMatrix  # (num_users rows) items each user interacted with in training
    catalogue: pl.DataFrame  # per item index: title, genres, num_interactions
    # Each user's latest interactions (user_id, item_id, timestamp, recency 1 = latest),
    # published for "because you liked" queries.
    history: pl.DataFrame = field(default_factory=pl.DataFrame)
    metrics: list[Metric] = field(default_factory=list)
    by_activity: list[ActivityMetric] = field(default_factory=list)
    selection: str = ""  # why this model was chosen
    source: str = ""
    num_interactions: int = 0
    seed: int = 0
    # Whether training changed the weights (closed form, or at least one optimizer step);
    # None for checkpoints written before this was recorded.
    fitted: bool | None = None
    # Popularity's validation metrics on the same split when it was not a candidate: the
    # sanity gate's floor (not published as a candidate's metrics).
    baseline: list[Metric] = field(default_factory=list)


def save_checkpoint(trained: TrainedModel, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "code_version": code_version(),
        "model": trained.model.name,
        "hparams": trained.model.hparams,
        "model_args": trained.model.model_args,
        "num_users": trained.model.num_users,
        "num_items": trained.model.num_items,
        "state_dict": {k: v.detach().cpu() for k, v in trained.model.state_dict().items()},
        "users": trained.users.to_list(),
        "items": trained.items.to_list(),
        # copies: the arrays may be read-only views of Arrow memory
        "seen_indptr": torch.from_numpy(np.array(trained.seen.indptr)),
        "seen_indices": torch.from_numpy(np.array(trained.seen.indices)),
        "catalogue": trained.catalogue.to_dict(as_series=False),
        "history": trained.history.to_dict(as_series=False),
        "metrics": [[m.model, m.metric, m.k, m.value] for m in trained.metrics],
        "by_activity": [list(dataclasses.astuple(a)) for a in trained.by_activity],
        "selection": trained.selection,
        "source": trained.source,
        "num_interactions": trained.num_interactions,
        "seed": trained.seed,
        "fitted": trained.fitted,
        "baseline": [[m.model, m.metric, m.k, m.value] for m in trained.baseline],
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path) -> TrainedModel:
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path}: checkpoint not found")
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"{path}: checkpoint file is empty (expected one `recsys train` wrote)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise DataError(f"{path}: not a readable recsys checkpoint ({_load_error(exc)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DataError(f"{path}: not a recsys checkpoint (expected format {FORMAT})")
    missing = [key for key in REQUIRED if key not in payload]
    if missing:
        raise DataError(f"{path}: incomplete recsys checkpoint (no {', '.join(missing)})")
    model = build_model(payload["model"], payload["num_users"], payload["num_items"],
                        model_args=payload["model_args"], **payload["hparams"])  # fmt: skip
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise DataError(
            f"{path}: its weights do not fit model '{payload['model']}' ({_load_error(exc)})"
        ) from None
    return TrainedModel(
        model=model.eval(),
        users=IdMap.from_list(payload["users"]),
        items=IdMap.from_list(payload["items"]),
        seen=SeenMatrix(
            np.asarray(payload["seen_indptr"].numpy()), np.asarray(payload["seen_indices"].numpy())
        ),
        catalogue=pl.DataFrame(payload["catalogue"]),
        history=pl.DataFrame(payload.get("history", {})),
        metrics=[Metric(*row) for row in payload["metrics"]],
        by_activity=[ActivityMetric(*row) for row in payload.get("by_activity", [])],
        selection=payload["selection"],
        source=payload["source"],
        num_interactions=payload["num_interactions"],
        seed=payload["seed"],
        fitted=payload.get("fitted"),
        baseline=[Metric(*row) for row in payload.get("baseline", [])],
    )


# What every checkpoint of this format holds (later additions are read with defaults).
REQUIRED = ("model", "hparams", "model_args", "num_users", "num_items", "state_dict", "users",
            "items", "seen_indptr", "seen_indices", "catalogue", "metrics", "selection",
            "source", "num_interactions", "seed")  # fmt: skip


def _load_error(exc: BaseException) -> str:
    """torch's reason in one line, without its advice to load with weights_only=False: that
    would run whatever code the file carries, and checkpoints never need it."""
    text = str(exc).strip()
    if text.startswith("Weights only load failed"):
        advice = ("Please file an issue", "Check the documentation")
        details = [line.strip() for line in text.splitlines()[1:]
                   if line.strip() and not line.startswith(advice)]  # fmt: skip
        return "a safe load refuses it" + (f": {details[0]}" if details else "")
    return text.splitlines()[0] if text else type(exc).__name__
