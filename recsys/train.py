"""The training loop. It knows models only through `forward`, `regularization` and a loss;
it owns seeds, device, optimiser, negative sampling, early stopping and NaN checks."""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recsys.data.interactions import Interactions
from recsys.errors import ConfigError, TrainingError
from recsys.evaluate import evaluate_auc, evaluate_ranking, evaluate_ratings
from recsys.models.base import Feedback, Recommender
from recsys.progress import Progress

log = logging.getLogger(__name__)

# mse: squared error on ratings. bpr, bce, softmax: ranking from positives and sampled
# negatives (pairwise, pointwise, and listwise over the positive and its negatives).
# logloss: binary cross-entropy on each rated row's own label, rating >= positive_threshold.
# ials: the implicit-ALS objective (Hu, Koren & Volinsky 2008) for any model with a linear
#   form: (1 + alpha)(s - 1)^2 on positives and unobserved_weight * s^2 on *every* other
#   (user, item) pair, the latter exactly through Gramians: sum_ui s_ui^2 = <U'U, I'I>.
LOSSES = ("mse", "bpr", "bce", "softmax", "logloss", "ials")
POINTWISE = ("mse", "logloss")
NO_NEGATIVES = (*POINTWISE, "ials")


@dataclass
class TrainSettings:
    seed: int = 42
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 4096
    patience: int = 3
    # Ranking validation: metric at K, on at most this many users per epoch (0 = all).
    eval_k: int = 10
    eval_max_users: int = 2000
    positive_threshold: float = 0.0
    rating_range: tuple[float, float] = (1.0, 5.0)
    # CPU threads while training: per-batch embedding ops are too small to gain from more,
    # and OpenMP threads slow down badly when another process shares the cores.
    threads: int = 1


@dataclass
class FitResult:
    model: Recommender
    best_epoch: int
    history: list[dict[str, float]]
    seconds: float
    # Optimizer steps taken; 0 means the weights are as initialised (the sanity gate refuses
    # such a model). Closed-form models take none and count as fitted.
    steps: int = 0


class NegativeSampler:
    """Uniform negatives over the items a user has no positive interaction with.

    Items are drawn uniformly; draws that hit one of the user's known positives are redrawn,
    up to `rounds` times. Known positives are therefore sampled *less* than chance (only a
    user who has seen almost the whole catalogue can keep a few collisions after the last
    round), never more.
    """

    def __init__(
        self, user_idx: np.ndarray, item_idx: np.ndarray, num_items: int, rounds: int = 5
    ) -> None:
        self.num_items = num_items
        self.rounds = rounds
        self.positive_keys = torch.from_numpy(
            np.unique(user_idx.astype(np.int64) * num_items + item_idx)
        )

    def sample(self, user_idx: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        negatives = torch.randint(0, self.num_items, user_idx.shape, generator=generator)
        for _ in range(self.rounds):
            hit = self._is_positive(user_idx, negatives)
            if not hit.any():
                break
            negatives[hit] = torch.randint(
                0, self.num_items, (int(hit.sum()),), generator=generator
            )
        return negatives

    def _is_positive(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        keys = user_idx * self.num_items + item_idx
        pos = torch.searchsorted(self.positive_keys, keys).clamp(max=len(self.positive_keys) - 1)
        return self.positive_keys[pos] == keys


def fit(
    model: Recommender,
    train: Interactions,
    valid: Interactions | None,
    settings: TrainSettings,
    epochs: int | None = None,
) -> FitResult:
    """Train `model` on `train`; with `valid`, stop early and keep the best epoch's weights.

    Without `valid`, train exactly `epochs` epochs (the refit on all data).
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, settings.threads))
    try:
        return _fit(model, train, valid, settings, epochs)
    finally:
        torch.set_num_threads(previous_threads)


def _fit(
    model: Recommender,
    train: Interactions,
    valid: Interactions | None,
    settings: TrainSettings,
    epochs: int | None,
) -> FitResult:
    started = time.monotonic()
    hp = model.hparams
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    frame = train.frame
    users = torch.from_numpy(frame["user_idx"].to_numpy().astype(np.int64))
    items = torch.from_numpy(frame["item_idx"].to_numpy().astype(np.int64))
    ratings = torch.from_numpy(frame["rating"].to_numpy().astype(np.float32))
    model.prepare(users, items, ratings)
    if not model.trainable:
        model.fit_direct(feedback(train.positives(settings.positive_threshold)))
        return FitResult(model, 0, [], time.monotonic() - started)

    loss_name = hp.get("loss", "mse")
    if loss_name not in LOSSES:
        raise ConfigError(
            f"model '{model.name}': unknown loss '{loss_name}' (expected one of: {', '.join(LOSSES)})"
        )
    if loss_name in POINTWISE and not train.has_ratings:
        raise ConfigError(
            f"model '{model.name}' is trained on ratings ({loss_name}) but {train.source} has no rating column; use a ranking model such as bpr"
        )
    if loss_name == "logloss":
        if settings.positive_threshold <= 0:
            raise ConfigError(
                f"model '{model.name}': loss logloss needs data.positive_threshold > 0 (e.g. 4)"
            )
        ratings = (ratings >= settings.positive_threshold).float()  # labels
    elif loss_name != "mse" and settings.positive_threshold > 0:  # ranking learns from positives
        keep = ratings >= settings.positive_threshold
        users, items, ratings = users[keep], items[keep], ratings[keep]
    sampler = (
        None
        if loss_name in POINTWISE
        else NegativeSampler(users.numpy(), items.numpy(), train.num_items)
    )

    device = settings.device
    model.to(device).train()
    optimizer = make_optimizer(model, settings.batch_size)
    # lr_decay < 1 shrinks the step each epoch, so the last epochs only refine.
    schedule = torch.optim.lr_scheduler.ExponentialLR(
        optimizer, gamma=float(hp.get("lr_decay", 1.0))
    )
    max_epochs = int(epochs if epochs is not None else hp["epochs"])
    reg = float(hp.get("reg", 0.0))
    history: list[dict[str, float]] = []
    best_value, best_epoch, best_state, stale = math.inf, 0, None, 0
    n = users.numel()
    steps = 0
    for epoch in range(1, max_epochs + 1):
        model.train()
        order = torch.randperm(n, generator=generator)
        total, progress = (
            0.0,
            Progress(n, f"{model.name} epoch {epoch}", unit="rows", interval_s=30),
        )
        for start in range(0, n, settings.batch_size):
            batch = order[start : start + settings.batch_size]
            u, i, r = users[batch], items[batch], ratings[batch]
            loss = _batch_loss(
                model,
                loss_name,
                u,
                i,
                r,
                sampler,
                generator,
                int(hp.get("negatives", 1)),
                reg,
                device,
                n,
            )
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"model '{model.name}': loss became {loss.item()} at epoch {epoch}; "
                    f"lower its learning rate (lr = {hp['lr']}) or raise reg"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            total += loss.item() * batch.numel()
            progress.update(batch.numel())
        progress.close()
        record = {"epoch": epoch, "loss": total / max(n, 1)}
        if valid is not None and len(valid):
            value = _validation_loss(model, loss_name, train, valid, settings)
            record["valid"] = value
            if value < best_value - 1e-6:
                best_value, best_epoch, stale = value, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
        history.append(record)
        schedule.step()
        log.debug(
            "%s epoch %d: %s",
            model.name,
            epoch,
            ", ".join(f"{k}={v:.4f}" for k, v in record.items() if k != "epoch"),
        )
        if valid is not None and stale >= settings.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        best_epoch = len(history)
    return FitResult(model.eval(), best_epoch, history, time.monotonic() - started, steps)


def feedback(data: Interactions) -> Feedback:
    """The interactions as closed-form fits take them (see models.base.Feedback)."""
    frame = data.frame
    position, age = data.recency()

    def column(name: str, dtype: type) -> torch.Tensor:
        return torch.from_numpy(frame[name].to_numpy().astype(dtype))

    return Feedback(
        user_idx=column("user_idx", np.int64),
        item_idx=column("item_idx", np.int64),
        rating=column("rating", np.float32),
        weight=column("weight", np.float32),
        position=torch.from_numpy(position),
        age=torch.from_numpy(age),
        num_users=data.num_users,
        num_items=data.num_items,
        ordered=data.has_time,
    )


def make_optimizer(model: Recommender, batch_size: int) -> torch.optim.Optimizer:
    """Adam by default (with `weight_decay` on dense weight matrices). optimizer = "sgd" is Funk's SVD update: plain SGD where `lr` (and
    `bias_lr` for parameters named *bias*) is the step per rating, as in the classic
    per-rating loop; the loss is a batch mean, hence the batch_size / 2 scaling."""
    hp = model.hparams
    if hp.get("optimizer", "adam") == "adam":
        decay = float(hp.get("weight_decay", 0.0))
        if not decay:
            return torch.optim.Adam(model.parameters(), lr=float(hp["lr"]))
        # weight_decay: L2 on dense layers' weight matrices (DeepFM's MLP), the usual recipe;
        # embedding tables get `reg` on the rows each batch uses, and biases no penalty.
        tables = {
            id(p)
            for m in model.modules()
            if isinstance(m, nn.Embedding | nn.EmbeddingBag)
            for p in m.parameters()
        }
        dense = [p for p in model.parameters() if p.ndim >= 2 and id(p) not in tables]
        dense_ids = {id(p) for p in dense}
        rest = [p for p in model.parameters() if id(p) not in dense_ids]
        return torch.optim.Adam(
            [{"params": rest}, {"params": dense, "weight_decay": decay}], lr=float(hp["lr"])
        )
    if hp["optimizer"] != "sgd":
        raise ConfigError(
            f"model '{model.name}': unknown optimizer '{hp['optimizer']}' (expected adam or sgd)"
        )
    scale = batch_size / 2
    biases = [p for name, p in model.named_parameters() if "bias" in name]
    others = [p for name, p in model.named_parameters() if "bias" not in name]
    bias_lr = float(hp.get("bias_lr", hp["lr"]))
    return torch.optim.SGD(
        [
            {"params": others, "lr": float(hp["lr"]) * scale},
            {"params": biases, "lr": bias_lr * scale},
        ]
    )


def _batch_loss(
    model: Recommender,
    loss_name: str,
    u: torch.Tensor,
    i: torch.Tensor,
    r: torch.Tensor,
    sampler: NegativeSampler | None,
    generator: torch.Generator,
    negatives: int,
    reg: float,
    device: torch.device,
    num_positives: int,
) -> torch.Tensor:
    if loss_name == "ials":
        return _ials_loss(model, u.to(device), i.to(device), num_positives, reg)
    if loss_name in POINTWISE:
        u, i, r = u.to(device), i.to(device), r.to(device)
        out, penalty = model.forward_with_penalty(u, i)
        data_loss = (
            F.mse_loss(out, r) if loss_name == "mse" else F.binary_cross_entropy_with_logits(out, r)
        )
        return data_loss + reg * penalty / u.numel()
    assert sampler is not None
    u_rep = u.repeat_interleave(negatives)
    j = sampler.sample(u_rep, generator)
    u, i, u_rep, j = u.to(device), i.to(device), u_rep.to(device), j.to(device)
    pos, pos_penalty = model.forward_with_penalty(u, i)  # (B,)
    neg, neg_penalty = model.forward_with_penalty(u_rep, j)  # (B * negatives,)
    if loss_name == "bpr":
        data_loss = -F.logsigmoid(pos.repeat_interleave(negatives) - neg).mean()
    elif loss_name == "softmax":  # the positive against its negatives: cross-entropy, class 0
        logits = torch.cat([pos[:, None], neg.view(-1, negatives)], 1)  # (B, 1 + negatives)
        data_loss = F.cross_entropy(
            logits, torch.zeros(len(pos), dtype=torch.long, device=pos.device)
        )
    else:  # bce
        data_loss = F.binary_cross_entropy_with_logits(
            pos, torch.ones_like(pos)
        ) + negatives * F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg))
    return data_loss + reg * (pos_penalty + neg_penalty / negatives) / u.numel()


def _ials_loss(
    model: Recommender, u: torch.Tensor, i: torch.Tensor, num_positives: int, reg: float
) -> torch.Tensor:
    """One batch's share of the iALS objective, normalised per positive."""
    factors = model.factors()
    if factors is None:
        raise ConfigError(
            f"model '{model.name}' has no linear form; loss ials needs one (use bce or bpr)"
        )
    hp = model.hparams
    pos, penalty = model.forward_with_penalty(u, i)  # (B,)
    w_pos, w_all = 1.0 + float(hp["alpha"]), float(hp["unobserved_weight"])
    gram = (
        (factors.user.T @ factors.user) * (factors.item.T @ factors.item)
    ).sum()  # sum_ui s_ui^2
    data = (w_pos * (pos - 1).pow(2) - w_all * pos.pow(2)).mean() + w_all * gram / num_positives
    return data + reg * penalty / u.numel()


def _validation_loss(
    model: Recommender,
    loss_name: str,
    train: Interactions,
    valid: Interactions,
    settings: TrainSettings,
) -> float:
    """Lower is better: RMSE for rating models, 1 - AUC for labelled pairs, 1 - NDCG@K for
    ranking."""
    model.eval()
    if loss_name == "mse":
        return evaluate_ratings(model, valid, settings.device, *settings.rating_range)["rmse"]
    if loss_name == "logloss":
        return 1.0 - evaluate_auc(model, valid, settings.device, settings.positive_threshold)
    ranking = evaluate_ranking(
        model, train, valid, settings.eval_k, settings.device, settings.positive_threshold,
        max_users=settings.eval_max_users, seed=settings.seed,
    )  # fmt: skip
    return 1.0 - ranking["ndcg"]
